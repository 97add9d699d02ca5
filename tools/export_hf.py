"""Export a trained model as a Hugging Face ``transformers`` model directory.

    python tools/export_hf.py runs/demo --out exports/demo-hf
    python tools/export_hf.py runs/demo/checkpoints/step_00000300 --out exports/demo-hf --which latest

The directory holds ``model.safetensors``, ``config.json``, ``generation_config.json`` and the
tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``), so
``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)`` load it
with no hub access, and lm-evaluation-harness takes it as ``--model hf --model_args pretrained=DIR``.

Which architecture, by the run's ``model`` config:

* default (learned positions, GELU MLP, LayerNorm)  -> ``GPT2LMHeadModel``. GPT-2 keeps its linear
  weights as ``Conv1D`` (in, out), so ours are transposed. Our MLP uses ``F.gelu(approximate="tanh")``,
  which is ``activation_function="gelu_pytorch_tanh"`` exactly ("gelu_new" is the same formula written
  out, and differs in the last bits). GPT-2 always has biases: a ``bias=false`` model gets zero biases,
  which compute the same function.
* ``rope`` + ``swiglu`` + ``rmsnorm``  -> ``LlamaForCausalLM``, tied embeddings (unless ``untied_head``).
  ``train/model.py`` rotates the pairs (x[:h/2], x[h/2:]), which is Llama's ``rotate_half``
  convention, so q and k rows are copied as they are. Our fused ``fc`` holds (gate, value): they become
  ``gate_proj`` and ``up_proj``. Biases, when the model has them, become ``attention_bias`` / ``mlp_bias``.
* ``rope`` + ``rmsnorm`` + ``qk_norm`` + ``embed_norm`` with a plain MLP (``relu2`` or GELU) and no
  biases, the modern recipe (``demo_modern``, ``75m_dolma_modern``) -> ``NanoChatForCausalLM``, with
  ``logit_softcap`` as its ``final_logit_softcapping``. NanoChat's norms have no weights: ours (before
  attention, before the MLP, and the final one) multiply the inputs of the layer they feed, so each
  is folded into that layer's columns (q/k/v, fc1, lm_head); the final one makes the exported
  ``lm_head`` a matrix of its own even when our head is tied. Its ``rotate_half`` is (x2, -x1),
  the rotation by -angle: the second half of every head's q and k rows is negated, which makes its
  rotated q and k ours with the second half negated, and leaves every q.k as it was. It normalizes
  q and k after RoPE, we before: without weights the norm commutes with the rotation.
* any other combination is refused, naming the options that no standard ``transformers`` class
  computes and why (``zero_init`` and ``untied_head`` export with any of the three).

After writing, the tool loads the directory back with ``transformers`` and compares its logits with
ours on random tokens (fp32, CPU); it fails when the largest difference exceeds ``--tolerance``.

The exported tokenizer encodes text as ours does; it does not add ``<|endoftext|>`` in front by itself.
Our models saw ``<|endoftext|>`` before every document, so give evaluation code a leading
``<|endoftext|>`` (lm-evaluation-harness: ``--model_args pretrained=DIR,add_bos_token=True``). As in
GPT-2, a literal "<|endoftext|>" in text is read as the special token by ``transformers``, whereas
``python -m preprocess`` encodes it as ordinary text.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import tokenizer as tk  # noqa: E402
from train.checkpoint import CheckpointError, find_checkpoint, load_model  # noqa: E402
from train.model import GPT, RMS_EPS, ModelConfig  # noqa: E402

CHECK_TOKENS = 64  # tokens per row of the logits check after export
DEFAULT_TOLERANCE = 1e-4  # max abs logit difference accepted in fp32


class ExportError(Exception):
    """A model or directory that cannot be exported; the message says why and what to do."""


# What each class computes, as (option, the value it needs, why); options not listed export either way.
# relu2 needs no entry for llama: swiglu=true excludes it.
REQUIREMENTS = {
    "gpt2": ("GPT2LMHeadModel", [
        ("rope", False, "GPT-2 learns absolute positions"), ("swiglu", False, "its MLP is GELU"),
        ("relu2", False, "its MLP is GELU"), ("rmsnorm", False, "its norms are LayerNorm"),
        ("qk_norm", False, "it does not normalize queries and keys"),
        ("embed_norm", False, "it does not normalize the embedding"),
        ("logit_softcap", 0.0, "its logits are not capped")]),
    "llama": ("LlamaForCausalLM", [
        ("rope", True, "Llama has no position embedding"), ("swiglu", True, "its MLP is SwiGLU"),
        ("rmsnorm", True, "its norms are RMSNorm"), ("qk_norm", False, "it does not normalize queries and keys"),
        ("embed_norm", False, "it does not normalize the embedding"),
        ("logit_softcap", 0.0, "its logits are not capped")]),
    "nanochat": ("NanoChatForCausalLM", [
        ("rope", True, "NanoChat has no position embedding"), ("rmsnorm", True, "its norms are RMSNorm"),
        ("qk_norm", True, "it always normalizes queries and keys"),
        ("embed_norm", True, "it always normalizes the embedding"), ("swiglu", False, "its MLP is not gated"),
        ("bias", False, "its layers have no biases")]),
}


def _shown(value) -> str:
    return str(value).lower() if isinstance(value, bool) else f"{value:g}"


def architecture(cfg: ModelConfig) -> str:
    """"gpt2", "llama" or "nanochat" for the exportable option combinations; ExportError names the
    options in the way of each class otherwise."""
    unmet = {arch: [(key, need, why) for key, need, why in reqs if getattr(cfg, key) != need]
             for arch, (_, reqs) in REQUIREMENTS.items()}
    for arch, missing in unmet.items():
        if not missing:
            return arch
    closest = sorted(unmet.items(), key=lambda kv: len(kv[1]))
    defaults = ModelConfig()
    keys = ["rope", "swiglu", "rmsnorm"] + [k for k in ("qk_norm", "relu2", "embed_norm", "logit_softcap", "bias")
                                             if getattr(cfg, k) != getattr(defaults, k)
                                             or k in [key for key, _, _ in closest[0][1]]]
    have = ", ".join(f"{k}={_shown(getattr(cfg, k))}" for k in keys)
    ways = "; ".join(f"{REQUIREMENTS[arch][0]} needs " + ", ".join(f"model.{k}={_shown(v)} ({why})"
                                                                   for k, v, why in missing)
                     for arch, missing in closest)
    raise ExportError(f"a model with {have} has no transformers equivalent; exportable are the default "
                      f"architecture (-> GPT2LMHeadModel), rope + swiglu + rmsnorm (-> LlamaForCausalLM) and the "
                      f"modern recipe's rope + rmsnorm + qk_norm + embed_norm with a plain MLP and no biases "
                      f"(-> NanoChatForCausalLM). For this model: {ways}")


def _require_transformers():
    try:
        import transformers
    except ImportError:
        raise ExportError("transformers is not installed; run `pip install -e '.[tools]'`") from None
    return transformers


# ---------------------------------------------------------------------------------------------------
# weights and configs

def gpt2_weights(model: GPT) -> dict[str, torch.Tensor]:
    """Our state as GPT2LMHeadModel's (lm_head.weight is transformer.wte.weight unless untied_head)."""
    cfg = model.cfg
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}

    def bias(key: str, n: int) -> torch.Tensor:
        # GPT-2 always adds biases; for a bias=False model zeros compute the same function
        return sd[key] if cfg.bias else torch.zeros(n)

    C = cfg.d_model
    out = {"transformer.wte.weight": sd["tok_emb.weight"], "transformer.wpe.weight": sd["pos_emb.weight"],
           "transformer.ln_f.weight": sd["norm.weight"], "transformer.ln_f.bias": bias("norm.bias", C)}
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        hidden = sd[ours + "mlp.fc.weight"].shape[0]
        out.update({
            theirs + "ln_1.weight": sd[ours + "norm1.weight"], theirs + "ln_1.bias": bias(ours + "norm1.bias", C),
            theirs + "ln_2.weight": sd[ours + "norm2.weight"], theirs + "ln_2.bias": bias(ours + "norm2.bias", C),
            # Conv1D keeps (in, out): nn.Linear's (out, in) transposed
            theirs + "attn.c_attn.weight": sd[ours + "attn.qkv.weight"].t(),
            theirs + "attn.c_attn.bias": bias(ours + "attn.qkv.bias", 3 * C),
            theirs + "attn.c_proj.weight": sd[ours + "attn.proj.weight"].t(),
            theirs + "attn.c_proj.bias": bias(ours + "attn.proj.bias", C),
            theirs + "mlp.c_fc.weight": sd[ours + "mlp.fc.weight"].t(),
            theirs + "mlp.c_fc.bias": bias(ours + "mlp.fc.bias", hidden),
            theirs + "mlp.c_proj.weight": sd[ours + "mlp.proj.weight"].t(),
            theirs + "mlp.c_proj.bias": bias(ours + "mlp.proj.bias", C),
        })
    out["lm_head.weight"] = sd.get("lm_head.weight", out["transformer.wte.weight"])
    return {k: v.contiguous() for k, v in out.items()}


