"""FusedMuon (train/optim.py): torch.optim.Muon's update with the matrices of one shape stacked into one
Newton-Schulz; the same steps as the stock optimizer, the same state dict, and checkpoints of either
load into the other."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.config import load_config
from train.model import GPT, ModelConfig
from train.optim import FusedMuon, MuonAdamW, build_optimizer, set_lr

# tall, wide and square, two matrices of most shapes: every stacking and transposing case
SHAPES = [(96, 32), (32, 96), (32, 32), (96, 32), (32, 32), (128, 32), (32, 128), (48, 40)]
OPTIONS = dict(lr=0.02, weight_decay=0.1, momentum=0.95)
LRS = (0.02, 0.015, 0.01, 0.005)  # one per step: the lr changes as set_lr changes it


def matrices(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.02 * torch.randn(s, generator=g) for s in SHAPES]


def gradient_steps(n: int, seed: int = 1) -> list[list[torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=g) * (10.0 ** (i % 3 - 1)) for s in SHAPES] for i in range(n)]


def run(opt_factory, init: list[torch.Tensor], steps: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    params = [p.clone().requires_grad_() for p in init]
    opt = opt_factory(params)
    for lr, grads in zip(LRS, steps, strict=True):
        for group in opt.param_groups:
            group["lr"] = lr
        for p, g in zip(params, grads, strict=True):
            p.grad = g.clone()
        opt.step()
    return [p.detach() for p in params]


def relative_gaps(a: list[torch.Tensor], b: list[torch.Tensor], init: list[torch.Tensor]) -> list[float]:
    """How far a's matrices end from b's, per matrix, relative to how far b's moved."""
    return [((x - y).norm() / (y - p).norm()).item() for x, y, p in zip(a, b, init, strict=True)]


def reference_step(params, grads, bufs, lr, weight_decay, momentum, a=3.4445, b=-4.7750, c=2.0315, steps=5):
    """torch 2.13's _single_tensor_muon with its Newton-Schulz in float64: the exact arithmetic the
    fused optimizer stacks."""
    for p, g, buf in zip(params, grads, bufs, strict=True):
        buf.lerp_(g, 1 - momentum)
        x = g.lerp(buf, momentum).double()
        tall = x.size(0) > x.size(1)
        x = x.T if tall else x
        x = x / x.norm().clamp(min=1e-7)
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if tall else x
        p.mul_(1 - lr * weight_decay)
        p.add_(x.float(), alpha=-lr * math.sqrt(max(1, p.size(0) / p.size(1))))


def test_fused_muon_steps_as_torch_muon_does():
    """Four steps of changing lr and gradients over tall, wide and square matrices: the fused optimizer
    ends where torch.optim.Muon does, to bf16 rounding (both run the Newton-Schulz in bf16; on the CPU
    these tests were written on they end bitwise equal)."""
    init, steps = matrices(), gradient_steps(4)
    stock = run(lambda ps: torch.optim.Muon(ps, **OPTIONS), init, steps)
    fused = run(lambda ps: FusedMuon(ps, **OPTIONS), init, steps)
    assert max(relative_gaps(fused, stock, init)) < 2 ** -8
    plain = run(lambda ps: torch.optim.Muon(ps, nesterov=False, **OPTIONS), init, steps)
    fused_plain = run(lambda ps: FusedMuon(ps, nesterov=False, **OPTIONS), init, steps)
    assert max(relative_gaps(fused_plain, plain, init)) < 2 ** -8
    assert min(relative_gaps(plain, stock, init)) > 1e-2  # the Nesterov switch matters, so the check above does


def test_fused_muon_in_fp32_is_the_exact_update():
    """With its Newton-Schulz in fp32 the fused optimizer matches torch's algorithm run in float64 to
    fp32 rounding: the stacking, transposing, per-shape lr scaling and weight decay are exact."""
    init, steps = matrices(), gradient_steps(4)
    fused = run(lambda ps: FusedMuon(ps, ns_dtype=torch.float32, **OPTIONS), init, steps)
    params = [p.clone() for p in init]
    bufs = [torch.zeros_like(p) for p in init]
    for lr, grads in zip(LRS, steps, strict=True):
        reference_step(params, grads, bufs, lr, OPTIONS["weight_decay"], OPTIONS["momentum"])
    assert max(relative_gaps(fused, params, init)) < 1e-5
    bf16 = run(lambda ps: FusedMuon(ps, **OPTIONS), init, steps)
    assert max(relative_gaps(bf16, params, init)) > 1e-3  # bf16 differs: the fp32 path is a real check


