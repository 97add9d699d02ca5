"""train/init_from.py and the inverse half of train/hf.py: the weights a run starts from with --init-from.

From a run or checkpoint directory: the saved weights, bit for bit. From a transformers directory (our
own export, or a stock GPT-2, Llama or NanoChat made here with transformers and random weights): our
model's logits equal the source model's. Configs our GPT cannot compute, other tokenizers and other
model shapes are refused naming what differs."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import shards
import tokenizer as tk
from tests.conftest import HF_TOLERANCE, load_tool, make_random_run, sample_texts, save_checkpoint
from train.checkpoint import CheckpointError, load_model
from train.config import Config
from train.hf import ConversionError
from train.init_from import InitFromError, load_init_weights, model_mismatches
from train.model import GPT, ModelConfig

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything loads from local directories
transformers = pytest.importorskip("transformers")

export_hf = load_tool("export_hf")

SHAPES = [(1, 1), (3, 17), (2, 32)]  # the last one is the whole context: every position embedding / angle


def logits_of(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0]


def assert_same_logits(ours: GPT, reference, vocab_size: int, what: str) -> None:
    """``ours`` and ``reference`` (a GPT, or a transformers model) give the same logits on random ids."""
    g = torch.Generator().manual_seed(1)
    for shape in SHAPES:
        idx = torch.randint(0, vocab_size, shape, generator=g)
        a = logits_of(ours, idx)
        with torch.no_grad():
            b = reference(idx)[0] if isinstance(reference, GPT) else reference(input_ids=idx).logits
        assert a.shape == b.shape and a.abs().max() > 1.0  # logits that are not all near zero
        diff = (a - b).abs().max().item()
        assert diff < HF_TOLERANCE, f"{what} {shape}: max abs logit diff {diff:.3g}"


def model_of(init) -> GPT:
    model = GPT(init.model_config)
    model.load_state_dict(init.state_dict)  # strict: every name and shape
    return model.eval()


# ---------------------------------------------------------------------------------------------------
# our runs and checkpoints

def test_run_and_checkpoint_directories_give_the_saved_weights(tmp_path, tiny_dataset):
    run = make_random_run(tmp_path, tiny_dataset, rope=True, rmsnorm=True, qk_norm=True, untied_head=True)
    saved, cfg, _ = load_model(run)
    manifest = shards.load_manifest(tiny_dataset)
    ckpt = run / "checkpoints" / "step_00000001"
    for path in (run, ckpt):
        init = load_init_weights(path)
        assert init.model_config == cfg
        assert init.state_dict.keys() == saved.state_dict().keys()
        assert all(torch.equal(v, saved.state_dict()[k]) for k, v in init.state_dict.items())
        assert init.tokenizer_sha256 == manifest["tokenizer_sha256"]
        assert init.tokenizer_path == run / shards.TOKENIZER_NAME
        d = init.description
        assert (d["kind"], d["checkpoint"], d["step"]) == ("checkpoint", str(ckpt.resolve()), 1)
        assert d["path"] == str(path.resolve()) and d["tokenizer_sha256"] == manifest["tokenizer_sha256"]
        assert d["weights_sha256"] == {"model.safetensors": shards.sha256_file(ckpt / "model.safetensors")}
        json.dumps(d)  # a record the run can write as it is
        init.check_dataset(tiny_dataset, manifest)
        init.check_model(cfg)


def test_a_run_directory_gives_its_best_checkpoint_unless_latest_is_asked_for(tmp_path, tiny_dataset):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_dataset / shards.TOKENIZER_NAME, run / shards.TOKENIZER_NAME)
    cfg = Config(model=ModelConfig(vocab_size=300, seq_len=16, n_layers=1, d_model=16, n_heads=2))
    weights = {}
    for step, best in ((1, True), (2, False)):  # step 2 is the latest, its val loss was no better
        torch.manual_seed(step)
        model = GPT(cfg.model)
        weights[step] = model.state_dict()["tok_emb.weight"].clone()
        save_checkpoint(run, step, model, cfg.to_dict(), torch.optim.SGD(model.parameters(), lr=0.1), best=best,
                        keep=5)
    assert torch.equal(load_init_weights(run).state_dict["tok_emb.weight"], weights[1])
    latest = load_init_weights(run, which="latest")
    assert torch.equal(latest.state_dict["tok_emb.weight"], weights[2]) and latest.description["step"] == 2


def test_a_checkpoint_is_verified_and_its_tokenizer_checked_against_its_record(tmp_path, tiny_dataset):
    run = make_random_run(tmp_path, tiny_dataset)
    ckpt = run / "checkpoints" / "step_00000001"
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors does not match the sha256 recorded"):
        load_init_weights(run)

    # a checkpoint that records the tokenizer it was trained with, beside a run tokenizer.json changed since
    other = tmp_path / "other"
    other.mkdir()
    model = GPT(ModelConfig(vocab_size=300, seq_len=16, n_layers=1, d_model=16, n_heads=2))
    save_checkpoint(other, 1, model, Config(model=model.cfg).to_dict(), torch.optim.SGD(model.parameters(), lr=0.1),
                    best=False, fingerprints={"tokenizer_fingerprint": "0" * 64})
    shutil.copy(tiny_dataset / shards.TOKENIZER_NAME, other / shards.TOKENIZER_NAME)
    with pytest.raises(InitFromError, match="was trained with tokenizer 0000000000000000…"):
        load_init_weights(other)
    # the checkpoint alone, away from its run: the recorded fingerprint is what is known
    alone = shutil.copytree(other / "checkpoints" / "step_00000001", tmp_path / "alone")
    init = load_init_weights(alone)
    assert init.tokenizer_sha256 == "0" * 64 and init.tokenizer_path is None
    with pytest.raises(InitFromError, match=f"trained with tokenizer 0000000000000000…, but {tiny_dataset} was "
                                            f"encoded with tokenizer"):
        init.check_dataset(tiny_dataset, shards.load_manifest(tiny_dataset))


def test_paths_that_hold_no_weights_are_named(tmp_path):
    with pytest.raises(InitFromError, match="does not exist"):
        load_init_weights(tmp_path / "nowhere")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InitFromError, match="is a file"):
        load_init_weights(tmp_path / "notes.txt")
    with pytest.raises(InitFromError, match="is neither a run directory"):
        load_init_weights(tmp_path)


def test_a_model_config_that_does_not_fit_the_weights_is_named(tmp_path, tiny_dataset):
    init = load_init_weights(make_random_run(tmp_path, tiny_dataset))
    other = ModelConfig(**{**vars(init.model_config), "n_layers": 3, "dropout": 0.1, "grad_checkpointing": True})
    with pytest.raises(InitFromError) as e:
        init.check_model(other)
    assert "model.n_layers is 2 there, 3 here" in str(e.value) and "dropout" not in str(e.value)
    # seq_len: a shape with learned positions, no weight's with RoPE
    longer = ModelConfig(**{**vars(init.model_config), "seq_len": 64})
    assert model_mismatches(init.model_config, longer) == [("seq_len", 32, 64)]
    rope = ModelConfig(**{**vars(init.model_config), "rope": True})
    assert model_mismatches(rope, ModelConfig(**{**vars(rope), "seq_len": 64})) == []


# ---------------------------------------------------------------------------------------------------
# our own export, read back

EXPORTED = {
    "gpt2": dict(),
    "gpt2-nobias": dict(bias=False),
    "llama-bias-untied": dict(rope=True, swiglu=True, rmsnorm=True, bias=True, rope_theta=500.0, untied_head=True),
    "modern": dict(rope=True, rmsnorm=True, qk_norm=True, relu2=True, embed_norm=True, untied_head=True,
                   logit_softcap=15.0, bias=False),
    "modern-tied-gelu": dict(rope=True, rmsnorm=True, qk_norm=True, embed_norm=True, bias=False),
}


@pytest.mark.parametrize("variant", sorted(EXPORTED))
def test_our_export_reads_back_as_the_same_model(tmp_path, tiny_dataset, variant, capsys):
    run = make_random_run(tmp_path, tiny_dataset, **EXPORTED[variant])
    export_hf.main([str(run), "--out", str(tmp_path / "hf")])
    capsys.readouterr()
    source, cfg, _ = load_model(run)
    init = load_init_weights(tmp_path / "hf")

    assert model_mismatches(cfg, init.model_config) == []  # the same shape: biases and tied heads recovered
    assert_same_logits(model_of(init), source, cfg.vocab_size, variant)
    manifest = shards.load_manifest(tiny_dataset)
    assert init.tokenizer_sha256 == manifest["tokenizer_sha256"]
    init.check_dataset(tiny_dataset, manifest)
    d = init.description
    assert d["kind"] == "transformers" and d["max_abs_logit_diff"] < HF_TOLERANCE
    assert set(d["weights_sha256"]) == {"model.safetensors"}
    if not variant.startswith("modern"):
        # GPT-2 and Llama hold our weights as they are (transposed, split): they come back bit for bit
        saved = source.state_dict()
        assert all(torch.equal(v, saved[k]) for k, v in init.state_dict.items())
    if variant == "gpt2-nobias":
        assert "every bias is exactly zero" in " ".join(d["notes"])
    if variant == "modern-tied-gelu":
        assert "read as a tied head" in " ".join(d["notes"])


# ---------------------------------------------------------------------------------------------------
# stock transformers checkpoints, made here with random weights

def randomize(model, seed: int = 0):
    """Every parameter drawn at random (norm weights around 1), so that a swapped, untransposed or
    dropped tensor shows in the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.1
            p.copy_(noise + 1.0 if p.dim() == 1 and not name.endswith("bias") else noise)
    return model.eval()