def gpt2_config(model: GPT, eot_id: int):
    from transformers import GPT2Config

    cfg = model.cfg
    return GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.seq_len, n_embd=cfg.d_model, n_layer=cfg.n_layers,
        n_head=cfg.n_heads, n_inner=model.blocks[0].mlp.proj.in_features,
        activation_function="gelu_pytorch_tanh",  # F.gelu(approximate="tanh"), bit for bit
        layer_norm_epsilon=model.norm.eps, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout,
        attn_pdrop=cfg.dropout, bos_token_id=eot_id, eos_token_id=eot_id, tie_word_embeddings=not cfg.untied_head,
        architectures=["GPT2LMHeadModel"], dtype="float32")


def llama_weights(model: GPT) -> dict[str, torch.Tensor]:
    """Our state as LlamaForCausalLM's (lm_head.weight is model.embed_tokens.weight unless untied_head)."""
    cfg = model.cfg
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    C = cfg.d_model
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "model.norm.weight": sd["norm.weight"]}
    suffixes = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        out[theirs + "input_layernorm.weight"] = sd[ours + "norm1.weight"]
        out[theirs + "post_attention_layernorm.weight"] = sd[ours + "norm2.weight"]
        for s in suffixes:
            # qkv rows are (q, k, v), each (n_heads * head_dim) with heads contiguous, as Llama lays them out;
            # both rotate the halves (x[:h/2], x[h/2:]), so no row permutation is needed
            q, k, v = sd[f"{ours}attn.qkv.{s}"].split(C, dim=0)
            gate, up = sd[f"{ours}mlp.fc.{s}"].chunk(2, dim=0)  # F.silu(gate) * value
            out.update({
                f"{theirs}self_attn.q_proj.{s}": q, f"{theirs}self_attn.k_proj.{s}": k,
                f"{theirs}self_attn.v_proj.{s}": v, f"{theirs}self_attn.o_proj.{s}": sd[f"{ours}attn.proj.{s}"],
                f"{theirs}mlp.gate_proj.{s}": gate, f"{theirs}mlp.up_proj.{s}": up,
                f"{theirs}mlp.down_proj.{s}": sd[f"{ours}mlp.proj.{s}"],
            })
    out["lm_head.weight"] = sd.get("lm_head.weight", out["model.embed_tokens.weight"])
    return {k: v.contiguous() for k, v in out.items()}


