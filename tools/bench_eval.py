"""Benchmark what evaluation costs a training run: val bits per byte, downstream tasks and samples, as a
share of training time at the flagship's intervals.

    python tools/bench_eval.py                              # the 75m_dolma flagship, timed on this CPU
    python tools/bench_eval.py --config 75m_dolma_modern --set training.eval_interval=500

Measures, on this machine's CPU in fp32, the flagship model itself (10 layers, d_model 640, context
1024, 32,000-token vocabulary), through the code the trainer calls:

* a training step's time per token: forward, backward, clip and AdamW on one window;
* the val pass's time per token (``train.evaluate.window_sums``, what ``val_metrics`` runs per batch);
* task scoring's time per token (``train.tasks.loglikelihoods`` on batches of 32 sequences of the
  lengths below, padded as in a real evaluation);
* the samples' time (``train.generate.generate_ids`` with the KV cache, greedy: the default prompts'
  length, ``--sample-tokens`` new tokens each).

It then projects one evaluation at the config's ``eval_interval`` and ``eval_windows`` (75m_dolma:
every 1000 steps of 49,152 tokens, 256 windows of 1024 tokens): the val pass, the four public tasks
in full (HellaSwag val, ARC-Easy and ARC-Challenge test, LAMBADA) and the samples, against the
training time of the interval. Two estimates stand side by side: from the CPU timings (each part's
measured seconds per token times its tokens) and from FLOPs alone (a forward pass is a third of a
training step's FLOPs per token). A GPU runs the large training matmuls closer to its peak than the
short task sequences and the one-token decode steps, so there the share sits between the two and
the samples weigh more; no GPU was measured here.

Tokens per task sequence are estimates, not measurements (the task files cannot be fetched where
this was written): characters per item from the published sets, at about 4.2 characters per token of
an English BPE of 32k tokens. ``--tasks FILE`` (files from ``tools/fetch_eval_data.py``) with
``--tokenizer`` counts them instead.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

import torch  # noqa: E402

import tokenizer as tk  # noqa: E402
from train.config import load_config  # noqa: E402
from train.evaluate import DEFAULT_PROMPTS, window_sums  # noqa: E402
from train.generate import generate_ids  # noqa: E402
from train.model import GPT  # noqa: E402
from train.optim import build_optimizer  # noqa: E402
from train.tasks import load_tasks, loglikelihoods, task_requests  # noqa: E402


@dataclass
class TaskShape:
    """A task's size in sequences and (estimated or counted) tokens per sequence."""
    name: str
    items: int
    choices: float         # sequences per item
    tokens: float          # tokens per sequence: context + continuation, with the separator
    counted: bool = False  # True when counted from a file, False for the estimate


