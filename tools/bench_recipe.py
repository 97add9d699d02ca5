"""Benchmark the modern training recipe against the GPT-2 recipe: tokens to a val loss, and time per token.

    python tools/bench_recipe.py                              # the comparison in the README (about an hour, 2 CPUs)
    python tools/bench_recipe.py --data data/mine             # on a dataset directory of your own
    python tools/bench_recipe.py --sweep training.lr=1e-3,2e-3,4e-3 --recipe gpt2 --fraction 1
    python tools/plot_run.py runs/bench_recipe/gpt2-1.0x runs/bench_recipe/modern-0.4x --out curves.png

Both recipes train the ``demo`` preset's model size and batch (4 layers, d_model 256, 4 heads,
context 256, 16 sequences per step). The GPT-2 recipe is ``demo`` with its learning rate and warmup
as tuned by a sweep on this data (``GPT2_TUNED``; a shorter run warms up for the same share of its
steps); the modern recipe is the ``demo_modern`` preset as it is. Every run evaluates on the same
validation windows (``--eval-windows``, evenly spread over the val split) and trains on fresh windows
only (the bench refuses a dataset too small for that).

Prints four tables (beside every run's final val loss stands its val bits per byte, measured on the
same windows from the run's last checkpoint: the figure that compares recipes on different tokenizers):

* val loss against tokens of the GPT-2 recipe over the full budget (``--steps``) and of the modern
  recipe over a 0.4x budget, each schedule set for its own budget;
* tokens to the GPT-2 recipe's final val loss: the modern recipe trained at several budgets
  (``--fractions``, each its own run with its schedule set for it); the ratio is interpolated between
  the two budgets whose final losses bracket the target;
* the ablation, at the 0.4x budget: the GPT-2 recipe, then today's options (RoPE, SwiGLU, RMSNorm),
  then each part of the modern recipe added in turn; the last row is ``demo_modern``;
* time per token, modern / GPT-2: the two models' forward, backward, clip and optimizer step on one
  batch in memory, interleaved step by step so that a machine's load drifts out of the ratio.

Without ``--data`` the dataset is built from the standard library's own Python source (every ``.py``
file under ``sysconfig.get_paths()["stdlib"]``, about 30 MB, 8M tokens), written as ``.jsonl.gz``
documents and built with the real ``python -m preprocess`` CLI (vocabulary 8192, 5% val). Runs are
kept under ``--out`` (``RUN/metrics.jsonl``), so ``tools/plot_run.py`` draws any of them; ``--plot``
draws the GPT-2 and modern curves itself.
"""
from __future__ import annotations

import argparse
import contextlib
import gzip
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

import shards  # noqa: E402
import tokenizer as tk  # noqa: E402
from train.checkpoint import load_model  # noqa: E402
from train.config import Config, load_config  # noqa: E402
from train.evaluate import byte_length_table, val_metrics  # noqa: E402
from train.loader import TokenWindows, ValWindows  # noqa: E402
from train.model import GPT  # noqa: E402
from train.optim import build_optimizer  # noqa: E402
from train.process import Dist, resolve_device, resolve_precision  # noqa: E402
from train.trainer import train  # noqa: E402

