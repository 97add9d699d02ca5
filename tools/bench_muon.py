"""Muon's optimizer step: the trainer's FusedMuon against torch.optim.Muon on a preset's hidden matrices.

    python tools/bench_muon.py                              75m_dolma_modern's 40 matrices, CPU
    python tools/bench_muon.py --device cuda                the same on a GPU (kernels are CUDA kernels)
    python tools/bench_muon.py --preset demo_modern --steps 2

The matrices are the blocks' 2-D weights of the preset's model (its shapes read from the model built
on the meta device), with random values and a fresh random gradient every step (the update does not
depend on the values). Three optimizers step the same parameters from the same gradients:

* ``torch.optim.Muon``: one momentum, Newton-Schulz and update per matrix, eagerly;
* ``FusedMuon eager``: the elementwise parts as ``torch._foreach_*`` over every matrix, one stacked
  Newton-Schulz per distinct shape;
* ``FusedMuon compiled``: the same with the stacked Newton-Schulz compiled by ``torch.compile``.

Printed per optimizer: kernels per step (CUDA kernels on a GPU; on CPU the operators a GPU would run
a kernel for, counted from the profiler's events: see ``kernels_in_step``), the
step time (median of ``--steps`` after a warm-up step that compiles), and how far its parameters end
from the stock optimizer's after the same steps, relative to how far the stock ones moved (bf16
Newton-Schulz: differences within bf16 rounding are expected; on CPU the eager fused update is bitwise
the stock one, the compiled one within 1%).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import torch  # noqa: E402
import torch._inductor.config  # noqa: E402
from torch.autograd import DeviceType  # noqa: E402

from train.config import load_config  # noqa: E402
from train.model import GPT  # noqa: E402
from train.optim import FusedMuon, MuonAdamW, build_optimizer  # noqa: E402

# operators that return a view or allocate without computing: no kernel runs for them
NO_KERNEL = {"aten::t", "aten::transpose", "aten::mT", "aten::numpy_T", "aten::view", "aten::as_strided",
             "aten::unbind", "aten::select", "aten::expand", "aten::detach", "aten::alias", "aten::empty",
             "aten::empty_strided"}


def hidden_shapes(preset: str) -> list[tuple[int, int]]:
    """Shapes of the matrices build_optimizer gives Muon (the blocks' 2-D weights), in model order: its
    own grouping, on a model built on the meta device (nothing allocated)."""
    cfg = load_config(preset)
    cfg.model.vocab_size = 32000  # the hidden matrices do not depend on it
    with torch.device("meta"):
        model = GPT(cfg.model)
    opt = build_optimizer(model, cfg, torch.device("meta"))
    if not isinstance(opt, MuonAdamW):
        raise SystemExit(f"bench_muon: {preset} trains with {cfg.training.optimizer}, not Muon; "
                         f"pick a modern preset (--preset 75m_dolma_modern)")
    return [tuple(p.shape) for group in opt.muon.param_groups for p in group["params"]]


def make(kind: str, params: list[torch.Tensor]) -> torch.optim.Optimizer:
    options = dict(lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True)  # the recipe's
    if kind == "torch.optim.Muon":
        return torch.optim.Muon(params, **options)
    return FusedMuon(params, compile=kind == "FusedMuon compiled", **options)


def kernels_in_step(opt: torch.optim.Optimizer, device: torch.device) -> int:
    """Kernels one step runs: CUDA kernel events on a GPU. On CPU, the operators a GPU would launch a
    kernel for: each outermost ATen operator (a ``_foreach_*`` operator once: on a GPU it is one
    multi-tensor kernel, on CPU a loop over its tensors) and each kernel of a compiled graph, leaving
    out operators that only make views."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        opt.step()
        sync(device)
    events = prof.events()
    if device.type == "cuda":
        return sum(1 for e in events if e.device_type == DeviceType.CUDA)

    def outermost_aten(e) -> bool:
        parent = e.cpu_parent
        return e.name.startswith("aten::") and not (parent is not None and parent.name.startswith("aten::"))
    return sum(1 for e in events if (outermost_aten(e) and e.name not in NO_KERNEL) or "_cpp_fused_" in e.name)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(kind: str, init: list[torch.Tensor], grads: list[list[torch.Tensor]], device: torch.device) -> dict:
    """Step a copy of ``init`` with ``grads[0]`` (warm-up), then each of ``grads[1:]`` timed."""
    params = [p.clone().requires_grad_() for p in init]
    opt = make(kind, params)
    times = []
    for i, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads, strict=True):
            p.grad = g
        sync(device)
        start = time.perf_counter()
        opt.step()
        sync(device)
        if i:
            times.append(time.perf_counter() - start)
    for p, g in zip(params, grads[-1], strict=True):
        p.grad = g
    state = [p.detach().clone() for p in params]  # before the extra profiled step
    kernels = kernels_in_step(opt, device)
    return {"params": state, "seconds": statistics.median(times), "kernels": kernels}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="75m_dolma_modern", help="train/configs preset whose matrices to step")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch._inductor.config.cpp.enable_kernel_profile = True  # the compiled graph's CPU kernels as profiler events

    shapes = hidden_shapes(args.preset)
    gen = torch.Generator().manual_seed(0)
    init = [(0.02 * torch.randn(s, generator=gen)).to(device) for s in shapes]
    grads = [[torch.randn(s, generator=gen).to(device) for s in shapes] for _ in range(args.steps + 1)]
    results = {kind: run(kind, init, grads, device)
               for kind in ("torch.optim.Muon", "FusedMuon eager", "FusedMuon compiled")}

    stock = results["torch.optim.Muon"]
    moved = torch.stack([(a - b).norm() for a, b in zip(stock["params"], init, strict=True)])
    groups = len(set(shapes))
    print(f"bench_muon: {args.preset}, {len(shapes)} hidden matrices in {groups} shapes "
          f"({', '.join(f'{r}x{c}' for r, c in sorted(set(shapes)))}), {device}, {torch.get_num_threads()} threads, "
          f"{args.steps + 1} steps (median of the last {args.steps} timed)")
    if device.type == "cpu":
        print("CPU figures: kernels counted as a GPU would launch them (kernels_in_step); times are CPU times, "
              "not a GPU's")
    print(f"{'optimizer':<22}{'kernels/step':>14}{'step s':>10}{'vs stock':>10}{'max |p - p_stock| / |moved|':>30}")
    for kind, r in results.items():
        diff = torch.stack([(a - b).norm() for a, b in zip(r["params"], stock["params"], strict=True)]) / moved
        print(f"{kind:<22}{r['kernels']:>14,}{r['seconds']:>10.3f}{stock['seconds'] / r['seconds']:>9.2f}x"
              f"{diff.max().item():>30.2e}")


if __name__ == "__main__":
    main()
