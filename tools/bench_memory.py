"""Training memory per preset: train/memory.py's estimate against measurements on CPU, and what fits a GPU.

    python tools/bench_memory.py                                  every preset, its micro-batch (slow on CPU)
    python tools/bench_memory.py --presets 75m_dolma_modern --no-compile
    python tools/bench_memory.py --presets demo --seq-len 64 --micro-batch 2     seconds

For each preset (random weights, bf16 autocast, the preset's micro-batch of seq_len tokens, the
loss-only forward the trainer uses) it measures on CPU:

* saved activations, eager: the bytes of every storage autograd keeps from the forward to backward,
  parameters left out (``measure_saved_bytes``: saved-tensor hooks);
* saved activations under ``torch.compile`` (inductor on CPU), the same way;
* the step's peak: torch.profiler's memory events over one micro-batch's forward and backward and the
  optimizer step, with the optimizer state already created and, under gradient accumulation, the
  grads of an earlier micro-batch already held (``measure_peak_bytes``);
* the saved activations of the forward that returns the logits, for what the loss-only forward saves.

and prints them beside ``estimate()``'s figures, then the largest micro-batch whose estimated peak
fits a 12, 16, 24 and 80 GiB GPU (``largest_micro_batch``: the CUDA context and allocator slack
taken off), eager and compiled. The CPU runs the same operations a GPU does except the attention
kernel (see train/memory.py); a 75M preset takes minutes per measurement on a 2-core CPU.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import torch  # noqa: E402

from train import memory  # noqa: E402
from train.config import load_config, preset_names  # noqa: E402
from train.model import GPT  # noqa: E402
from train.optim import build_optimizer  # noqa: E402

GPUS_GIB = (12, 16, 24, 80)


def preset_config(name: str, args):
    cfg = load_config(name)
    cfg.model.vocab_size = args.vocab_size or (8192 if name.startswith("demo") else 32000)
    if args.seq_len:
        cfg.model.seq_len = args.seq_len
    if args.micro_batch:
        cfg.training.batch_size = args.micro_batch
    return cfg


def say(line: str) -> None:
    print(line, flush=True)


def measure(cfg, compile_too: bool, peak: bool) -> dict[str, int]:
    """The measured figures of one config in bytes: "eager", "compiled", "peak", "logits path" (a
    figure not asked for is left out)."""
    torch.manual_seed(0)
    model = GPT(cfg.model)
    B, T, V = cfg.training.batch_size, cfg.model.seq_len, cfg.model.vocab_size
    idx, targets = torch.randint(0, V, (B, T)), torch.randint(0, V, (B, T))
    out = {}
    start = time.perf_counter()
    out["logits path"], _ = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=True)
    say(f"  saved with the logits returned: {time.perf_counter() - start:.0f}s")
    if peak:
        optimizer = build_optimizer(model, cfg, torch.device("cpu"))
        for p in model.parameters():  # the optimizer state exists from the first step on
            p.grad = torch.zeros_like(p)
        optimizer.step()
        if cfg.training.grad_accum_steps == 1:  # else an earlier micro-batch's grads are held
            optimizer.zero_grad(set_to_none=True)

        def micro_batch_and_step():
            out["eager"], loss = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=False)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        start = time.perf_counter()
        held = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None),
                *memory.tensors_in(optimizer.state_dict())]
        out["peak"] = memory.measure_peak_bytes(micro_batch_and_step, held, torch.device("cpu"))
        say(f"  peak of a micro-batch and the optimizer step: {time.perf_counter() - start:.0f}s")
        del optimizer
    else:
        out["eager"], _ = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=False)
    if compile_too:
        start = time.perf_counter()
        torch._dynamo.reset()
        out["compiled"], _ = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=False,
                                                        forward=torch.compile(model))
        say(f"  saved under torch.compile: {time.perf_counter() - start:.0f}s")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=",".join(preset_names()), help="comma-separated (default: every preset)")
    p.add_argument("--vocab-size", type=int, help="default: 8192 for demo presets, 32000 for the others")
    p.add_argument("--micro-batch", type=int, help="default: each preset's training.batch_size")
    p.add_argument("--seq-len", type=int, help="default: each preset's model.seq_len")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile measurement")
    p.add_argument("--no-peak", action="store_true", help="skip the peak of a step (forward, backward, optimizer step)")
    args = p.parse_args(argv)
    names = [n for n in args.presets.split(",") if n]

    rows, fits = [], []
    for name in names:
        cfg = preset_config(name, args)
        print(f"{name}: measuring (micro-batch {cfg.training.batch_size} x {cfg.model.seq_len})", flush=True)
        est = memory.estimate(cfg, "bf16", "cpu")
        # each preset in a fresh process: what one leaves behind (compiled graphs, the allocator's
        # cached blocks) must not count in, or push out of memory, the next one
        with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
            got = pool.submit(measure, cfg, not args.no_compile, not args.no_peak).result()
        figures = {"eager": est.activations(False), "compiled": est.activations(True), "peak": est.total(False),
                   "logits path": est.blocks_eager + est.output_layer_logits}
        for part in ("eager", "compiled", "peak", "logits path"):
            if part in got:
                rows.append((name, cfg.training.batch_size, part, figures[part], got[part]))
        fits.append((name, [(memory.largest_micro_batch(cfg, "bf16", g, False),
                             memory.largest_micro_batch(cfg, "bf16", g, True)) for g in GPUS_GIB]))

    print(f"\nbench_memory: bf16 autocast on CPU, {torch.get_num_threads()} threads; estimate = train/memory.py, "
          f"measured = saved-tensor hooks (saved activations) and torch.profiler's memory events (peak)")
    print(f"{'preset':<18}{'micro-batch':>12}  {'what':<34}{'estimated GiB':>14}{'measured GiB':>14}{'est/meas':>10}")
    labels = {"eager": "saved activations, eager", "compiled": "saved activations, compiled",
              "peak": "peak of a step, eager", "logits path": "saved, forward returning logits"}
    for name, batch, part, est_b, got_b in rows:
        print(f"{name:<18}{batch:>12}  {labels[part]:<34}{est_b / memory.GIB:>14.3f}{got_b / memory.GIB:>14.3f}"
              f"{est_b / got_b:>10.3f}")
    print("\nlargest micro-batch (of 1-64) whose estimated peak fits the GPU, eager / compiled "
          f"(context {memory.CUDA_RESERVED_BYTES / memory.GIB:.2f} GiB and {memory.ALLOCATOR_SLACK:.0%} slack off):")
    print(f"{'preset':<18}" + "".join(f"{f'{g} GiB':>12}" for g in GPUS_GIB))
    for name, per_gpu in fits:
        print(f"{name:<18}" + "".join(f"{f'{e} / {c}':>12}" for e, c in per_gpu))


if __name__ == "__main__":
    main()
