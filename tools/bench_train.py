"""Benchmark the trainer against a bare training loop, for each recipe, and the loader alone.

Prints one table:

* per recipe (default both: ``demo``, GPT-2's, and ``demo_modern``, Muon + AdamW), trainer tokens/s
  (``train.trainer.train``: loader thread, logging, bookkeeping) against a bare loop of forward,
  backward, clip and optimizer step on one batch already in memory, same model, optimizer, batch and
  precision; the ratio is the share of time the trainer spends training (target >= 0.97). The two are
  measured ``--repeat`` times, one right after the other (which goes first alternates): the ratio is
  the median of those pairs' ratios (each pair shares the machine's load of its moment), printed with
  their range, beside the best tokens/s of each loop;
* the loader alone on one CPU core, tokens/s from the memmap to an int64 batch: the vectorized
  gather the trainer uses (its check that every id is below vocab_size included) against a
  per-window Python loop like nanoGPT's ``get_batch`` (target >= 200M tokens/s), and the full
  threaded ``Loader.next_batch``;
* MFU of both loops on CUDA.

Without ``--data`` it writes a synthetic dataset (random tokens) to a temporary directory. The demo
presets are shrunk (``CPU_DEFAULTS``) to about a minute on a 2-core CPU; for GPU figures use
``tools/gpu_check.py``, or ``--config 75m_dolma --set training.precision=bf16 --set training.compile=true``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import shards
from train.config import load_config
from train.loader import Loader, TokenWindows
from train.model import GPT, peak_flops
from train.optim import build_optimizer
from train.process import Dist, resolve_device, resolve_precision
from train.trainer import train

CPU_DEFAULTS = ["model.seq_len=128", "model.n_layers=2", "model.d_model=128", "model.n_heads=4",
                "training.batch_size=8"]
SHRUNK = ("demo", "demo_modern")  # the presets CPU_DEFAULTS shrinks


def synthetic_dataset(directory: Path, n_tokens: int, vocab_size: int) -> Path:
    """A dataset directory of random tokens, one train and one val shard (enough for the benchmark)."""
    rng = np.random.default_rng(0)
    entries = []
    for split, n in (("train", n_tokens), ("val", max(n_tokens // 100, 20_000))):
        tokens = rng.integers(1, vocab_size, n, dtype=np.uint16 if vocab_size <= 65536 else np.uint32)
        tokens[::1000] = 0  # a separator every 1000 tokens
        entries.append(shards.write_shard(directory, split, 0, tokens, np.arange(0, n, 1000)))
    (directory / shards.TOKENIZER_NAME).write_text("{}", encoding="utf-8")  # copied by the trainer, never parsed
    shards.write_manifest(directory, {
        "format_version": shards.FORMAT_VERSION, "dtype": "uint16" if vocab_size <= 65536 else "uint32",
        "vocab_size": vocab_size, "eot_id": 0, "tokenizer_sha256": "synthetic", "shards": entries,
        "totals": {}, "inputs": [], "skipped": {}, "options": {"synthetic": True}})
    return directory


def bare_loop(cfg, device, precision, warmup: int, steps: int, optimizer_step: bool = True) -> float:
    """tokens/s of forward + backward + clip + optimizer step on a fixed in-memory batch (forward and
    backward alone without ``optimizer_step``): the trainer's step with nothing around it."""
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg, device)
    run_model = torch.compile(model) if cfg.training.compile else model
    t = cfg.training
    # x and y: views of one batch of seq_len + 1 windows, as the loader's are (a compiled graph checks strides)
    windows = torch.randint(0, cfg.model.vocab_size, (t.batch_size, cfg.model.seq_len + 1), device=device)
    x, y = windows[:, :-1], windows[:, 1:]
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = torch.autocast(device.type, dtype=amp) if amp else contextlib.nullcontext()
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        for _ in range(t.grad_accum_steps):
            with autocast:
                _, loss = run_model(x, y, return_logits=False)  # the forward the trainer trains with
            (loss / t.grad_accum_steps).backward()
        if optimizer_step:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    return steps * t.grad_accum_steps * t.batch_size * cfg.model.seq_len / (time.perf_counter() - start)


def step_tokens_per_s(records: list[dict], after_step: int) -> float:
    """The trainer's tokens/s over the logged steps after ``after_step`` (a log step), from its metrics.jsonl
    records: each train record's ``tokens_per_s`` covers the tokens since the one before, so the whole is
    their tokens over the summed times. NaN when fewer than two train records reach past ``after_step``."""
    logged = [r for r in records if r.get("type") == "train" and r.get("step", -1) >= after_step
              and "tokens" in r and r.get("tokens_per_s")]
    spans = [(r["tokens"] - before["tokens"], r["tokens_per_s"])
             for before, r in zip(logged, logged[1:], strict=False)]
    if not spans:
        return math.nan
    return sum(n for n, _ in spans) / sum(n / rate for n, rate in spans)