# The GPT-2 recipe: the demo preset with the lr and warmup its sweep on the stdlib dataset picked for
# the full 400-step budget (README "Training recipes" has the sweep's table). A run of a fraction of
# the budget warms up for the same share of its steps (gpt2_recipe).
GPT2_TUNED = ["training.lr=3e-3", "training.warmup_steps=200"]
MODERN_PRESET = "demo_modern"
# The ablation: each row adds its overrides to the row above; the first row is the GPT-2 recipe, the
# last must resolve to MODERN_PRESET exactly (checked before anything trains). Logit soft-capping
# (model.logit_softcap) is not in the recipe: at this scale it paid nothing (README, the sweep).
ABLATION = [
    ("GPT-2 recipe (demo preset, tuned lr, warmup)", GPT2_TUNED),
    ("+ RoPE, SwiGLU, RMSNorm (today's options)", ["model.rope=true", "model.swiglu=true", "model.rmsnorm=true"]),
    ("+ Muon (hidden matrices), AdamW rest", ["training.optimizer=muon", "training.muon_lr=0.02", "training.lr=6e-3",
                                              "training.embed_lr=6e-3", "training.head_lr=6e-3",
                                              "training.warmup_steps=10"]),
    ("+ WSD schedule", ["training.schedule=wsd", "training.decay_fraction=0.4", "training.min_lr_ratio=0"]),
    ("+ QK-norm", ["model.qk_norm=true"]),
    ("+ ReLU² MLP instead of SwiGLU", ["model.swiglu=false", "model.relu2=true"]),
    ("+ normalized embedding", ["model.embed_norm=true"]),
    ("+ untied head", ["model.untied_head=true"]),
    ("+ zero-init projections and head", ["model.zero_init=true"]),
    ("+ no biases", ["model.bias=false"]),
]
RUN_DEFAULTS = ["training.log_interval=10", "training.checkpoint_interval=1000000", "training.keep_checkpoints=1",
                "training.sample_tokens=0"]  # the recipes are compared on the val windows alone
STDLIB_FILES = 8  # .jsonl.gz files the stdlib corpus is written as


class BenchError(Exception):
    """A dataset or setting the bench cannot use; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# the dataset

def stdlib_corpus(out: Path) -> list[Path]:
    """The standard library's ``.py`` files as documents (id = path under the stdlib, text = the source),
    sorted by path, in ``STDLIB_FILES`` gzipped JSON Lines files; written once, byte-identical each time."""
    done = out / "DONE"
    paths = [out / f"stdlib-{i:04d}.jsonl.gz" for i in range(STDLIB_FILES)]
    if done.exists() and all(p.exists() for p in paths):
        return paths
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        files += [Path(dirpath) / n for n in names if n.endswith(".py")]
    records = []
    for path in sorted(files):
        text = path.read_bytes().decode("utf-8", "replace")
        if text.strip():
            records.append({"id": path.relative_to(root).as_posix(), "text": text})
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        part = records[i * len(records) // STDLIB_FILES:(i + 1) * len(records) // STDLIB_FILES]
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode("utf-8", "backslashreplace")
        path.write_bytes(gzip.compress(data, compresslevel=6, mtime=0))
    done.write_text(f"{len(records)} documents from {root}\n")
    return paths


def build_stdlib_dataset(work: Path, vocab_size: int) -> Path:
    """``work/data``, built by ``python -m preprocess`` from :func:`stdlib_corpus` (a no-op when up to date)."""
    corpus = work / "stdlib-corpus"
    stdlib_corpus(corpus)
    data = work / f"data-stdlib-{vocab_size}"
    cmd = [sys.executable, "-m", "preprocess", "--input", str(corpus), "--out", str(data), "--vocab-size",
           str(vocab_size), "--val-fraction", "0.05", "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"building the dataset failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    return data


# ---------------------------------------------------------------------------------------------------
# runs

def gpt2_recipe(fraction: float = 1.0) -> list[str]:
    """``GPT2_TUNED`` for a run of ``fraction`` of the full budget: its warmup scaled by ``fraction``."""
    key = "training.warmup_steps="
    return [f"{key}{round(int(o[len(key):]) * fraction)}" if o.startswith(key) else o for o in GPT2_TUNED]


def overrides_of(ablation_rows: int | None = None, fraction: float = 1.0) -> list[str]:
    """The cumulative overrides of the ablation's first ``ablation_rows`` rows (all of them by default),
    the GPT-2 recipe's for a run of ``fraction`` of the full budget."""
    sets = [o for _, sets in ABLATION[1:ablation_rows] for o in sets]
    return gpt2_recipe(fraction) + sets if ablation_rows != 0 else []