def llama_config(model: GPT, eot_id: int):
    from transformers import LlamaConfig

    cfg = model.cfg
    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=model.blocks[0].mlp.proj.in_features,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        head_dim=cfg.d_model // cfg.n_heads, hidden_act="silu", max_position_embeddings=cfg.seq_len,
        rms_norm_eps=model.norm.eps, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=cfg.bias, mlp_bias=cfg.bias, attention_dropout=cfg.dropout,
        tie_word_embeddings=not cfg.untied_head, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=None,
        architectures=["LlamaForCausalLM"], dtype="float32")


def nanochat_weights(model: GPT) -> dict[str, torch.Tensor]:
    """Our state as NanoChatForCausalLM's: norm weights folded into the layers they feed, the second half
    of each head's q and k rows negated (its rotation convention), lm_head always a matrix of its own."""
    cfg = model.cfg
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    C, hd = cfg.d_model, cfg.d_model // cfg.n_heads
    # +1 for the first half of each head's rows, -1 for the second: (C, 1), multiplies q and k rows
    flip = torch.tensor([1.0] * (hd // 2) + [-1.0] * (hd // 2)).repeat(cfg.n_heads)[:, None]
    head = sd["lm_head.weight"] if cfg.untied_head else sd["tok_emb.weight"]
    out = {"model.embed_tokens.weight": sd["tok_emb.weight"], "lm_head.weight": head * sd["norm.weight"][None, :]}
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        # norm(x) * w feeds W: W @ (norm(x) * w) = (W * w[None, :]) @ norm(x)
        q, k, v = (sd[ours + "attn.qkv.weight"] * sd[ours + "norm1.weight"][None, :]).split(C, dim=0)
        out.update({
            theirs + "self_attn.q_proj.weight": q * flip, theirs + "self_attn.k_proj.weight": k * flip,
            theirs + "self_attn.v_proj.weight": v, theirs + "self_attn.o_proj.weight": sd[ours + "attn.proj.weight"],
            theirs + "mlp.fc1.weight": sd[ours + "mlp.fc.weight"] * sd[ours + "norm2.weight"][None, :],
            theirs + "mlp.fc2.weight": sd[ours + "mlp.proj.weight"],
        })
    return {k: v.contiguous() for k, v in out.items()}


def nanochat_config(model: GPT, eot_id: int):
    from transformers import NanoChatConfig

    cfg = model.cfg
    return NanoChatConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=model.blocks[0].mlp.proj.in_features,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_heads,
        head_dim=cfg.d_model // cfg.n_heads, max_position_embeddings=cfg.seq_len,
        hidden_act="relu2" if cfg.relu2 else "gelu_pytorch_tanh",  # relu(x)^2; F.gelu(approximate="tanh")
        rms_norm_eps=RMS_EPS, rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
        attention_bias=False, attention_dropout=cfg.dropout,
        final_logit_softcapping=cfg.logit_softcap if cfg.logit_softcap > 0 else None,
        tie_word_embeddings=False, bos_token_id=eot_id, eos_token_id=eot_id, pad_token_id=None,
        architectures=["NanoChatForCausalLM"], dtype="float32")


def to_transformers(model: GPT, eot_id: int):
    """A transformers model (fp32, eval mode) computing the same logits as ``model``."""
    transformers = _require_transformers()

    arch = architecture(model.cfg)
    name = REQUIREMENTS[arch][0]
    config, weights = {"gpt2": (gpt2_config, gpt2_weights), "llama": (llama_config, llama_weights),
                       "nanochat": (nanochat_config, nanochat_weights)}[arch]
    cls = getattr(transformers, name)
    hf = cls(config(model, eot_id))
    missing, unexpected = hf.load_state_dict(weights(model), strict=False)
    if hf.config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]  # tied: shares embed's storage
    if missing or unexpected:
        raise ExportError(f"internal error: weight names do not match {cls.__name__}: missing {missing}, "
                          f"unexpected {unexpected}; train/model.py may have changed its parameter names")
    hf.tie_weights()
    return hf.float().eval()