# Published sizes; tokens per sequence estimated from the sets' characters per item at ~4.2 chars/token:
# HellaSwag contexts ~330 characters + endings ~120; ARC questions ~120 + answers ~25 with "Question: ...
# Answer:"; LAMBADA passages ~340 characters.
PUBLIC_TASKS = (
    TaskShape("hellaswag", 10042, 4, 110),
    TaskShape("arc_easy", 2376, 4, 38),
    TaskShape("arc_challenge", 1172, 4, 42),
    TaskShape("lambada_openai", 5153, 1, 82),
)


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(cfg, repeats: int, sample_tokens: int, shapes: list[TaskShape]) -> dict:
    """Seconds per token of training, the val pass and task scoring, and seconds per sample, on this CPU."""
    torch.manual_seed(0)
    model = GPT(cfg.model)
    T, V = cfg.model.seq_len, cfg.model.vocab_size
    g = torch.Generator().manual_seed(0)
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    window = torch.randint(0, V, (1, T + 1), generator=g)

    def train_step():
        _, loss = model(window[:, :-1], window[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    train_s = median_time(train_step, repeats) / T
    model.eval()
    val_batch = torch.randint(0, V, (2, T + 1), generator=g)
    byte_lengths = torch.randint(0, 8, (V,), generator=g)
    val_s = median_time(lambda: window_sums(model, [(val_batch[:, :-1], val_batch[:, 1:])], byte_lengths),
                        repeats) / (2 * T)
    # one batch of 32 sequences as long as the typical task sequence (the scorer sorts by length, so a
    # batch's sequences are of about one length)
    length = round(statistics.fmean(s.tokens for s in shapes))
    requests = [(torch.randint(0, V, (length - 8,), generator=g).tolist(),
                 torch.randint(0, V, (8,), generator=g).tolist()) for _ in range(32)]
    task_s = median_time(lambda: loglikelihoods(model, requests, torch.device("cpu"), batch_size=32),
                         repeats) / (32 * length)
    prompt_len = round(statistics.fmean(len(p) for p in DEFAULT_PROMPTS) / 4.2) + 1
    prompt = torch.randint(0, V, (1, prompt_len), generator=g)
    sample_s = median_time(lambda: generate_ids(model, prompt, sample_tokens, temperature=0), repeats)
    return {"train_s_per_token": train_s, "val_s_per_token": val_s, "task_s_per_token": task_s,
            "task_batch_length": length, "sample_s": sample_s, "params": model.num_params(),
            "flops_per_token": model.estimate_flops_per_token(), "threads": torch.get_num_threads()}


def counted_shapes(specs: list[str], tokenizer_path: Path) -> list[TaskShape]:
    """Tokens per sequence of real task files, encoded as the scorer encodes them."""
    tok = tk.load(tokenizer_path)
    shapes = []
    for task in load_tasks(specs):
        requests = [r for item in task_requests(task, tok) for r in item]
        tokens = statistics.fmean(len(c) + len(x) for c, x in requests)
        shapes.append(TaskShape(task.name, len(task.items), len(requests) / len(task.items), tokens, counted=True))
    return shapes


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/bench_eval.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", default="75m_dolma", help="preset whose model and intervals are projected")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    p.add_argument("--vocab-size", type=int, default=tk.DEFAULT_VOCAB_SIZE, help="vocabulary (default 32000)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats of each part (median; default 3)")
    p.add_argument("--sample-prompts", type=int, default=len(DEFAULT_PROMPTS),
                   help=f"prompts completed per evaluation (default {len(DEFAULT_PROMPTS)}, the default set)")
    p.add_argument("--sample-tokens", type=int, default=32, help="new tokens per prompt (default 32)")
    p.add_argument("--tasks", action="append", default=[], metavar="FILE", help="count tokens of these task files")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json to count --tasks with")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides + ["training.device=cpu", "training.precision=fp32",
                                                     "training.compile=false"])
    cfg.model.vocab_size = args.vocab_size
    t = cfg.training
    shapes = counted_shapes(args.tasks, args.tokenizer) if args.tasks and args.tokenizer else list(PUBLIC_TASKS)
    m = measure(cfg, args.repeats, args.sample_tokens, shapes)

    T = cfg.model.seq_len
    step_tokens = t.batch_size * t.grad_accum_steps * T
    interval_tokens = t.eval_interval * step_tokens
    fwd_flops = m["flops_per_token"] / 3  # a forward pass: a third of forward + backward
    rows = [("val bits per byte", f"{t.eval_windows} windows x {T}", t.eval_windows * T, m["val_s_per_token"])]
    for s in shapes:
        how = "counted" if s.counted else "estimated"
        rows.append((f"task {s.name}", f"{s.items:,} x {s.choices:g} x ~{s.tokens:.0f} tok ({how})",
                     s.items * s.choices * s.tokens, m["task_s_per_token"]))
    train_cpu_s = interval_tokens * m["train_s_per_token"]

    print(f"bench_eval: {args.config} ({m['params'] / 1e6:.1f}M parameters, context {T}, vocabulary "
          f"{args.vocab_size:,}); evaluation every {t.eval_interval:,} steps of {step_tokens:,} tokens; "
          f"timed on this CPU, fp32, {m['threads']} threads, median of {args.repeats}")
    print(f"measured: training {1e3 * m['train_s_per_token']:.3f} ms/token, val pass "
          f"{1e3 * m['val_s_per_token']:.3f} ms/token, task scoring {1e3 * m['task_s_per_token']:.3f} ms/token "
          f"(batches of 32 x {m['task_batch_length']} tokens), one sample of {args.sample_tokens} tokens "
          f"{m['sample_s']:.2f} s")
    print(f"\n{'part of one evaluation':<26} {'size':<40} {'tokens':>12} {'CPU s':>10} "
          f"{'share (CPU time)':>17} {'share (FLOPs)':>14}")
    total_s = total_flops = 0.0
    for label, size, tokens, s_per_token in rows:
        seconds, flops = tokens * s_per_token, tokens * fwd_flops
        total_s, total_flops = total_s + seconds, total_flops + flops
        print(f"{label:<26} {size:<40} {tokens:>12,.0f} {seconds:>10,.0f} {seconds / train_cpu_s:>17.2%} "
              f"{flops / (interval_tokens * m['flops_per_token']):>14.2%}")
    sample_s = args.sample_prompts * m["sample_s"]
    sample_flops = args.sample_prompts * args.sample_tokens * fwd_flops
    total_s, total_flops = total_s + sample_s, total_flops + sample_flops
    print(f"{'samples':<26} {f'{args.sample_prompts} prompts x {args.sample_tokens} new tokens':<40} "
          f"{args.sample_prompts * args.sample_tokens:>12,} {sample_s:>10,.1f} {sample_s / train_cpu_s:>17.3%} "
          f"{sample_flops / (interval_tokens * m['flops_per_token']):>14.4%}")
    print(f"{'all of it':<26} {'':<40} {'':>12} {total_s:>10,.0f} {total_s / train_cpu_s:>17.2%} "
          f"{total_flops / (interval_tokens * m['flops_per_token']):>14.2%}")
    print(f"{'training between two':<26} {f'{t.eval_interval:,} steps':<40} {interval_tokens:>12,} "
          f"{train_cpu_s:>10,.0f}")
    val_only = rows[0][2] * rows[0][3]
    print(f"\nshare of wall time, evaluation / (training + evaluation): everything at every evaluation "
          f"{total_s / (train_cpu_s + total_s):.2%} (CPU timings); the val pass and samples alone "
          f"{(val_only + sample_s) / (train_cpu_s + val_only + sample_s):.2%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