def config_for(preset: str, sets: list[str], steps: int, fraction: float, args) -> Config:
    """``preset`` with ``sets``, trained for ``fraction`` of ``steps`` (its schedule set for that), evaluated
    as every bench run is, with the command line's --set last."""
    return load_config(preset, sets + RUN_DEFAULTS + [
        f"training.max_steps={max(1, round(steps * fraction))}", f"training.eval_windows={args.eval_windows}",
        f"training.eval_interval={args.eval_interval}"] + args.overrides)


def check_ablation_ends_at_the_preset(steps: int, args) -> None:
    a = config_for("demo", overrides_of(), steps, 1.0, args)
    b = config_for(MODERN_PRESET, [], steps, 1.0, args)
    if a != b:
        diff = {f"{s}.{k}": (v, b.to_dict()[s][k]) for s, sec in a.to_dict().items() for k, v in sec.items()
                if b.to_dict()[s][k] != v}
        raise BenchError(f"the ablation's last row is not the {MODERN_PRESET} preset: (ablation, preset) {diff}; "
                         f"update ABLATION in tools/bench_recipe.py or train/configs/{MODERN_PRESET}.json")


def final_bpb(run_dir: Path, data: Path, cfg: Config) -> float | None:
    """Val bits per byte of the run's last checkpoint on the windows its evaluations used (the same
    ``eval_windows`` evenly spread over the val split): the figure that compares across tokenizers."""
    device = resolve_device(cfg.training.device, Dist())
    model, model_cfg, tok_path = load_model(run_dir, device=device, which="latest")
    val = ValWindows(data, shards.load_manifest(data), model_cfg.seq_len, cfg.training.eval_windows)
    table = byte_length_table(tk.load(tok_path), device)
    return val_metrics(model, val, cfg.training.batch_size, device, byte_lengths=table)["val_bpb"]


def with_bpb(saved: dict, result: Path, data: Path, cfg: Config) -> dict:
    """``saved`` with its final val bits per byte, measured once and kept in ``result``."""
    if saved.get("final_val_bpb") is None:
        saved["final_val_bpb"] = final_bpb(Path(saved["dir"]), data, cfg)
        result.write_text(json.dumps(saved, indent=1) + "\n")
    return saved


def run(name: str, cfg: Config, data: Path, out: Path, fresh: bool) -> dict:
    """Train ``cfg`` into ``out/name``; returns its evals and final val loss and bits per byte. Unless
    ``fresh``, a finished run of the same config on the same data anywhere under ``out`` (a sweep's,
    say) is reused instead."""
    run_dir = out / name
    cfg.model.vocab_size = int(shards.load_manifest(data)["vocab_size"])  # as train() sets it, so saved configs match
    if not fresh:
        for result in sorted(out.glob("*/bench_result.json")):
            saved = json.loads(result.read_text())
            if saved["config"] == cfg.to_dict() and saved.get("data") == str(data):
                return with_bpb(saved, result, data, cfg)
    if (run_dir / "bench_result.json").exists() and not fresh:
        raise BenchError(f"{run_dir} holds a finished run of another config (another --set, or an edited recipe); "
                         f"pass another --out, or --fresh to train every run again")
    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run that did not finish, or --fresh
    run_dir.mkdir(parents=True)
    start = time.time()
    with open(run_dir / "train.log", "w") as log, contextlib.redirect_stdout(log):
        summary = train(cfg, data, run_dir)
    if summary["stop_reason"] != "finished":
        raise BenchError(f"run {run_dir} did not finish ({summary['stop_reason']}); run the bench again to redo it")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["tokens"], r["val_loss"]) for r in records if r["type"] == "eval"]
    saved = {"name": name, "dir": str(run_dir), "data": str(data), "config": cfg.to_dict(), "evals": evals,
             "final_val_loss": summary["final_val_loss"], "tokens": summary["tokens"], "wall_s": time.time() - start}
    saved = with_bpb(saved, run_dir / "bench_result.json", data, cfg)
    print(f"  {name}: val loss {saved['final_val_loss']:.4f}, {saved['final_val_bpb']:.4f} bits per byte after "
          f"{saved['tokens']:,} tokens ({saved['wall_s']:.0f} s)", file=sys.stderr, flush=True)
    return saved


