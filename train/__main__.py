"""``python -m train``: train a GPT on a dataset directory; see ``--help``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from shards import PipelineError, directory_lock, make_output_dir
from train.config import ConfigRequest, preset_names
from train.process import EXIT_PREEMPTED, silence
from train.start import check_dirs
from train.trainer import train

EPILOG = """\
examples:
  python -m train --data data/demo --out runs/demo --config demo
  python -m train --data data/dolma --out runs/75m --config 75m_dolma --set training.lr=3e-4
  torchrun --nproc_per_node 8 -m train --data data/dolma --out runs/75m --config 75m_dolma
  python -m train --data data/demo --out runs/demo --config demo --dry-run
  python -m train --data data/code --out runs/code --init-from runs/75m --set training.max_steps=2000

Re-running into a run directory that holds a checkpoint continues from its newest complete one, with
the run's own config (RUN/config.json): on resume --config may only name what the run was started
with, and --set may only change the keys that may change mid-run (max_steps, token_budget, the
intervals, early stopping, keep_checkpoints, device, compile, prefetch, logging, decay_fraction,
min_lr_ratio); each change is printed and recorded in metrics.jsonl.

Exit status: 0 when the run finished (or stopped early); 1 on an error (the message says what to do);
75 when SIGTERM, SIGINT or SIGHUP stopped it after saving a checkpoint: "preempted, resume me" (the same
command continues it). A closed stdout (| head, a dead tee or terminal) does not stop a run: its log
goes on in RUN/metrics.jsonl. Keys other programs rely on: training.max_steps,
training.batch_size, training.grad_accum_steps, training.lr, training.eval_interval,
training.checkpoint_interval, training.log_interval, training.seed, training.device (auto, cpu, cuda),
training.precision (auto, fp32, bf16, fp16), model.seq_len, model.n_layers, model.d_model,
model.n_heads, model.dropout. model.vocab_size comes from the dataset manifest.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train", description="Train a GPT on a dataset directory of "
                                "memmapped token shards (written by `python -m preprocess`).",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="dataset directory (manifest.json, tokenizer.json, *.bin)")
    p.add_argument("--out", required=True, help="run directory: config.json, metrics.jsonl, checkpoints/")
    p.add_argument("--config", default=None, metavar="NAME|FILE",
                   help=f"a preset ({', '.join(preset_names())}) or a JSON file; default: the built-in defaults for a "
                        f"new run, the run's own config on resume")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one config key, e.g. --set training.lr=3e-4 (repeatable; unknown keys are errors)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest complete checkpoint in --out (also done without this flag "
                        "when one exists; with it, its absence is reported)")
    p.add_argument("--init-from", metavar="PATH", default=None,
                   help="start a new run from other weights: a run directory (its best checkpoint), a checkpoint "
                        "directory, or a transformers model directory (what tools/export_hf.py writes, or a stock "
                        "GPT-2, Llama or NanoChat checkpoint). Weights only: a fresh optimizer, schedule and data "
                        "order. The model config is the weights' (--config/--set model keys must agree) and the "
                        "tokenizer must be the dataset's. The run records where it started; rerunning the same "
                        "command after a stop continues it")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved config, parameter count, tokens per step, steps, a memory estimate, "
                        "check the data, and train nothing")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        cfg = ConfigRequest(args.config, tuple(args.overrides))
        check_dirs(Path(args.data), Path(args.out))
        if args.dry_run or int(os.environ.get("RANK", "0")) != 0:
            summary = train(cfg, args.data, args.out, resume=args.resume, dry_run=args.dry_run,
                            init_from=args.init_from)
        else:  # one writer per run directory (under torchrun, rank 0 writes)
            make_output_dir(args.out)
            with directory_lock(args.out, "python -m train"):
                summary = train(cfg, args.data, args.out, resume=args.resume, init_from=args.init_from)
    except PipelineError as e:
        say_error(f"error: {e}")
        sys.exit(1)
    finally:
        try:  # what is still buffered for a reader that went away (| head) is dropped, not an error at exit
            sys.stdout.flush()
        except OSError:
            silence(sys.stdout)
    if summary.get("preempted"):
        sys.exit(EXIT_PREEMPTED)


def say_error(line: str) -> None:
    try:
        print(line, file=sys.stderr)
    except OSError:
        silence(sys.stderr)


if __name__ == "__main__":
    main()
