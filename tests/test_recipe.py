"""The modern recipe's model options: QK-norm, ReLU², a normalized embedding, zero-init, an untied head
and logit soft-capping."""
from __future__ import annotations

import math

import pytest
import torch

from train.generate import generate_ids
from train.model import GPT, ModelConfig

# every part of the modern recipe, on a tiny model
MODERN = dict(rope=True, rmsnorm=True, qk_norm=True, relu2=True, embed_norm=True, untied_head=True, zero_init=True,
              logit_softcap=15.0, bias=False)


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(vocab_size=97, seq_len=16, n_layers=2, d_model=32, n_heads=4), **kw})


def randomize(model: GPT, seed: int = 0) -> GPT:
    """Every parameter drawn at random (zero_init's zeros would make all logits equal, and any test of them vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "norm" in name else 0.0))
    return model


# ---------------------------------------------------------------------------------------------------
# model options

@pytest.mark.parametrize("opts", [MODERN, {**MODERN, "untied_head": False, "relu2": False},
                                  {"qk_norm": True, "rope": True, "swiglu": True, "rmsnorm": True}])
def test_options_train_and_decode_with_the_kv_cache_as_without(opts):
    torch.manual_seed(0)
    model = GPT(tiny(**opts))
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 97) and loss.shape == ()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model = randomize(model).eval()
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    # 30 new tokens from 4 prompt tokens cross the 16-token context: the trimming is exercised too
    cached, _ = generate_ids(model, prompt, 30, temperature=0, use_kv_cache=True)
    plain, _ = generate_ids(model, prompt, 30, temperature=0, use_kv_cache=False)
    assert cached == plain
    assert len({tuple(row) for row in cached}) == 2 and len(set(cached[0])) > 3  # not one token repeated
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(3, 16)
        a, _ = model(idx[:, :9], kv_cache=cache, start_pos=0)
        b, _ = model(idx[:, 9:], kv_cache=cache, start_pos=9)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, rtol=1e-5, atol=1e-5)


def test_zero_init_starts_every_block_as_the_identity_and_the_logits_uniform():
    torch.manual_seed(0)
    model = GPT(tiny(**MODERN))
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()
    assert not model.lm_head.weight.any()
    assert model.blocks[0].attn.qkv.weight.std() > 0.01  # the rest is drawn as before
    idx = torch.randint(0, 97, (2, 16))
    _, loss = model(idx, idx)
    assert loss.item() == pytest.approx(math.log(97), abs=1e-6)
    plain = GPT(tiny(**{**MODERN, "zero_init": False}))
    assert plain.blocks[0].mlp.proj.weight.std() > 0.001 and plain.lm_head.weight.std() > 0.01


def test_untied_head_has_its_own_matrix_and_is_counted_instead_of_the_embedding():
    tied, untied = GPT(tiny(rope=True)), GPT(tiny(rope=True, untied_head=True))
    assert untied.lm_head.weight.shape == (97, 32) and tied.lm_head is None
    extra = 97 * 32
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + extra
    assert untied.num_params() == tied.num_params()  # a lookup table is not compute; the head is
    with torch.no_grad():
        untied.tok_emb.weight[5].zero_()
    logits, _ = untied(torch.zeros(1, 4, dtype=torch.long))
    assert logits[0, :, 5].abs().min() > 0  # the output row of token 5 is not its embedding row


def test_softcap_bounds_the_logits_and_is_tanh():
    model = randomize(GPT(tiny(rope=True, untied_head=True, logit_softcap=2.0)), seed=1).eval()
    uncapped = GPT(tiny(rope=True, untied_head=True))
    uncapped.load_state_dict(model.state_dict())
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        capped, raw = model(idx)[0], uncapped.eval()(idx)[0]
    assert raw.abs().max() > 4.0 and capped.abs().max() < 2.0
    torch.testing.assert_close(capped, 2.0 * torch.tanh(raw / 2.0))


def test_qk_norm_bounds_the_attention_logits():
    model = randomize(GPT(tiny(rope=True, qk_norm=True)), seed=2)
    q, k, _ = model.blocks[0].attn.heads(torch.randn(2, 16, 32) * 100)
    rms = lambda t: t.pow(2).mean(-1).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(q), torch.ones(2, 4, 16), atol=1e-4, rtol=0)
    torch.testing.assert_close(rms(k), torch.ones(2, 4, 16), atol=1e-4, rtol=0)


def test_embed_norm_gives_the_blocks_a_unit_rms_input():
    model = randomize(GPT(tiny(rope=True, embed_norm=True)))  # rows of RMS 0.3, where eps (1e-6) is negligible
    x, _ = model.embed(torch.randint(0, 97, (2, 16)), torch.arange(16))
    torch.testing.assert_close(x.pow(2).mean(-1).sqrt(), torch.ones(2, 16), atol=1e-4, rtol=0)


def test_bad_option_combinations_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="model.swiglu and model.relu2 are two kinds of MLP"):
        GPT(tiny(swiglu=True, relu2=True))
    with pytest.raises(ValueError, match="model.logit_softcap must be 0"):
        GPT(tiny(logit_softcap=-1.0))