def check_fresh_windows(data: Path, manifest: dict, cfg: Config) -> None:
    """Refuse a dataset on which the longest run would see a window twice (the loader's epoch ends)."""
    windows = TokenWindows(data, manifest, "train", cfg.model.seq_len).n_windows
    needed = cfg.training.max_steps * cfg.training.batch_size * cfg.training.grad_accum_steps
    if needed > windows:
        raise BenchError(f"{data} holds {windows:,} train windows of {cfg.model.seq_len + 1} tokens, fewer than the "
                         f"{needed:,} a run of {cfg.training.max_steps} steps reads: windows would be seen twice. "
                         f"Use a bigger --data, or fewer --steps")


def ratio_to_target(points: list[tuple[float, float]], target: float) -> tuple[str, float | None]:
    """The budget fraction at which the final val loss reaches ``target``, interpolated linearly between
    the two measured fractions that bracket it; (text, value or None when no pair brackets it)."""
    points = sorted(points)
    for (f0, l0), (f1, l1) in itertools.pairwise(points):
        if l0 >= target >= l1 and l0 != l1:
            f = f0 + (f1 - f0) * (l0 - target) / (l0 - l1)
            return f"{f:.2f}", f
    if points and points[0][1] <= target:
        return f"<= {points[0][0]:.2f}", None
    return f"> {points[-1][0]:.2f}", None


# ---------------------------------------------------------------------------------------------------
# time per token