def stock(directory: Path, config, dataset: Path | None, seed: int = 0, random_weights: bool = True):
    """A transformers model of ``config`` saved to ``directory`` (with ``dataset``'s tokenizer.json when given)."""
    model = transformers.AutoModelForCausalLM.from_config(config)
    if random_weights:
        randomize(model, seed)
    model.eval().save_pretrained(str(directory))
    if dataset is not None:
        shutil.copy(dataset / shards.TOKENIZER_NAME, directory / shards.TOKENIZER_NAME)
    return model


def gpt2_config(vocab_size: int, **kw):
    return transformers.GPT2Config(**{"vocab_size": vocab_size, "n_positions": 32, "n_embd": 64, "n_layer": 2,
                                      "n_head": 4, **kw})


def llama_config(vocab_size: int, **kw):
    return transformers.LlamaConfig(**{
        "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 192, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 32, "rms_norm_eps": 1e-6, **kw})


def nanochat_config(vocab_size: int, **kw):
    return transformers.NanoChatConfig(**{
        "vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2,
        "num_attention_heads": 4, "max_position_embeddings": 32, **kw})


STOCK = {
    "gpt2": (gpt2_config, dict(), dict(bias=True, untied_head=False, dropout=0.1)),
    "gpt2-untied-gelu_pytorch_tanh": (gpt2_config, dict(tie_word_embeddings=False,
                                                        activation_function="gelu_pytorch_tanh"),
                                      dict(untied_head=True)),
    "llama": (llama_config, dict(tie_word_embeddings=True),
              dict(rope=True, swiglu=True, rmsnorm=True, bias=False, untied_head=False)),
    "llama-untied-bias-theta": (llama_config, dict(attention_bias=True, mlp_bias=True,
                                                   rope_parameters={"rope_type": "default", "rope_theta": 500.0}),
                                dict(bias=True, untied_head=True, rope_theta=500.0)),
    "nanochat": (nanochat_config, dict(),
                 dict(qk_norm=True, embed_norm=True, relu2=True, untied_head=True, logit_softcap=15.0)),
    "nanochat-tied-gelu-nocap": (nanochat_config, dict(tie_word_embeddings=True, hidden_act="gelu_pytorch_tanh",
                                                       final_logit_softcapping=None),
                                 dict(relu2=False, untied_head=False, logit_softcap=0.0)),
}


@pytest.mark.parametrize("variant", sorted(STOCK))
def test_a_stock_transformers_checkpoint_gives_its_logits(tmp_path, tiny_dataset, variant):
    make_config, options, expected = STOCK[variant]
    manifest = shards.load_manifest(tiny_dataset)
    hf_model = stock(tmp_path / "hf", make_config(manifest["vocab_size"], **options), tiny_dataset)

    init = load_init_weights(tmp_path / "hf")
    assert {k: getattr(init.model_config, k) for k in expected} == expected
    assert (init.model_config.seq_len, init.model_config.n_layers, init.model_config.d_model) == (32, 2, 64)
    assert_same_logits(model_of(init), hf_model, manifest["vocab_size"], variant)
    assert init.description["architecture"] == type(hf_model).__name__
    init.check_dataset(tiny_dataset, manifest)


def test_a_stock_gpt2_with_zero_biases_reads_as_a_model_without_biases(tmp_path, tiny_dataset):
    manifest = shards.load_manifest(tiny_dataset)
    hf_model = stock(tmp_path / "hf", gpt2_config(manifest["vocab_size"]), tiny_dataset)
    with torch.no_grad():
        for name, p in hf_model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    hf_model.save_pretrained(str(tmp_path / "hf"))
    init = load_init_weights(tmp_path / "hf")
    assert init.model_config.bias is False and not any(k.endswith(".bias") for k in init.state_dict)
    assert_same_logits(model_of(init), hf_model, manifest["vocab_size"], "zero biases")


@pytest.mark.parametrize("make_config, options, named", [
    (llama_config, dict(num_key_value_heads=2), "num_key_value_heads=2 (grouped-query attention"),
    (llama_config, dict(rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}),
     "rope_parameters.rope_type='linear' (ours rotates by the plain angles"),
    (llama_config, dict(hidden_act="gelu"), "hidden_act='gelu' (our SwiGLU MLP gates with SiLU)"),
    (llama_config, dict(intermediate_size=200), "intermediate_size=200 (our SwiGLU MLP is 8/3 * hidden_size "
                                                "rounded up to a multiple of 64 = 192 wide)"),
    (llama_config, dict(rms_norm_eps=1e-5), "rms_norm_eps=1e-05 (our RMSNorm's epsilon is 1e-06)"),
    (llama_config, dict(attention_bias=True), "mlp_bias=False (our model.bias gives biases to attention and MLP "
                                              "alike; attention_bias is True)"),
    (gpt2_config, dict(activation_function="relu"), "activation_function='relu' (our GELU MLP is the tanh "
                                                    "approximation"),
    (gpt2_config, dict(n_inner=100), "n_inner=100 (our GELU MLP is 4 * n_embd = 256 wide)"),
    (gpt2_config, dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx=True"),
    (nanochat_config, dict(attention_bias=True), "attention_bias=True (the modern recipe's layers have no biases)"),
    (nanochat_config, dict(intermediate_size=192), "intermediate_size=192 (our plain MLP is 4 * hidden_size"),
])
def test_a_config_our_model_cannot_compute_is_refused_naming_the_option(tmp_path, tiny_dataset, make_config,
                                                                        options, named):
    """Refused from config.json alone, before any weight is read (the directory holds none)."""
    config = make_config(shards.load_manifest(tiny_dataset)["vocab_size"], **options)
    config.architectures = [transformers.AutoModelForCausalLM.from_config(config).__class__.__name__]
    config.save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(ConversionError) as e:
        load_init_weights(tmp_path / "hf")
    message = str(e.value)
    assert message.startswith(f"--init-from {tmp_path / 'hf'}: this {config.architectures[0]} cannot be computed")
    assert named in message


def test_several_unsupported_options_are_named_in_one_message(tmp_path, tiny_dataset):
    config = llama_config(300, num_key_value_heads=1, rms_norm_eps=1e-5, hidden_act="gelu")
    config.save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(ConversionError) as e:
        load_init_weights(tmp_path / "hf")
    assert all(k in str(e.value) for k in ("num_key_value_heads=1", "rms_norm_eps=1e-05", "hidden_act='gelu'"))


def test_a_class_we_do_not_read_is_refused_naming_those_we_do(tmp_path):
    transformers.MistralConfig(hidden_size=64, num_attention_heads=4).save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(ConversionError, match="says model_type 'mistral'; our GPT reads GPT2LMHeadModel"):
        load_init_weights(tmp_path / "hf")


def test_a_transformers_directory_without_its_weights_is_named(tmp_path):
    gpt2_config(300).save_pretrained(str(tmp_path / "hf"))
    with pytest.raises(InitFromError, match=f"transformers cannot read the weights of {tmp_path / 'hf'}"):
        load_init_weights(tmp_path / "hf")


# ---------------------------------------------------------------------------------------------------
# tokenizers and vocabularies

def test_the_tokenizer_must_be_the_datasets(tmp_path, tiny_dataset):
    manifest = shards.load_manifest(tiny_dataset)
    vocab = manifest["vocab_size"]

    stock(tmp_path / "none", gpt2_config(vocab), None)
    (tmp_path / "none" / "vocab.json").write_text("{}")
    init = load_init_weights(tmp_path / "none")
    assert init.tokenizer_sha256 is None and init.tokenizer_path is None
    with pytest.raises(InitFromError) as e:
        init.check_dataset(tiny_dataset, manifest)
    assert (f"cannot check that --init-from {(tmp_path / 'none').resolve()} was trained with the tokenizer of "
            f"{tiny_dataset}" in str(e.value))
    assert f"{tmp_path / 'none'} has no tokenizer.json (only vocab.json)" in str(e.value)

    other = tk.train_bpe(sample_texts(200, seed=5), vocab_size=280)
    stock(tmp_path / "other", gpt2_config(vocab), None)
    sha = tk.save(other, tmp_path / "other" / shards.TOKENIZER_NAME)
    init = load_init_weights(tmp_path / "other")
    assert init.tokenizer_sha256 == sha
    with pytest.raises(InitFromError) as e:
        init.check_dataset(tiny_dataset, manifest)
    message = str(e.value)
    assert f"was trained with tokenizer {sha[:16]}… ({tmp_path / 'other' / 'tokenizer.json'})" in message
    assert f"encoded with tokenizer {manifest['tokenizer_sha256'][:16]}… ({tiny_dataset / 'tokenizer.json'})" in message
    assert f"280 tokens against {vocab}; they differ in model.merges, model.vocab" in message


def test_a_padded_vocabulary_is_refused_even_with_the_same_tokenizer(tmp_path, tiny_dataset):
    manifest = shards.load_manifest(tiny_dataset)
    stock(tmp_path / "hf", gpt2_config(manifest["vocab_size"] + 4), tiny_dataset)
    init = load_init_weights(tmp_path / "hf")
    with pytest.raises(InitFromError, match=f"has {manifest['vocab_size'] + 4:,} token embeddings"):
        init.check_dataset(tiny_dataset, manifest)
