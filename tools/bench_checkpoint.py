"""Benchmark: how long a checkpoint stalls training, written on the training thread or in the background.

For a preset's model and optimizer (``75m_dolma_modern`` by default: 75M parameters, Muon and AdamW
states), one checkpoint of the parts the trainer saves, written into a temporary run directory:

* **on the training thread** (how checkpoints were written before): snapshot, safetensors and
  ``torch.save``, sha256 of every file, fsync and rename all happen before the next step; the whole
  write is a stall;
* **in the background** (``train/checkpoint.py``'s ``Writer``, what the trainer does now): the training
  thread only copies the parts to host memory (:func:`snapshot`) and goes on; the writer thread does
  the rest. The stall is the snapshot; training steps run meanwhile are timed against the same steps
  with no write going on, so any slowdown the write causes (CPU, memory bandwidth) is counted too.

The steps timed are small ones (``--step-batch`` sequences of ``--step-len`` tokens), so that several
fit in one write on a CPU; the table also states each stall as a share of the wall-clock of a run
checkpointing every ``--interval`` steps of ``--step-seconds`` each (default: 55 ms, an estimate of a
75M step of 48 x 1024 tokens on an H100; measured steps on this machine are slower, and the share
smaller). Run it once at a quiet moment: other load on the machine shows in every figure.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from train import checkpoint as ckpt
from train.config import load_config
from train.model import GPT
from train.optim import build_optimizer


def parts_of(preset: str, vocab_size: int, device: torch.device) -> tuple[dict, GPT, torch.optim.Optimizer]:
    """The parts a checkpoint of ``preset`` holds, with the optimizer's state filled by one step."""
    cfg = load_config(preset)
    cfg.model.vocab_size = vocab_size
    torch.manual_seed(0)
    model = GPT(cfg.model).to(device)
    optimizer = build_optimizer(model, cfg, device)
    step(model, optimizer, 1, 64, vocab_size, device)
    parts = {"model": ckpt.Weights(model), "optimizer": optimizer, "rng": ckpt.RNG(),
             "loader": ckpt.Record({"seed": 0, "epoch": 0, "position": 0}),
             "train_state": ckpt.Record({"step": 1, "tokens": 64}), "config": ckpt.Record(cfg.to_dict())}
    return parts, model, optimizer


def step(model: GPT, optimizer, batch: int, length: int, vocab_size: int, device: torch.device) -> None:
    x = torch.randint(0, vocab_size, (batch, length), device=device)
    _, loss = model(x, x)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(model, optimizer, n: int, batch: int, length: int, vocab_size: int, device) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step(model, optimizer, batch, length, vocab_size, device)
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--preset", default="75m_dolma_modern", help="config preset whose model and optimizer to save")
    p.add_argument("--vocab-size", type=int, default=32000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="where to write the checkpoints (default: a temporary "
                   "directory; put it on the disk your runs use)")
    p.add_argument("--repeat", type=int, default=3, help="checkpoints written each way (the median is shown)")
    p.add_argument("--step-batch", type=int, default=1)
    p.add_argument("--step-len", type=int, default=128)
    p.add_argument("--step-seconds", type=float, default=0.055, help="a training step's wall time to state the "
                   "stall against (default: an estimated 75M step on an H100)")
    p.add_argument("--interval", type=int, default=2000, help="steps between checkpoints (the 75M presets' "
                   "checkpoint_interval)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    parts, model, optimizer = parts_of(args.preset, args.vocab_size, device)
    steps = lambda n: timed_steps(model, optimizer, n, args.step_batch, args.step_len, args.vocab_size, device)  # noqa: E731
    steps(2)  # warm up
    alone = statistics.median(steps(8))

    with tempfile.TemporaryDirectory(dir=args.out) as tmp:
        run = Path(tmp)
        copies = ckpt.HostCopies()
        blocking, snapshot_s, write_s, during = [], [], [], []
        for i in range(args.repeat):
            start = time.perf_counter()
            snap = ckpt.snapshot(parts, True, copies)
            path = ckpt.write(run, 2 * i + 1, snap, keep=2)
            blocking.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in path.iterdir())
        writer = ckpt.Writer()
        for i in range(args.repeat):
            start = time.perf_counter()
            snap = ckpt.snapshot(parts, True, copies)
            writer.submit(lambda snap=snap, i=i: ckpt.write(run, 2 * i + 2, snap, keep=2))
            snapshot_s.append(time.perf_counter() - start)
            while writer.busy:  # training goes on while the writer works
                during += steps(1)
            writer.wait()
            write_s.append(time.perf_counter() - start)

    before, after = statistics.median(blocking), statistics.median(snapshot_s)
    slowdown = (statistics.median(during) / alone - 1) if during else 0.0
    # what the background write costs the steps run meanwhile, in seconds of training lost
    lost = max(0.0, slowdown) * (statistics.median(write_s) - after)
    per_run = args.interval * args.step_seconds
    print(f"checkpoint of {args.preset} on {device} ({size / 2**20:,.0f} MiB on disk; median of {args.repeat}):")
    print(f"{'':<44}{'stall s':>9}{'share of wall':>15}")
    print(f"{'written on the training thread (before)':<44}{before:>9.2f}{100 * before / (per_run + before):>14.2f}%")
    print(f"{'background: snapshot on the training thread':<44}{after:>9.2f}{100 * after / (per_run + after):>14.2f}%")
    print(f"{'background: steps slowed while writing':<44}{lost:>9.2f}{100 * lost / (per_run + lost):>14.2f}%")
    print(f"stall after / before: {(after + lost) / before:.3f}  (the writer took {statistics.median(write_s):.2f} s; "
          f"{len(during)} steps ran meanwhile, each {100 * slowdown:+.0f}% against {alone * 1e3:.0f} ms alone)")
    print(f"share of wall: one checkpoint every {args.interval} steps of {args.step_seconds * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