@pytest.mark.slow
def test_compiled_newton_schulz_equals_eager_and_compiles_once():
    """torch.compile'd (inductor on CPU): the same parameters as eager to bf16 rounding, all shapes in
    one graph, compiled at the first step and never again."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()  # graphs compiled by earlier tests are not this one's
    init, steps = matrices(), gradient_steps(4)
    eager = run(lambda ps: FusedMuon(ps, compile=False, **OPTIONS), init, steps)
    compiled = run(lambda ps: FusedMuon(ps, compile=True, **OPTIONS), init, steps)
    assert max(relative_gaps(compiled, eager, init)) < 2 ** -8
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def modern_cfg():
    cfg = load_config("demo_modern", ["training.weight_decay=0.1"])
    cfg.model = ModelConfig(vocab_size=97, seq_len=16, n_layers=2, d_model=32, n_heads=4, rope=True, rmsnorm=True,
                            qk_norm=True, relu2=True, untied_head=True, bias=False)
    return cfg


def train_steps(model: GPT, opt, cfg, first: int, n: int) -> None:
    g = torch.Generator().manual_seed(first)
    for step in range(first, first + n):
        set_lr(opt, step, cfg.training, 10)
        idx = torch.randint(0, 97, (2, 16), generator=g)
        _, loss = model(idx, torch.roll(idx, -1, 1))
        loss.backward()
        opt.step()
        opt.zero_grad()


def old_muon_adamw(model: GPT, cfg) -> MuonAdamW:
    """MuonAdamW as the trainer built it before FusedMuon: torch.optim.Muon on the same group."""
    fused = build_optimizer(model, cfg, torch.device("cpu"))
    group = fused.muon.param_groups[0]
    stock = torch.optim.Muon([{"params": group["params"], "name": "muon"}], lr=group["lr"],
                             weight_decay=group["weight_decay"], momentum=group["momentum"], nesterov=True)
    return MuonAdamW(stock, fused.adamw)


@pytest.mark.parametrize("writer", ["fused", "stock"])
def test_resume_from_a_saved_state_continues_exactly(tmp_path, writer):
    """Two steps, the optimizer state through torch.save / torch.load(weights_only=True) into a fresh
    model and optimizer, two more steps: the same weights as four steps straight. The state written by
    the old stock-Muon MuonAdamW (writer=stock) loads the same way."""
    cfg = modern_cfg()
    torch.manual_seed(0)
    straight = GPT(cfg.model)
    start = {k: v.clone() for k, v in straight.state_dict().items()}
    opt = build_optimizer(straight, cfg, torch.device("cpu"))
    assert isinstance(opt.muon, FusedMuon)
    first = GPT(cfg.model)
    first.load_state_dict(start)
    first_opt = old_muon_adamw(first, cfg) if writer == "stock" else build_optimizer(first, cfg, torch.device("cpu"))
    train_steps(straight, opt, cfg, 0, 2)
    train_steps(first, first_opt, cfg, 0, 2)
    torch.save(first_opt.state_dict(), tmp_path / "opt.pt")
    torch.save(first.state_dict(), tmp_path / "model.pt")

    resumed = GPT(cfg.model)
    resumed.load_state_dict(torch.load(tmp_path / "model.pt", weights_only=True))
    resumed_opt = build_optimizer(resumed, cfg, torch.device("cpu"))
    resumed_opt.load_state_dict(torch.load(tmp_path / "opt.pt", weights_only=True))
    assert len(resumed_opt.muon.state) == len(resumed_opt.muon.param_groups[0]["params"])
    train_steps(straight, opt, cfg, 2, 2)
    train_steps(resumed, resumed_opt, cfg, 2, 2)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values(), strict=True):
        if writer == "fused":
            assert torch.equal(a, b), name
        else:  # two steps by the stock optimizer: equal to bf16 rounding of its Newton-Schulz
            assert (a - b).norm() <= 2 ** -8 * (a - start[name]).norm() + 1e-7, name


def test_fused_state_loads_into_torch_muon():
    """The other direction: a FusedMuon state dict is a torch.optim.Muon state dict."""
    cfg = modern_cfg()
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    train_steps(model, opt, cfg, 0, 1)
    stock = old_muon_adamw(GPT(cfg.model), cfg)
    stock.load_state_dict(opt.state_dict())
    for a, b in zip(stock.muon.state.values(), opt.muon.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])


@pytest.mark.slow
def test_bench_muon_prints_its_table():
    """tools/bench_muon.py end to end on demo_modern's 16 matrices: every row, equal updates on CPU.
    Nothing about speed is asserted."""
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "tools/bench_muon.py", "--preset", "demo_modern", "--steps", "1"],
                          cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split()[0] + " " + line.split()[1]: line.split() for line in done.stdout.splitlines()
            if line.startswith(("torch.optim.Muon", "FusedMuon"))}
    assert set(rows) == {"torch.optim.Muon 368", "FusedMuon eager", "FusedMuon compiled"}
    assert all(float(row[-1]) < 2 ** -8 for row in rows.values())  # max |p - p_stock| / |moved|