def trainer_loop(cfg, data: Path, warmup: int, steps: int) -> float:
    """tokens/s of train() over ``steps`` steps after ``warmup``, from its metrics.jsonl."""
    cfg.training.max_steps = warmup + steps
    cfg.training.log_interval = warmup
    cfg.training.eval_interval = 0
    cfg.training.checkpoint_interval = 10 ** 9
    with tempfile.TemporaryDirectory() as run:
        with contextlib.redirect_stdout(io.StringIO()):
            train(cfg, data, Path(run) / "run")
        records = [json.loads(line) for line in (Path(run) / "run" / "metrics.jsonl").read_text().splitlines()]
    return step_tokens_per_s(records, warmup)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def loader_rates(data: Path, seq_len: int, batch_size: int, seconds: float = 3.0) -> dict[str, float]:
    """tokens/s (batch_size * (seq_len + 1) per batch) of three ways of building a batch on this thread."""
    torch.set_num_threads(1)
    manifest = shards.load_manifest(data)
    windows = TokenWindows(data, manifest, "train", seq_len)
    data_mm = windows.tokens[0]
    rng = np.random.default_rng(0)
    out = np.empty((batch_size, seq_len + 1), dtype=np.int64)

    def vectorized():
        windows.gather(rng.integers(0, windows.n_windows, batch_size), out)

    def python_loop():  # nanoGPT's get_batch: one slice, astype and from_numpy per window, then stack
        ix = rng.integers(0, len(data_mm) - seq_len - 1, batch_size)
        torch.stack([torch.from_numpy(data_mm[i: i + seq_len + 1].astype(np.int64)) for i in ix])

    loader = Loader(data, manifest, seq_len, batch_size, seed=0, prefetch=4)
    rates = {}
    for name, fn in (("vectorized gather", vectorized), ("per-window Python loop", python_loop),
                     ("Loader.next_batch (thread)", loader.next_batch)):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(100):
                fn()
            n += 100
        rates[name] = n * batch_size * (seq_len + 1) / (time.perf_counter() - start)
    loader.close()
    return rates


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="dataset directory (default: synthetic random tokens)")
    p.add_argument("--config", default="demo,demo_modern",
                   help="presets or JSON files, comma-separated (default: demo,demo_modern, shrunk for CPU)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps (compile, allocator)")
    p.add_argument("--steps", type=int, default=20, help="timed steps")
    p.add_argument("--repeat", type=int, default=3, help="pairs of measurements (bare loop, then trainer)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the synthetic dataset")
    p.add_argument("--loader-shape", default="12x1024", metavar="BxT",
                   help="batch size x seq_len for the loader measurements (default 12x1024, the 75m_dolma "
                        "micro-batch): per-batch overheads make tiny batches look slow")
    args = p.parse_args(argv)

    presets = [c for c in args.config.split(",") if c]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or synthetic_dataset(Path(tmp), 4_000_000, args.vocab_size)
        vocab_size = shards.load_manifest(data)["vocab_size"]
        threads = torch.get_num_threads()
        for preset in presets:
            overrides = (CPU_DEFAULTS if preset in SHRUNK else []) + args.overrides
            cfg = load_config(preset, overrides)
            cfg.model.vocab_size = vocab_size
            device = resolve_device(cfg.training.device, Dist())
            precision = resolve_precision(cfg.training.precision, device)
            bare, trainer = [], []
            for i in range(args.repeat):  # the pairs alternate which loop runs first
                for measure in (("bare", "trainer") if i % 2 == 0 else ("trainer", "bare")):
                    if measure == "bare":
                        bare.append(bare_loop(cfg, device, precision, args.warmup, args.steps))
                    else:
                        trainer.append(trainer_loop(load_config(preset, overrides), data, args.warmup, args.steps))
                        torch.set_num_threads(threads)
            rows.append((preset, cfg, device, precision, bare, trainer))
        loader_batch, loader_seq_len = (int(v) for v in args.loader_shape.lower().split("x"))
        rates = loader_rates(data, loader_seq_len, loader_batch)

    print(f"bench_train: {threads} threads, {args.steps} timed steps after {args.warmup}, {args.repeat} pairs, "
          f"vocab {vocab_size}")
    for preset, cfg, device, precision, _, _ in rows:
        m, t = cfg.model, cfg.training
        print(f"  {preset}: {m.n_layers} layers, d_model {m.d_model}, seq_len {m.seq_len}, batch {t.batch_size} x "
              f"accumulation {t.grad_accum_steps}, optimizer {t.optimizer}, {device}, {precision}, compile={t.compile}")
    print(f"{'recipe':<16}{'bare loop tok/s':>18}{'trainer tok/s':>16}{'trainer / bare':>16}{'pairs range':>16}    "
          f"note")
    for preset, cfg, device, precision, bares, trainers in rows:
        ratios = sorted(t / b for b, t in zip(bares, trainers, strict=True))
        bare, trainer = max(bares), max(trainers)
        flops = GPT(cfg.model).estimate_flops_per_token()
        peak = peak_flops(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32))
        note = f"MFU {100 * flops * bare / peak:.1f}% / {100 * flops * trainer / peak:.1f}%" if peak else ""
        spread = f"{ratios[0]:.3f}-{ratios[-1]:.3f}"
        print(f"{preset:<16}{bare:>18,.0f}{trainer:>16,.0f}{statistics.median(ratios):>15.3f}x{spread:>16}    {note}")
    print("tokens/s: the best of each loop; trainer / bare: the median of the pairs' ratios (target >= 0.97)")
    print(f"loader on one core, batches of {loader_batch} x {loader_seq_len + 1} tokens (target >= 200M tokens/s):")
    print(f"{'measurement':<34}{'tokens/s':>16}{'':>4}note")
    base = rates["per-window Python loop"]
    for name, rate in rates.items():
        note = f"{rate / base:.1f}x the Python loop" if name != "per-window Python loop" else "nanoGPT get_batch"
        print(f"{'loader: ' + name:<34}{rate:>16,.0f}    {note}")
    if not all(math.isfinite(t) for *_, trainers in rows for t in trainers):
        raise SystemExit("the trainer produced no timed log records; raise --steps")


if __name__ == "__main__":
    main()
