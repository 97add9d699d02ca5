"""The loss-only training forward, ``model(idx, targets, return_logits=False)``: the same loss and
gradients as the forward that returns the logits, without keeping the logits for backward."""
from __future__ import annotations

import pytest
import torch

import train.model
from train.model import GPT, ModelConfig

V = 97
CONFIGS = {
    "gpt2": dict(),
    "modern": dict(rope=True, rmsnorm=True, qk_norm=True, relu2=True, embed_norm=True, untied_head=True,
                   logit_softcap=15.0, bias=False),
    "modern tied": dict(rope=True, rmsnorm=True, qk_norm=True, relu2=True, logit_softcap=5.0, bias=False),
    "swiglu untied": dict(swiglu=True, untied_head=True),
}


@pytest.fixture(autouse=True)
def seven_token_chunks(monkeypatch):
    """Chunks of 7 of the 48 tokens: six whole chunks and a tail of 6."""
    monkeypatch.setattr(train.model, "LOSS_CHUNK_BYTES", 4 * V * 7)


def model_and_batch(opts: dict, seed: int = 0):
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=V, seq_len=16, n_layers=2, d_model=32, n_heads=4, **opts))
    with torch.no_grad():  # weights off their init (zero_init's zeros, tiny logits) so every term matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    g = torch.Generator().manual_seed(seed)
    return model, torch.randint(0, V, (3, 16), generator=g), torch.randint(0, V, (3, 16), generator=g)


def loss_and_grads(model, idx, targets, return_logits: bool, dtype=None, forward=None):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        logits, loss = (model if forward is None else forward)(idx, targets, return_logits=return_logits)
    (loss * 0.37).backward()  # a scaled loss, as accumulation and the gradient scaler give backward
    return logits, loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def worst_gap(a: dict, b: dict) -> float:
    return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in b)


def gap_to(exact: dict, grads: dict) -> float:
    """All parameters' gradient errors together, each relative to its exact gradient's norm."""
    return torch.cat([(grads[n] - exact[n]).flatten() / exact[n].norm() for n in exact]).norm().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_only_forward_gives_the_same_loss_and_gradients_in_fp32(name):
    model, idx, targets = model_and_batch(CONFIGS[name])
    logits, loss, grads = loss_and_grads(model, idx, targets, return_logits=True)
    none, loss_only, grads_only = loss_and_grads(model, idx, targets, return_logits=False)
    assert logits.shape == (3, 16, V) and none is None
    assert torch.allclose(loss_only, loss, rtol=1e-6, atol=0)
    assert set(grads_only) == set(grads) and worst_gap(grads_only, grads) < 1e-5


@pytest.mark.parametrize("name", ["gpt2", "modern"])
def test_loss_only_forward_under_bf16_autocast_is_as_close_to_fp32_as_the_logits_path(name):
    """Both paths compute bf16 logits and bf16 matmuls for the gradients: the same loss, and gradients
    as far from the fp32 ones as the logits path's are (the chunked weight gradient is summed in fp32)."""
    model, idx, targets = model_and_batch(CONFIGS[name])
    _, _, exact = loss_and_grads(model, idx, targets, return_logits=True)
    _, loss, grads = loss_and_grads(model, idx, targets, return_logits=True, dtype=torch.bfloat16)
    _, loss_only, grads_only = loss_and_grads(model, idx, targets, return_logits=False, dtype=torch.bfloat16)
    assert abs(loss_only.item() - loss.item()) < 1e-5
    assert gap_to(exact, grads_only) <= 1.25 * gap_to(exact, grads)
    assert worst_gap(grads_only, grads) < 2e-2  # bf16 rounding, measured 0.3-0.8%


def test_without_gradients_the_loss_is_the_same_and_nothing_is_saved():
    model, idx, targets = model_and_batch(CONFIGS["modern"])
    with torch.no_grad():
        _, loss = model(idx, targets)
        none, loss_only = model(idx, targets, return_logits=False)
    assert none is None and not loss_only.requires_grad
    assert torch.allclose(loss_only, loss, rtol=1e-6, atol=0)


@pytest.mark.slow
def test_loss_only_forward_under_torch_compile_matches_eager():
    """Compiled (inductor on CPU), in fp32: the same loss and gradients as the eager logits path. (bf16 is
    tested eagerly above; compiled with bf16 autocast it runs in tools/gpu_check.py on a GPU: each compile
    costs about 20 s on 2 CPU cores.)"""
    torch._dynamo.reset()
    model, idx, targets = model_and_batch(CONFIGS["modern"])
    compiled = torch.compile(model)
    for dtype, loss_tolerance, grad_tolerance in ((None, 1e-5, 1e-5),):
        _, loss, grads = loss_and_grads(model, idx, targets, return_logits=True, dtype=dtype)
        _, loss_c, grads_c = loss_and_grads(model, idx, targets, return_logits=False, dtype=dtype, forward=compiled)
        assert abs(loss_c.item() - loss.item()) < loss_tolerance
        assert worst_gap(grads_c, grads) < grad_tolerance
