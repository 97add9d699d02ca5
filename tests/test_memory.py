"""train/memory.py: the memory estimate the dry run prints, against measurements on CPU (saved-tensor
hooks for the activations, torch.profiler's memory events for a step's peak), on small configs of both recipes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY
from train import memory
from train.config import load_config
from train.model import GPT
from train.optim import build_optimizer
from train.trainer import train

SMALL = ["model.seq_len=128", "model.d_model=192", "model.n_heads=3", "model.n_layers=2", "training.batch_size=2"]
# demo's shape shrunk; the modern recipe with a soft cap (its presets have none) so the cap's terms count
CASES = {"gpt2": ("demo", SMALL), "modern": ("demo_modern", SMALL + ["model.logit_softcap=15.0"])}


def config(case: str, *extra: str):
    preset, overrides = CASES[case]
    cfg = load_config(preset, overrides + list(extra))
    cfg.model.vocab_size = 1000
    return cfg


def model_and_batch(cfg):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    shape = (cfg.training.batch_size, cfg.model.seq_len)
    return (GPT(cfg.model), torch.randint(0, cfg.model.vocab_size, shape, generator=g),
            torch.randint(0, cfg.model.vocab_size, shape, generator=g))


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
@pytest.mark.parametrize("case", list(CASES))
def test_saved_activations_estimate_is_within_10_percent_of_the_measurement(case, precision):
    cfg = config(case)
    model, idx, targets = model_and_batch(cfg)
    est = memory.estimate(cfg, precision, "cpu")
    loss_only, _ = memory.measure_saved_bytes(model, idx, targets, precision, return_logits=False)
    with_logits, _ = memory.measure_saved_bytes(model, idx, targets, precision, return_logits=True)
    assert abs(est.activations(False) / loss_only - 1) < 0.10, (est.activations(False), loss_only)
    assert abs((est.blocks_eager + est.output_layer_logits) / with_logits - 1) < 0.10


def test_loss_only_forward_keeps_no_logits_for_backward():
    """What autograd keeps for backward shrinks by the logits' share, measured with saved-tensor hooks."""
    cfg = config("modern")
    model, idx, targets = model_and_batch(cfg)
    with_logits, _ = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=True)
    loss_only, _ = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=False)
    tokens, V, C = idx.numel(), cfg.model.vocab_size, cfg.model.d_model
    # the logits path keeps fp32 tanh and log-softmax outputs, 8 bytes per token per vocabulary entry; the
    # loss-only path d(loss)/dW (4 bytes per weight) and d(loss)/dx (4 per token per d_model) instead
    assert with_logits - loss_only >= tokens * V * 8 - 4 * V * C - tokens * 4 * C


@pytest.mark.parametrize("accumulation", [1, 2])
@pytest.mark.parametrize("case", list(CASES))
def test_peak_of_a_step_is_within_10_percent_of_the_profilers(case, accumulation):
    """A micro-batch's forward and backward and the optimizer step, with the optimizer state made and,
    under accumulation, an earlier micro-batch's grads held: the peak the profiler's memory events give on CPU."""
    cfg = config(case, f"training.grad_accum_steps={accumulation}")
    model, idx, targets = model_and_batch(cfg)
    optimizer = build_optimizer(model, cfg, torch.device("cpu"))
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    if accumulation == 1:
        optimizer.zero_grad(set_to_none=True)

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            _, loss = model(idx, targets, return_logits=False)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    held = [*model.parameters(), *(p.grad for p in model.parameters() if p.grad is not None),
            *memory.tensors_in(optimizer.state_dict())]
    measured = memory.measure_peak_bytes(step, held, torch.device("cpu"))
    estimated = memory.estimate(cfg, "bf16", "cpu").total(compiled=False)
    assert abs(estimated / measured - 1) < 0.10, (estimated, measured)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_compiled_saved_activations_estimate_is_within_10_percent(case):
    torch._dynamo.reset()
    cfg = config(case)
    model, idx, targets = model_and_batch(cfg)
    measured, _ = memory.measure_saved_bytes(model, idx, targets, "bf16", return_logits=False,
                                             forward=torch.compile(model))
    estimated = memory.estimate(cfg, "bf16", "cpu").activations(compiled=True)
    assert abs(estimated / measured - 1) < 0.10, (estimated, measured)


def test_optimizer_states_are_counted_per_optimizer():
    adamw = memory.estimate(config("gpt2"), "bf16")
    n = sum(p.numel() for p in GPT(config("gpt2").model).parameters())
    assert adamw.weights == adamw.grads == 4 * n and adamw.optimizer == {"AdamW moments": 8 * n}
    cfg = config("modern")
    muon = memory.estimate(cfg, "bf16")
    model = GPT(cfg.model)
    hidden = sum(p.numel() for name, p in model.named_parameters() if name.startswith("blocks.") and p.dim() == 2)
    rest = sum(p.numel() for p in model.parameters()) - hidden
    assert muon.optimizer == {"AdamW moments": 8 * rest, "Muon momentum": 4 * hidden}


def test_largest_micro_batch_grows_with_the_gpu():
    cfg = load_config("75m_dolma_modern")
    cfg.model.vocab_size = 32000
    fits = [memory.largest_micro_batch(cfg, "bf16", gib, compiled=True) for gib in (12, 16, 24, 80)]
    assert fits == sorted(fits) and fits[0] >= 1
    for gib, batch in zip((12, 16, 24, 80), fits, strict=True):
        assert memory.estimate(cfg, "bf16", micro_batch=batch).total(True) <= memory.usable_bytes(gib)


def test_dry_run_prints_the_breakdown(tiny_dataset, tmp_path, capsys):
    cfg = load_config("demo_modern", TINY)
    train(cfg, tiny_dataset, tmp_path / "run", dry_run=True)
    out = capsys.readouterr().out
    for part in ("estimated memory per process", "weights", "grads", "AdamW moments", "Muon momentum",
                 "activations (eager)", "(compiled", "output layer and loss", "largest transient"):
        assert part in out, part


@pytest.mark.slow
def test_bench_memory_prints_its_tables():
    """tools/bench_memory.py end to end on two shrunk presets, without the compiled measurement: every
    row, and the estimates within 10% of what it measures."""
    root = Path(__file__).resolve().parents[1]
    args = [sys.executable, "tools/bench_memory.py", "--presets", "demo,demo_modern", "--seq-len", "64",
            "--micro-batch", "2", "--vocab-size", "1000", "--no-compile"]
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith(("demo ", "demo_modern "))]
    measured, fits = [r for r in rows if "/" not in r], [r for r in rows if "/" in r]
    assert len(measured) == 6 and all(abs(float(r[-1]) - 1) < 0.10 for r in measured)
    assert len(fits) == 2 and all(len(r) == 1 + 3 * 4 for r in fits)  # "E / C" for 4 GPU sizes