# ---------------------------------------------------------------------------------------------------
# tokenizer

def write_tokenizer(tokenizer_path: Path, out: Path, seq_len: int) -> list[str]:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, eos = bos = unk = <|endoftext|>."""
    from transformers import PreTrainedTokenizerFast

    tk.load(tokenizer_path)  # fails with an actionable message when the file lacks the separator
    eot = tk.EOT_TOKEN
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path), bos_token=eot, eos_token=eot,
                                     unk_token=eot, model_max_length=seq_len, clean_up_tokenization_spaces=False)
    written = [Path(p).name for p in hf_tok.save_pretrained(str(out))]
    special_map = out / "special_tokens_map.json"
    if not special_map.exists():  # transformers 5 folds it into tokenizer_config.json; older readers want it
        special_map.write_text(json.dumps({"bos_token": eot, "eos_token": eot, "unk_token": eot}, indent=2) + "\n",
                               encoding="utf-8")
        written.append(special_map.name)
    return sorted(set(written))


# ---------------------------------------------------------------------------------------------------
# export and check

@torch.no_grad()
def max_logit_diff(model: GPT, hf_model, batch: int = 2, tokens: int = CHECK_TOKENS, seed: int = 0) -> float:
    """Largest |ours - transformers| over the logits of ``batch`` rows of random tokens (fp32, CPU)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab_size, (batch, min(tokens, cfg.seq_len)), generator=g)
    ours, _ = model(idx)
    theirs = hf_model(input_ids=idx).logits
    return (ours.float() - theirs.float()).abs().max().item()


