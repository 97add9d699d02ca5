"""The GPT model: shapes, weight tying, initial loss, KV-cache decoding, options."""
import math

import pytest
import torch

from train.model import GPT, ModelConfig, peak_flops, peak_flops_of


def tiny(**kw) -> ModelConfig:
    base = dict(vocab_size=97, seq_len=16, n_layers=2, d_model=32, n_heads=4)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("opts", [{}, {"rope": True}, {"swiglu": True, "rmsnorm": True, "bias": False},
                                  {"grad_checkpointing": True, "dropout": 0.1}])
def test_shapes_and_backward(opts):
    torch.manual_seed(0)
    model = GPT(tiny(**opts))
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 97)
    assert loss.shape == ()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    logits, loss = model(idx[:, :5])
    assert logits.shape == (3, 5, 97) and loss is None


def test_weight_tying_output_is_the_embedding():
    model = GPT(tiny())
    names = [n for n, _ in model.named_parameters()]
    assert not any("lm_head" in n for n in names)
    assert sum(p.numel() for p in model.parameters()) == model.num_params(non_embedding=False)
    with torch.no_grad():
        model.tok_emb.weight[5].fill_(0.0)
    logits, _ = model(torch.zeros(1, 4, dtype=torch.long))
    assert torch.equal(logits[0, :, 5], torch.zeros(4))  # the output row of token 5 is its embedding row


def test_untrained_loss_is_ln_vocab():
    torch.manual_seed(0)
    model = GPT(tiny(vocab_size=1000, d_model=64))
    idx = torch.randint(0, 1000, (4, 16))
    _, loss = model(idx, torch.randint(0, 1000, (4, 16)))
    assert abs(loss.item() - math.log(1000)) < 0.1


def test_too_long_input_is_refused():
    model = GPT(tiny())
    with pytest.raises(ValueError, match="crop the input"):
        model(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize("rope", [False, True])
def test_greedy_decode_with_and_without_kv_cache_agree(rope):
    torch.manual_seed(0)
    model = GPT(tiny(rope=rope)).eval()
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])

    with torch.no_grad():
        full = prompt
        for _ in range(10):
            logits, _ = model(full)
            full = torch.cat([full, logits[:, -1].argmax(-1, keepdim=True)], dim=1)

        cache = model.new_kv_cache(batch_size=2, max_len=16)
        logits, _ = model(prompt, kv_cache=cache, start_pos=0)
        cached, pos = prompt, prompt.shape[1]
        for _ in range(10):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            cached = torch.cat([cached, nxt], dim=1)
            logits, _ = model(nxt, kv_cache=cache, start_pos=pos)
            pos += 1
    assert cached.tolist() == full.tolist()


def test_cached_chunk_logits_match_full_forward():
    torch.manual_seed(0)
    model = GPT(tiny()).eval()
    idx = torch.randint(0, 97, (2, 12))
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(2, 12)
        a, _ = model(idx[:, :7], kv_cache=cache, start_pos=0)
        b, _ = model(idx[:, 7:], kv_cache=cache, start_pos=7)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("opts", [{}, {"rope": True, "swiglu": True, "rmsnorm": True, "bias": False}])
def test_flops_per_token_against_a_count_of_the_matmuls(opts):
    """PyTorch's FlopCounterMode counts the matmul FLOPs of a real forward and backward (attention through
    the math SDPA backend, whose matmuls it sees; it counts the full T x T scores, as the estimate does).
    The estimate also charges 6 FLOPs per token to every 1-D parameter (norm gains, biases), which
    multiply no matrix: that is the only difference."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = GPT(tiny(**opts))
    B, T = 3, model.cfg.seq_len
    idx = torch.randint(0, 97, (B, T))
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        _, loss = model(idx, idx)
        loss.backward()
    vector_params = sum(p.numel() for p in model.parameters() if p.dim() == 1)
    assert counter.get_total_flops() > 0
    assert counter.get_total_flops() == B * T * (model.estimate_flops_per_token() - 6 * vector_params)


@pytest.mark.parametrize("name, half, tf32", [
    ("NVIDIA H100 80GB HBM3", 989.4e12, 494.7e12),   # SXM
    ("NVIDIA H100 PCIe", 756.5e12, 378e12),
    ("NVIDIA H100 NVL", 835.5e12, 417.5e12),
    ("NVIDIA H200", 989.4e12, 494.7e12),
    ("NVIDIA A100-SXM4-80GB", 312e12, 156e12),
    ("NVIDIA A100-PCIE-40GB", 312e12, 156e12),
    ("NVIDIA A100 80GB PCIe", 312e12, 156e12),
    ("NVIDIA L4", 121e12, 60e12),
    ("NVIDIA L40S", 362.05e12, 183e12),              # not an L4
    ("NVIDIA A10", 125e12, 62.5e12),
    ("NVIDIA A10G", 70e12, 35e12),                   # not an A10
    ("NVIDIA GeForce RTX 3060", 25.5e12, 12.7e12),
    ("NVIDIA GeForce RTX 3090", 71e12, 35.6e12),
    ("NVIDIA GeForce RTX 4080", 97.5e12, 48.7e12),
    ("NVIDIA GeForce RTX 4090", 165.2e12, 82.6e12),
    ("NVIDIA B200", 2250e12, 1125e12),
])
def test_peak_flops_of_the_names_torch_reports(name, half, tf32):
    assert peak_flops_of(name, torch.bfloat16) == peak_flops_of(name, torch.float16) == half
    assert peak_flops_of(name, torch.float32) == tf32


@pytest.mark.parametrize("name", ["NVIDIA GeForce RTX 3090 Ti", "NVIDIA GeForce RTX 3060 Laptop GPU",
                                  "NVIDIA GeForce RTX 4080 SUPER", "NVIDIA L40G", "Tesla V100-SXM2-16GB"])
def test_other_gpus_are_unknown_not_a_near_name(name):
    assert peak_flops_of(name, torch.bfloat16) is None


def test_no_peak_on_cpu():
    assert peak_flops(torch.device("cpu"), torch.bfloat16) is None
