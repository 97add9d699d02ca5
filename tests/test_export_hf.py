"""tools/export_hf.py: the exported directory loads with transformers, gives our logits and our token ids."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import shards
import tokenizer as tk
from tests.conftest import HF_TOLERANCE, make_random_run
from train.checkpoint import load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from local directories
transformers = pytest.importorskip("transformers")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import export_hf  # noqa: E402

VARIANTS = {
    "gpt2": dict(),
    "gpt2-nobias": dict(bias=False),
    "llama-nobias": dict(rope=True, swiglu=True, rmsnorm=True, bias=False),
    "llama-bias": dict(rope=True, swiglu=True, rmsnorm=True, bias=True, rope_theta=500.0),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exported_model_gives_our_logits(tmp_path, tiny_dataset, variant):
    run = make_random_run(tmp_path, tiny_dataset, **VARIANTS[variant])
    out = tmp_path / "hf"
    export_hf.main([str(run), "--out", str(out)])

    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    expected = "LlamaForCausalLM" if variant.startswith("llama") else "GPT2LMHeadModel"
    assert type(hf).__name__ == expected
    assert hf.get_output_embeddings().weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    ours, cfg, _ = load_model(run, device="cpu")
    g = torch.Generator().manual_seed(1)
    for shape in [(1, 1), (3, 17), (2, cfg.seq_len)]:  # full context included: every position embedding / angle
        idx = torch.randint(0, cfg.vocab_size, shape, generator=g)
        with torch.no_grad():
            a, _ = ours(idx)
            b = hf(input_ids=idx).logits
        assert a.shape == b.shape
        assert a.abs().max() > 1.0  # the check compares logits that are not all near zero
        diff = (a - b).abs().max().item()
        assert diff < HF_TOLERANCE, f"{variant} {shape}: max abs logit diff {diff:.3g}"


def test_config_carries_our_hyperparameters(tmp_path, tiny_dataset):
    run = make_random_run(tmp_path, tiny_dataset)
    out = tmp_path / "hf"
    export_hf.main([str(run), "--out", str(out)])
    config = json.loads((out / "config.json").read_text())
    eot = shards.load_manifest(tiny_dataset)["eot_id"]
    assert config["architectures"] == ["GPT2LMHeadModel"]
    assert (config["n_positions"], config["n_layer"], config["n_embd"], config["n_head"]) == (32, 2, 64, 4)
    assert config["activation_function"] == "gelu_pytorch_tanh"  # F.gelu(approximate="tanh")
    assert config["layer_norm_epsilon"] == 1e-5 and config["tie_word_embeddings"] is True
    assert config["bos_token_id"] == config["eos_token_id"] == eot
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["eos_token_id"] == generation["bos_token_id"] == eot
    assert (out / "model.safetensors").exists() and (out / "special_tokens_map.json").exists()


def test_exported_tokenizer_encodes_as_ours(tmp_path, tiny_dataset):
    run = make_random_run(tmp_path, tiny_dataset)
    out = tmp_path / "hf"
    export_hf.main([str(run), "--out", str(out)])
    ours = tk.load(tiny_dataset / shards.TOKENIZER_NAME)
    auto = transformers.AutoTokenizer.from_pretrained(out)
    fast = transformers.PreTrainedTokenizerFast.from_pretrained(out)
    texts = ["The model reads tokens from shards.", "  two  spaces,\ttab\nnewline 12345",
             "unicode: naïve café Zürich 日本語 עברית", "emoji 😀👍🏽👨‍👩‍👧 🇯🇵", ""]
    for text in texts:
        expected = ours.encode(text).ids
        assert auto(text)["input_ids"] == expected, text
        assert fast.encode(text) == expected, text
        assert auto.decode(expected) == text
    eot = tk.EOT_TOKEN
    for t in (auto, fast):
        assert (t.eos_token, t.bos_token) == (eot, eot)
        assert t.eos_token_id == t.bos_token_id == tk.eot_id(ours)
        assert t.model_max_length == 32


def test_refuses_other_option_combinations(tmp_path, tiny_dataset, capsys):
    run = make_random_run(tmp_path, tiny_dataset, rope=True)
    with pytest.raises(SystemExit) as e:
        export_hf.main([str(run), "--out", str(tmp_path / "hf")])
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert "rope=true, swiglu=false, rmsnorm=false has no transformers equivalent" in err
    assert "GPT2LMHeadModel" in err and "LlamaForCausalLM" in err
    assert not (tmp_path / "hf").exists()


def test_missing_checkpoint_is_an_actionable_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_hf.main([str(tmp_path), "--out", str(tmp_path / "hf")])
    assert e.value.code == 1
    assert "has no complete checkpoint" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_an_actionable_error(tmp_path, tiny_dataset, capsys):
    run = make_random_run(tmp_path, tiny_dataset)
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(SystemExit) as e:
        export_hf.main([str(run), "--out", str(tmp_path / "model.bin")])
    assert e.value.code == 1
    assert capsys.readouterr().err == (f"error: --out {tmp_path / 'model.bin'} is a file; give a directory for the "
                                       f"exported model (new or empty)\n")