def export(path: str | Path, out: str | Path, which: str = "best", tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Write the transformers directory for a run or checkpoint directory; returns what was done."""
    transformers = _require_transformers()
    transformers.utils.logging.disable_progress_bar()  # one line per step below says what happened
    out = Path(out)
    try:
        ckpt = find_checkpoint(path, which)
        model, cfg, tokenizer_path = load_model(ckpt, device="cpu")
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    model = model.float().eval()
    architecture(cfg)  # refuses, before anything is written, a model neither layout can hold
    eot_id = tk.eot_id(tk.load(tokenizer_path), source=tokenizer_path)
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").exists():
            raise ExportError(f"{out} exists and is not an exported model directory; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)

    hf = to_transformers(model, eot_id)
    hf.generation_config = transformers.GenerationConfig(bos_token_id=eot_id, eos_token_id=eot_id,
                                                         pad_token_id=eot_id)
    hf.save_pretrained(str(out))
    files = write_tokenizer(tokenizer_path, out, cfg.seq_len)

    reloaded = getattr(transformers, hf.__class__.__name__).from_pretrained(str(out), dtype=torch.float32).eval()
    diff = max_logit_diff(model, reloaded)
    if not diff < tolerance:
        raise ExportError(f"the exported model's logits differ from ours by up to {diff:.3g} (tolerance "
                          f"{tolerance:g}); the export is wrong, please report it with the run's config.json")
    return {"checkpoint": str(ckpt), "out": str(out), "architecture": hf.__class__.__name__,
            "files": sorted(p.name for p in out.iterdir()), "tokenizer_files": files,
            "max_abs_logit_diff": diff, "check_shape": [2, min(CHECK_TOKENS, cfg.seq_len)]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tools/export_hf.py", description=__doc__.split("\n\n")[0],
        epilog="Load it: AutoModelForCausalLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR).\n"
               "Evaluate: lm_eval --model hf --model_args pretrained=DIR,add_bos_token=True --tasks hellaswag",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or one of its checkpoints/step_* dirs")
    p.add_argument("--out", required=True, help="directory to write (created; an earlier export there is replaced)")
    p.add_argument("--which", choices=("best", "latest"), default="best",
                   help="the run's checkpoint to export (default: best, i.e. lowest val loss, else latest)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"max abs logit difference allowed in the check after export (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        summary = export(args.run, args.out, args.which, args.tolerance)
    except (ExportError, tk.TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"exported {summary['checkpoint']}")
    print(f"      as {summary['architecture']} -> {summary['out']}")
    print(f"   files {', '.join(summary['files'])}")
    b, t = summary["check_shape"]
    print(f"   check max |logit difference| vs ours = {summary['max_abs_logit_diff']:.2e} "
          f"on {b}x{t} random tokens (fp32, tolerance {args.tolerance:g})")


if __name__ == "__main__":
    main()