def time_per_token(configs: dict[str, Config], vocab_size: int, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per token of a full training step (forward, backward, clip, optimizer step) on one
    in-memory batch, the models taking turns step by step."""
    device = resolve_device(next(iter(configs.values())).training.device, Dist())
    setups = {}
    for name, cfg in configs.items():
        cfg.model.vocab_size = vocab_size
        torch.manual_seed(0)
        model = GPT(cfg.model).to(device)
        precision = resolve_precision(cfg.training.precision, device)
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        setups[name] = (cfg, model, build_optimizer(model, cfg, device), amp)
    t = next(iter(configs.values())).training
    seq_len = next(iter(configs.values())).model.seq_len
    x = torch.randint(0, vocab_size, (t.batch_size, seq_len), device=device)
    times = {name: [] for name in setups}
    for i in range(warmup + steps):
        for name, (cfg, model, optimizer, amp) in setups.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            with torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext():
                _, loss = model(x, x)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.grad_clip or float("inf"))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    tokens = t.batch_size * seq_len * t.grad_accum_steps
    return {name: statistics.median(v) / tokens for name, v in times.items()}


# ---------------------------------------------------------------------------------------------------
# tables

def print_curves(gpt2: dict, modern: dict, fraction: float) -> None:
    print(f"\nval loss against tokens (same {gpt2_windows(gpt2)} val windows; each run's schedule set for its budget)")
    print(f"{'tokens':>12}  {'GPT-2 recipe, 1.0x':>20}  {f'modern, {fraction:g}x':>14}")
    rows = sorted({t for t, _ in gpt2["evals"]} | {t for t, _ in modern["evals"]})
    a, b = dict(gpt2["evals"]), dict(modern["evals"])
    for tok in rows:
        fa = f"{a[tok]:.4f}" if tok in a else ""
        fb = f"{b[tok]:.4f}" if tok in b else ""
        print(f"{tok:>12,}  {fa:>20}  {fb:>14}")


def gpt2_windows(r: dict) -> int:
    return r["config"]["training"]["eval_windows"]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python tools/bench_recipe.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--data", type=Path, help="dataset directory (default: built from the stdlib's source)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_recipe",
                   help="where runs (and the stdlib dataset) are kept; a finished run with the same config is reused")
    p.add_argument("--fresh", action="store_true", help="train every run again, even when --out holds it")
    p.add_argument("--steps", type=int, default=400, help="the full budget in optimizer steps (default 400)")
    p.add_argument("--fractions", default="0.3,0.4,0.5",
                   help="budgets of the modern recipe's runs, as fractions of --steps (default 0.3,0.4,0.5)")
    p.add_argument("--fraction", type=float, default=0.4,
                   help="the budget the ablation and the curve table use, and --sweep's (default 0.4)")
    p.add_argument("--eval-windows", type=int, default=256, help="validation windows of every evaluation")
    p.add_argument("--eval-interval", type=int, default=40, help="steps between evaluations")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the stdlib dataset")
    p.add_argument("--timing-steps", type=int, default=20, help="interleaved steps per model for time per token")
    p.add_argument("--no-ablation", action="store_true", help="skip the ablation table")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                   help="an override for every run (e.g. training.device=cuda)")
    p.add_argument("--sweep", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="instead of the comparison: train --recipe at --fraction for every combination")
    p.add_argument("--recipe", choices=("gpt2", "modern"), default="gpt2", help="the recipe --sweep varies")
    p.add_argument("--seeds", default="1337", help="with --sweep: training.seed values, each a run")
    p.add_argument("--plot", type=Path, metavar="FILE.png", help="draw the GPT-2 and modern curves (plot_run.py)")
    args = p.parse_args(argv)

    try:
        args.out.mkdir(parents=True, exist_ok=True)
        data = args.data or build_stdlib_dataset(args.out, args.vocab_size)
        manifest = shards.load_manifest(data)
        check_fresh_windows(data, manifest, config_for("demo", GPT2_TUNED, args.steps, 1.0, args))
        if args.sweep:
            sweep(args, data)
            return
        check_ablation_ends_at_the_preset(args.steps, args)
        comparison(args, data, manifest)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


def sweep(args, data: Path) -> None:
    preset, base = ("demo", gpt2_recipe(args.fraction)) if args.recipe == "gpt2" else (MODERN_PRESET, [])
    axes = []
    for item in args.sweep:
        key, _, values = item.partition("=")
        if not values:
            raise BenchError(f"--sweep {item!r}: expected KEY=V1,V2,... e.g. training.lr=1e-3,2e-3")
        axes.append([f"{key}={v}" for v in values.split(",")])
    rows = []
    for combo in itertools.product(*axes, [f"training.seed={s}" for s in args.seeds.split(",")]):
        name = f"sweep-{args.recipe}-{args.fraction:g}x-" + "-".join(c.split(".", 1)[1] for c in combo)
        cfg = config_for(preset, base + list(combo), args.steps, args.fraction, args)
        rows.append((combo, run(name, cfg, data, args.out, args.fresh)))
    print(f"\nsweep of the {args.recipe} recipe at {args.fraction:g}x of {args.steps} steps "
          f"({rows[0][1]['tokens']:,} tokens), val loss on {args.eval_windows} windows")
    print(f"{'setting':<60} {'val loss':>9} {'val bpb':>8}")
    for combo, r in rows:
        print(f"{' '.join(combo):<60} {r['final_val_loss']:>9.4f} {r['final_val_bpb']:>8.4f}")


def comparison(args, data: Path, manifest: dict) -> None:
    fractions = sorted(float(f) for f in args.fractions.split(","))
    if args.fraction not in fractions:
        fractions = sorted(fractions + [args.fraction])
    gpt2 = run("gpt2-1.0x", config_for("demo", GPT2_TUNED, args.steps, 1.0, args), data, args.out, args.fresh)
    modern = {f: run(f"modern-{f:g}x", config_for(MODERN_PRESET, [], args.steps, f, args), data, args.out,
                     args.fresh) for f in fractions}
    ablation = []
    if not args.no_ablation:
        for i, (label, _) in enumerate(ABLATION):
            if i == len(ABLATION) - 1:
                ablation.append((label, modern[args.fraction]))
            else:
                cfg = config_for("demo", overrides_of(i + 1, args.fraction), args.steps, args.fraction, args)
                ablation.append((label, run(f"ablation-{i:02d}-{args.fraction:g}x", cfg, data, args.out, args.fresh)))
    timing = time_per_token({"gpt2": config_for("demo", GPT2_TUNED, args.steps, 1.0, args),
                             "modern": config_for(MODERN_PRESET, [], args.steps, 1.0, args)},
                            manifest["vocab_size"], args.timing_steps)

    target = gpt2["final_val_loss"]
    m, t = gpt2["config"]["model"], gpt2["config"]["training"]
    print(f"\nbench_recipe: {data} ({manifest['totals']['train']['tokens']:,} train tokens); model {m['n_layers']} "
          f"layers, d_model {m['d_model']}, {m['n_heads']} heads, context {m['seq_len']}, batch {t['batch_size']}; "
          f"full budget {args.steps} steps = {gpt2['tokens']:,} tokens; {torch.get_num_threads()} threads")
    print_curves(gpt2, modern[args.fraction], args.fraction)

    print(f"\ntokens to the GPT-2 recipe's final val loss {target:.4f} (each modern run's schedule set for its budget)")
    print(f"{'run':<28} {'tokens':>12} {'val loss':>9} {'vs target':>10} {'val bpb':>8}")
    print(f"{'GPT-2 recipe, 1.0x':<28} {gpt2['tokens']:>12,} {target:>9.4f} {'':>10} {gpt2['final_val_bpb']:>8.4f}")
    for f, r in modern.items():
        print(f"{f'modern, {f:g}x':<28} {r['tokens']:>12,} {r['final_val_loss']:>9.4f} "
              f"{r['final_val_loss'] - target:>+10.4f} {r['final_val_bpb']:>8.4f}")
    text, _ = ratio_to_target([(f, r["final_val_loss"]) for f, r in modern.items()], target)
    print(f"ratio (modern tokens / GPT-2 tokens, target <= 0.4): {text}")

    if ablation:
        print(f"\nablation at {args.fraction:g}x ({ablation[0][1]['tokens']:,} tokens): each row adds to the row above")
        print(f"{'recipe':<46} {'val loss':>9} {'change':>8} {'val bpb':>8}")
        previous = None
        for label, r in ablation:
            change = "" if previous is None else f"{r['final_val_loss'] - previous:+.4f}"
            print(f"{label:<46} {r['final_val_loss']:>9.4f} {change:>8} {r['final_val_bpb']:>8.4f}")
            previous = r["final_val_loss"]

    ratio = timing["modern"] / timing["gpt2"]
    print(f"\ntime per token, one training step on a batch in memory, {args.timing_steps} interleaved steps each "
          f"(median)")
    print(f"{'recipe':<28} {'us/token':>9} {'tokens/s':>10}")
    for name, label in (("gpt2", "GPT-2 recipe"), ("modern", "modern recipe")):
        print(f"{label:<28} {1e6 * timing[name]:>9.1f} {1 / timing[name]:>10,.0f}")
    print(f"modern / GPT-2 (target <= 1.15): {ratio:.3f}")
    if args.plot:
        sys.path.insert(0, str(ROOT / "tools"))
        import plot_run
        # the legend shows each path's name: the recipes', not the run directories'
        runs = [(Path(label), plot_run.read_metrics(Path(r["dir"]))[0])
                for label, r in (("GPT-2 recipe, 1.0x", gpt2), (f"modern, {args.fraction:g}x", modern[args.fraction]))]
        plot_run.plot(runs, args.plot, log_loss=False)
        print(f"plot written to {args.plot}")


if __name__ == "__main__":
    main()
