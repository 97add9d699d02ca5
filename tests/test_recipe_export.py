"""The modern recipe's models exported: Hugging Face (NanoChatForCausalLM, a stock transformers class) and
ONNX (plain and --kv-cache), each giving our logits; options no stock class computes are refused."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import HF_TOLERANCE, make_random_run
from train.checkpoint import load_model

transformers = pytest.importorskip("transformers")
ort = pytest.importorskip("onnxruntime")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import export_hf  # noqa: E402
import export_onnx  # noqa: E402

MODERN = dict(rope=True, rmsnorm=True, qk_norm=True, relu2=True, embed_norm=True, untied_head=True, zero_init=True,
              logit_softcap=15.0, bias=False)
VARIANTS = {
    "modern": (MODERN, "NanoChatForCausalLM"),
    "modern-tied-gelu-nocap": ({**MODERN, "untied_head": False, "relu2": False, "logit_softcap": 0.0,
                                "rope_theta": 500.0}, "NanoChatForCausalLM"),
    "llama-untied": (dict(rope=True, swiglu=True, rmsnorm=True, bias=False, untied_head=True), "LlamaForCausalLM"),
    "gpt2-untied": (dict(untied_head=True), "GPT2LMHeadModel"),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exported_model_gives_our_logits(tmp_path, tiny_dataset, variant):
    options, expected = VARIANTS[variant]
    run = make_random_run(tmp_path, tiny_dataset, **options)
    out = tmp_path / "hf"
    export_hf.main([str(run), "--out", str(out)])
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert type(hf).__name__ == expected
    ours, cfg, _ = load_model(run, device="cpu")
    tied = hf.get_output_embeddings().weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    # NanoChat's head carries our final norm's weight, so it is never the embedding
    assert tied == (not cfg.untied_head and expected != "NanoChatForCausalLM")
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 1), (3, 17), (2, cfg.seq_len)]:
        idx = torch.randint(0, cfg.vocab_size, shape, generator=g)
        with torch.no_grad():
            a, _ = ours(idx)
            b = hf(input_ids=idx).logits
        assert a.shape == b.shape and a.abs().max() > 1.0
        diff = (a - b).abs().max().item()
        assert diff < HF_TOLERANCE, f"{variant} {shape}: max abs logit diff {diff:.3g}"
    if cfg.logit_softcap:
        assert hf.config.final_logit_softcapping == cfg.logit_softcap and a.abs().max() < cfg.logit_softcap


def test_transformers_generates_our_tokens_with_its_cache(tmp_path, tiny_dataset):
    """Greedy decoding through NanoChatForCausalLM.generate (its own KV cache) picks our tokens."""
    from train.generate import generate_ids
    run = make_random_run(tmp_path, tiny_dataset, **MODERN)
    export_hf.main([str(run), "--out", str(tmp_path / "hf")])
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ours, cfg, _ = load_model(run, device="cpu")
    prompt = torch.tensor([[5, 17, 42, 7], [9, 9, 100, 3]])
    mine, _ = generate_ids(ours, prompt, 20, temperature=0)
    theirs = hf.generate(prompt, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert theirs[:, 4:].tolist() == mine


@pytest.mark.parametrize("options, refused", [
    (dict(rope=True, swiglu=True, rmsnorm=True, qk_norm=True), "qk_norm=false (it does not normalize queries"),
    ({**MODERN, "embed_norm": False}, "embed_norm=true (it always normalizes the embedding)"),
    ({**MODERN, "bias": True}, "bias=false (its layers have no biases)"),
    (dict(rope=True, swiglu=True, rmsnorm=True, logit_softcap=30.0), "logit_softcap=0 (its logits are not capped)"),
])
def test_options_no_stock_class_computes_are_refused_naming_them(tmp_path, tiny_dataset, capsys, options, refused):
    run = make_random_run(tmp_path, tiny_dataset, **options)
    with pytest.raises(SystemExit) as e:
        export_hf.main([str(run), "--out", str(tmp_path / "hf")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "has no transformers equivalent" in err and refused in err
    assert not (tmp_path / "hf").exists()


@pytest.mark.parametrize("kv_cache", [False, True])
def test_onnx_export_of_the_modern_recipe_gives_our_logits(tmp_path, tiny_dataset, kv_cache, capsys):
    run = make_random_run(tmp_path, tiny_dataset, **MODERN)
    out = tmp_path / "model.onnx"
    export_onnx.main([str(run), "--out", str(out)] + (["--kv-cache"] if kv_cache else []))
    capsys.readouterr()
    model, cfg, _ = load_model(run, device="cpu")
    sess = export_onnx.session(out)
    g = torch.Generator().manual_seed(2)
    if not kv_cache:
        for shape in [(1, 1), (2, cfg.seq_len), (3, 7)]:
            idx = torch.randint(0, cfg.vocab_size, shape, generator=g)
            with torch.no_grad():
                expected = model(idx)[0].numpy()
            got = sess.run(["logits"], {"input_ids": idx.numpy()})[0]
            assert np.abs(got - expected).max() < export_onnx.FP32_TOLERANCE
        return
    ids = torch.randint(0, cfg.vocab_size, (2, 12), generator=g)
    cache = model.new_kv_cache(2, 12, dtype=torch.float32)
    past_k = past_v = export_onnx.empty_past(cfg, 2)
    start = 0
    with torch.no_grad():
        for end in [5] + list(range(6, 13)):  # a 5-token prompt, then one token at a time
            ref = model(ids[:, start:end], kv_cache=cache, start_pos=start)[0].numpy()
            logits, past_k, past_v = sess.run(None, {"input_ids": ids[:, start:end].numpy(), "past_keys": past_k,
                                                     "past_values": past_v})
            assert np.abs(logits - ref).max() < export_onnx.FP32_TOLERANCE
            start = end
    assert past_k.shape[3] == 12
