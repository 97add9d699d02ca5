"""Our GPT (``train/model.py``) and the ``transformers`` classes that compute the same function, both ways.

``tools/export_hf.py`` writes a run as one of these classes (``to_transformers``); ``python -m train
--init-from`` reads one back (``from_transformers``, through ``train/init_from.py``). Each class has its
pair of functions side by side: ``X_config`` / ``X_weights`` (ours -> theirs) and ``config_from_X`` /
``weights_from_X`` (theirs -> ours). Both directions check themselves the same way: the two models'
logits on random tokens (fp32, CPU) must agree to within ``DEFAULT_TOLERANCE``.

Which class, by our ``model`` config:

* default (learned positions, GELU MLP, LayerNorm)  <-> ``GPT2LMHeadModel``. GPT-2 keeps its linear
  weights as ``Conv1D`` (in, out), so ours are transposed. Our MLP uses ``F.gelu(approximate="tanh")``,
  which is ``activation_function="gelu_pytorch_tanh"`` exactly ("gelu_new", stock GPT-2's, is the same
  formula written out, and differs in the last bits). GPT-2 always has biases: a ``bias=false`` model
  gets zero biases, which compute the same function; reading back, a model whose biases are all exactly
  zero becomes ``bias=false``.
* ``rope`` + ``swiglu`` + ``rmsnorm``  <-> ``LlamaForCausalLM``, tied embeddings (unless ``untied_head``).
  ``train/model.py`` rotates the pairs (x[:h/2], x[h/2:]), which is Llama's ``rotate_half``
  convention, so q and k rows are copied as they are. Our fused ``fc`` holds (gate, value): they become
  ``gate_proj`` and ``up_proj``. Biases, when the model has them, become ``attention_bias`` / ``mlp_bias``.
* ``rope`` + ``rmsnorm`` + ``qk_norm`` + ``embed_norm`` with a plain MLP (``relu2`` or GELU) and no
  biases, the modern recipe (``demo_modern``, ``75m_dolma_modern``) <-> ``NanoChatForCausalLM``, with
  ``logit_softcap`` as its ``final_logit_softcapping``. NanoChat's norms have no weights: ours (before
  attention, before the MLP, and the final one) multiply the inputs of the layer they feed, so each
  is folded into that layer's columns (q/k/v, fc1, lm_head); the final one makes the exported
  ``lm_head`` a matrix of its own even when our head is tied. Its ``rotate_half`` is (x2, -x1),
  the rotation by -angle: the second half of every head's q and k rows is negated, which makes its
  rotated q and k ours with the second half negated, and leaves every q.k as it was. It normalizes
  q and k after RoPE, we before: without weights the norm commutes with the rotation. Reading back,
  the folded norms cannot be told apart from the matrices: our norm weights start at 1 and the
  matrices carry them (the same function); an ``lm_head`` that is the embedding scaled per column
  (what a tied head exports as) becomes a tied head again, with the scale as the final norm's weight.
* any other combination is refused, naming the options that no standard ``transformers`` class
  computes and why (``zero_init`` and ``untied_head`` export with any of the three); reading back, a
  config our GPT cannot compute (grouped-query attention, a RoPE scaling, another activation, MLP
  width or norm epsilon...) is refused naming each such option and why.
"""
from __future__ import annotations

import math

import torch

import shards
from train.model import GPT, RMS_EPS, ModelConfig

CHECK_TOKENS = 64  # tokens per row of the logits check after a conversion
DEFAULT_TOLERANCE = 1e-4  # max abs logit difference accepted in fp32
LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default, which train/model.py uses
GELU_TANH = ("gelu_pytorch_tanh", "gelu_new")  # F.gelu(approximate="tanh"), exactly and written out
StateDict = dict[str, torch.Tensor]
CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "nanochat": "NanoChatForCausalLM"}


class ConversionError(shards.PipelineError):
    """A model that has no counterpart on the other side (ours or transformers'); the message says why."""


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
    """"gpt2", "llama" or "nanochat" for the exportable option combinations; ConversionError names the
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
    raise ConversionError(f"a model with {have} has no transformers equivalent; exportable are the default "
                          f"architecture (-> GPT2LMHeadModel), rope + swiglu + rmsnorm (-> LlamaForCausalLM) and "
                          f"the modern recipe's rope + rmsnorm + qk_norm + embed_norm with a plain MLP and no "
                          f"biases (-> NanoChatForCausalLM). For this model: {ways}")


def require_transformers():
    try:
        import transformers
    except ImportError:
        raise ConversionError("transformers is not installed; run `pip install -e '.[tools]'`") from None
    return transformers


def swiglu_hidden(d_model: int) -> int:
    """The width of our SwiGLU MLP (train/model.py's MLP): 8/3 * d_model rounded up to a multiple of 64."""
    return 64 * math.ceil(8 * d_model / 3 / 64)


class _Unsupported:
    """Options of a transformers config our GPT cannot compute, gathered so one message names them all."""

    def __init__(self, config, name: str):
        self.config, self.name, self.problems = config, name, []

    def need(self, ok: bool, option: str, why: str) -> None:
        if not ok:
            value = getattr(self.config, option.split(".")[0], None)
            if "." in option and isinstance(value, dict):
                value = value.get(option.split(".", 1)[1])
            self.problems.append(f"{option}={value!r} ({why})")

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConversionError(f"this {self.name} cannot be computed by our GPT (train/model.py): "
                                  f"{'; '.join(self.problems)}. Start from a model without these options")


def _rope_theta(config, check: _Unsupported) -> float:
    """The RoPE base of a Llama or NanoChat config; only plain RoPE (rope_type "default") is ours."""
    rope = dict(getattr(config, "rope_parameters", None) or {})
    check.need(rope.get("rope_type", "default") == "default", "rope_parameters.rope_type",
               "ours rotates by the plain angles of each position, with no scaling")
    check.need(rope.get("partial_rotary_factor", 1.0) == 1.0, "rope_parameters.partial_rotary_factor",
               "ours rotates every dimension of each head")
    return float(rope.get("rope_theta", 10000.0))


def _heads(config, check: _Unsupported) -> None:
    """Llama and NanoChat heads: ours are n_heads of d_model / n_heads, each with its own keys and values."""
    heads = config.num_attention_heads
    check.need(config.num_key_value_heads in (None, heads), "num_key_value_heads",
               f"grouped-query attention; ours gives each of the {heads} heads its own keys and values")
    check.need(getattr(config, "head_dim", None) in (None, config.hidden_size // heads), "head_dim",
               f"ours is hidden_size / num_attention_heads = {config.hidden_size // heads}")


def _validated(cfg: ModelConfig, name: str) -> ModelConfig:
    """``cfg`` after ModelConfig's own rules (e.g. an even head size for RoPE), as a ConversionError."""
    try:
        cfg.validate()
    except ValueError as e:
        raise ConversionError(f"this {name} cannot be computed by our GPT (train/model.py): {e}") from None
    return cfg


class _Weights:
    """A transformers state dict read key by key, so that what no mapping took is known at the end."""

    def __init__(self, weights: StateDict, name: str):
        self.left, self.name = dict(weights), name

    def __call__(self, key: str) -> torch.Tensor:
        if key not in self.left:
            raise ConversionError(f"the {self.name} weights have no {key}; the directory is incomplete or "
                                  f"was not written by transformers")
        return self.left.pop(key).float()

    def done(self, ignore: tuple[str, ...] = ()) -> None:
        rest = sorted(k for k in self.left if k not in ignore)
        if rest:
            raise ConversionError(f"the {self.name} weights hold {', '.join(rest[:4])}"
                                  f"{' ...' if len(rest) > 4 else ''}, which our GPT has no place for")


def _drop_zero_biases(cfg: ModelConfig, sd: StateDict, notes: list[str]) -> None:
    """A model whose biases are all exactly zero computes what ``bias=false`` does: read it as that."""
    biases = [k for k in sd if k.endswith(".bias")]
    if cfg.bias and biases and all(not sd[k].any() for k in biases):
        for k in biases:
            del sd[k]
        cfg.bias = False
        notes.append("every bias is exactly zero: read as model.bias=false, which computes the same function")


# ---------------------------------------------------------------------------------------------------
# GPT-2

def gpt2_weights(model: GPT) -> StateDict:
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


def config_from_gpt2(config) -> ModelConfig:
    """Our config for a GPT2Config (biases on: ``weights_from_gpt2`` turns them off when all are zero)."""
    check = _Unsupported(config, "GPT2LMHeadModel")
    C = config.n_embd
    check.need(config.activation_function in GELU_TANH, "activation_function",
               f"our GELU MLP is the tanh approximation, {' or '.join(GELU_TANH)}")
    check.need(config.n_inner in (None, 4 * C), "n_inner", f"our GELU MLP is 4 * n_embd = {4 * C} wide")
    check.need(config.layer_norm_epsilon == LAYER_NORM_EPS, "layer_norm_epsilon",
               f"our LayerNorm's epsilon is {LAYER_NORM_EPS:g}")
    check.need(config.scale_attn_weights, "scale_attn_weights", "ours scales attention scores by 1/sqrt(head size)")
    check.need(not config.scale_attn_by_inverse_layer_idx, "scale_attn_by_inverse_layer_idx",
               "ours scales every layer's attention scores alike")
    check.need(not config.add_cross_attention, "add_cross_attention", "ours has no cross-attention layers")
    check.raise_if_any()
    return _validated(ModelConfig(
        vocab_size=config.vocab_size, seq_len=config.n_positions, n_layers=config.n_layer, d_model=C,
        n_heads=config.n_head, dropout=float(config.resid_pdrop), bias=True,
        untied_head=not config.tie_word_embeddings), "GPT2LMHeadModel")


def weights_from_gpt2(weights: StateDict, cfg: ModelConfig) -> tuple[StateDict, list[str]]:
    """GPT2LMHeadModel's state as ours (the inverse of ``gpt2_weights``); ``cfg.bias`` is cleared when every
    bias is zero. Returns (our state dict, notes on what the conversion decided)."""
    take, notes = _Weights(weights, "GPT2LMHeadModel"), []
    sd = {"tok_emb.weight": take("transformer.wte.weight"), "pos_emb.weight": take("transformer.wpe.weight"),
          "norm.weight": take("transformer.ln_f.weight"), "norm.bias": take("transformer.ln_f.bias")}
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"transformer.h.{i}."
        sd.update({
            ours + "norm1.weight": take(theirs + "ln_1.weight"), ours + "norm1.bias": take(theirs + "ln_1.bias"),
            ours + "norm2.weight": take(theirs + "ln_2.weight"), ours + "norm2.bias": take(theirs + "ln_2.bias"),
            ours + "attn.qkv.weight": take(theirs + "attn.c_attn.weight").t(),  # Conv1D (in, out) -> (out, in)
            ours + "attn.qkv.bias": take(theirs + "attn.c_attn.bias"),
            ours + "attn.proj.weight": take(theirs + "attn.c_proj.weight").t(),
            ours + "attn.proj.bias": take(theirs + "attn.c_proj.bias"),
            ours + "mlp.fc.weight": take(theirs + "mlp.c_fc.weight").t(),
            ours + "mlp.fc.bias": take(theirs + "mlp.c_fc.bias"),
            ours + "mlp.proj.weight": take(theirs + "mlp.c_proj.weight").t(),
            ours + "mlp.proj.bias": take(theirs + "mlp.c_proj.bias"),
        })
    head = take("lm_head.weight")  # the embedding itself when tied
    if cfg.untied_head:
        sd["lm_head.weight"] = head
    take.done()
    _drop_zero_biases(cfg, sd, notes)
    return {k: v.contiguous() for k, v in sd.items()}, notes


# ---------------------------------------------------------------------------------------------------
# Llama

def llama_weights(model: GPT) -> StateDict:
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


def config_from_llama(config) -> ModelConfig:
    """Our config (rope + swiglu + rmsnorm) for a LlamaConfig."""
    check = _Unsupported(config, "LlamaForCausalLM")
    C = config.hidden_size
    _heads(config, check)
    check.need(config.hidden_act == "silu", "hidden_act", "our SwiGLU MLP gates with SiLU")
    check.need(config.intermediate_size == swiglu_hidden(C), "intermediate_size",
               f"our SwiGLU MLP is 8/3 * hidden_size rounded up to a multiple of 64 = {swiglu_hidden(C)} wide")
    check.need(config.rms_norm_eps == RMS_EPS, "rms_norm_eps", f"our RMSNorm's epsilon is {RMS_EPS:g}")
    check.need(config.attention_bias == config.mlp_bias, "mlp_bias",
               f"our model.bias gives biases to attention and MLP alike; attention_bias is {config.attention_bias}")
    theta = _rope_theta(config, check)
    check.raise_if_any()
    return _validated(ModelConfig(
        vocab_size=config.vocab_size, seq_len=config.max_position_embeddings, n_layers=config.num_hidden_layers,
        d_model=C, n_heads=config.num_attention_heads, dropout=float(config.attention_dropout or 0.0),
        bias=bool(config.attention_bias), rope=True, rope_theta=theta, swiglu=True, rmsnorm=True,
        untied_head=not config.tie_word_embeddings), "LlamaForCausalLM")


def weights_from_llama(weights: StateDict, cfg: ModelConfig) -> tuple[StateDict, list[str]]:
    """LlamaForCausalLM's state as ours (the inverse of ``llama_weights``); returns (state dict, notes)."""
    take = _Weights(weights, "LlamaForCausalLM")
    sd = {"tok_emb.weight": take("model.embed_tokens.weight"), "norm.weight": take("model.norm.weight")}
    suffixes = ("weight", "bias") if cfg.bias else ("weight",)
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        sd[ours + "norm1.weight"] = take(theirs + "input_layernorm.weight")
        sd[ours + "norm2.weight"] = take(theirs + "post_attention_layernorm.weight")
        for s in suffixes:
            attn, mlp = f"{theirs}self_attn.", f"{theirs}mlp."
            sd[f"{ours}attn.qkv.{s}"] = torch.cat([take(f"{attn}{p}_proj.{s}") for p in "qkv"])
            sd[f"{ours}attn.proj.{s}"] = take(f"{attn}o_proj.{s}")
            sd[f"{ours}mlp.fc.{s}"] = torch.cat([take(f"{mlp}gate_proj.{s}"), take(f"{mlp}up_proj.{s}")])
            sd[f"{ours}mlp.proj.{s}"] = take(f"{mlp}down_proj.{s}")
    head = take("lm_head.weight")
    if cfg.untied_head:
        sd["lm_head.weight"] = head
    take.done()
    return {k: v.contiguous() for k, v in sd.items()}, []


# ---------------------------------------------------------------------------------------------------
# NanoChat

def _nanochat_flip(cfg: ModelConfig) -> torch.Tensor:
    """(d_model, 1): +1 for the first half of each head's q/k rows, -1 for the second (its rotation's sign)."""
    hd = cfg.d_model // cfg.n_heads
    return torch.tensor([1.0] * (hd // 2) + [-1.0] * (hd // 2)).repeat(cfg.n_heads)[:, None]


def nanochat_weights(model: GPT) -> StateDict:
    """Our state as NanoChatForCausalLM's: norm weights folded into the layers they feed, the second half
    of each head's q and k rows negated (its rotation convention), lm_head always a matrix of its own."""
    cfg = model.cfg
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    C, flip = cfg.d_model, _nanochat_flip(cfg)
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


def config_from_nanochat(config) -> ModelConfig:
    """Our config (the modern recipe's options) for a NanoChatConfig; the head is settled by the weights."""
    check = _Unsupported(config, "NanoChatForCausalLM")
    C = config.hidden_size
    _heads(config, check)
    check.need(config.hidden_act in ("relu2",) + GELU_TANH, "hidden_act",
               f"our plain MLP is ReLU² (relu2) or the tanh GELU ({', '.join(GELU_TANH)})")
    check.need(config.intermediate_size == 4 * C, "intermediate_size",
               f"our plain MLP is 4 * hidden_size = {4 * C} wide")
    check.need(config.rms_norm_eps == RMS_EPS, "rms_norm_eps", f"our RMS norms' epsilon is {RMS_EPS:g}")
    check.need(not config.attention_bias, "attention_bias", "the modern recipe's layers have no biases")
    cap = config.final_logit_softcapping
    check.need(cap is None or cap > 0, "final_logit_softcapping", "ours caps at a positive value or not at all")
    theta = _rope_theta(config, check)
    check.raise_if_any()
    return _validated(ModelConfig(
        vocab_size=config.vocab_size, seq_len=config.max_position_embeddings, n_layers=config.num_hidden_layers,
        d_model=C, n_heads=config.num_attention_heads, dropout=float(config.attention_dropout or 0.0), bias=False,
        rope=True, rope_theta=theta, rmsnorm=True, qk_norm=True, relu2=config.hidden_act == "relu2",
        embed_norm=True, logit_softcap=float(cap or 0.0), untied_head=not config.tie_word_embeddings),
        "NanoChatForCausalLM")


def _column_scale(head: torch.Tensor, emb: torch.Tensor) -> torch.Tensor | None:
    """w with head == emb * w[None, :] to fp32 rounding (what a tied head exports as), else None."""
    h, e = head.double(), emb.double()
    denom = (e * e).sum(0)
    if not bool((denom > 0).all()):
        return None
    w = (h * e).sum(0) / denom  # least squares, column by column
    err = (e * w[None, :] - h).abs().max().item()
    return w.float() if err <= 1e-6 * max(h.abs().max().item(), 1e-30) else None


def weights_from_nanochat(weights: StateDict, cfg: ModelConfig) -> tuple[StateDict, list[str]]:
    """NanoChatForCausalLM's state as ours: the inverse of ``nanochat_weights`` up to where the folded norm
    weights sit (ours start at 1, the matrices keep them). An untied lm_head that is the embedding scaled
    per column becomes a tied head with that scale as the final norm's weight (``cfg.untied_head`` cleared)."""
    take, notes = _Weights(weights, "NanoChatForCausalLM"), []
    flip, ones = _nanochat_flip(cfg), torch.ones(cfg.d_model)
    emb = take("model.embed_tokens.weight")
    head = take("lm_head.weight")
    sd = {"tok_emb.weight": emb, "norm.weight": ones.clone()}
    if cfg.untied_head:
        scale = _column_scale(head, emb)
        if scale is None:
            sd["lm_head.weight"] = head
        else:
            cfg.untied_head = False
            sd["norm.weight"] = scale
            notes.append("lm_head is the embedding scaled per column (a tied head as exported): read as a tied "
                         "head, model.untied_head=false, with the scale as the final norm's weight")
    for i in range(cfg.n_layers):
        ours, theirs = f"blocks.{i}.", f"model.layers.{i}."
        attn = theirs + "self_attn."
        sd.update({
            ours + "norm1.weight": ones.clone(), ours + "norm2.weight": ones.clone(),
            # the sign flip is its own inverse
            ours + "attn.qkv.weight": torch.cat([take(attn + "q_proj.weight") * flip,
                                                 take(attn + "k_proj.weight") * flip, take(attn + "v_proj.weight")]),
            ours + "attn.proj.weight": take(attn + "o_proj.weight"),
            ours + "mlp.fc.weight": take(theirs + "mlp.fc1.weight"),
            ours + "mlp.proj.weight": take(theirs + "mlp.fc2.weight"),
        })
    take.done()
    notes.append("NanoChat's norms have no weights: ours start at 1 (the matrices they feed carry any scale)")
    return {k: v.contiguous() for k, v in sd.items()}, notes


# ---------------------------------------------------------------------------------------------------
# both directions

CONVERTERS = {"gpt2": (gpt2_config, gpt2_weights, config_from_gpt2, weights_from_gpt2),
              "llama": (llama_config, llama_weights, config_from_llama, weights_from_llama),
              "nanochat": (nanochat_config, nanochat_weights, config_from_nanochat, weights_from_nanochat)}


def to_transformers(model: GPT, eot_id: int):
    """A transformers model (fp32, eval mode) computing the same logits as ``model``."""
    transformers = require_transformers()

    arch = architecture(model.cfg)
    name = REQUIREMENTS[arch][0]
    config, weights, _, _ = CONVERTERS[arch]
    cls = getattr(transformers, name)
    hf = cls(config(model, eot_id))
    missing, unexpected = hf.load_state_dict(weights(model), strict=False)
    if hf.config.tie_word_embeddings:
        missing = [k for k in missing if k != "lm_head.weight"]  # tied: shares embed's storage
    if missing or unexpected:
        raise ConversionError(f"internal error: weight names do not match {cls.__name__}: missing {missing}, "
                              f"unexpected {unexpected}; train/model.py may have changed its parameter names")
    hf.tie_weights()
    return hf.float().eval()


def model_type_of(model_type: str | None) -> str:
    """``model_type`` (a transformers config's) when we read its class; ConversionError otherwise."""
    if model_type not in CLASSES:
        readable = ", ".join(f"{name} (model_type {t!r})" for t, name in CLASSES.items())
        raise ConversionError(f"its config.json says model_type {model_type!r}; our GPT reads {readable}, the "
                              f"classes tools/export_hf.py writes")
    return model_type


def config_from_transformers(config) -> ModelConfig:
    """Our ModelConfig for a transformers config (before the weights are read), or ConversionError naming
    every option our GPT cannot compute."""
    return CONVERTERS[model_type_of(config.model_type)][2](config)


def from_transformers(hf_model, tolerance: float = DEFAULT_TOLERANCE) -> tuple[GPT, list[str], float]:
    """Our GPT (fp32, CPU, eval mode) computing ``hf_model``'s logits: (model, notes on what the conversion
    decided, the largest |logit difference| measured on random tokens). ConversionError when the config
    has options we do not compute, or when the logits differ by ``tolerance`` or more."""
    arch = model_type_of(hf_model.config.model_type)
    cfg = config_from_transformers(hf_model.config)
    weights = {k: v.detach().to("cpu", torch.float32) for k, v in hf_model.state_dict().items()}
    sd, notes = CONVERTERS[arch][3](weights, cfg)
    model = GPT(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ConversionError(f"internal error: the weights read from {CLASSES[arch]} do not match our GPT: "
                              f"missing {missing}, unexpected {unexpected}; train/hf.py and train/model.py disagree")
    model.eval()
    hf_model = hf_model.float().eval()
    diff = max_logit_diff(model, hf_model)
    if not diff < tolerance:
        raise ConversionError(f"our model's logits differ from the {CLASSES[arch]}'s by up to {diff:.3g} (tolerance "
                              f"{tolerance:g}); the conversion is wrong, please report it with the model's config.json")
    return model, notes, diff


@torch.no_grad()
def max_logit_diff(model: GPT, hf_model, batch: int = 2, tokens: int = CHECK_TOKENS, seed: int = 0) -> float:
    """Largest |ours - transformers| over the logits of ``batch`` rows of random tokens (fp32, CPU)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, cfg.vocab_size, (batch, min(tokens, cfg.seq_len)), generator=g)
    ours, _ = model(idx)
    theirs = hf_model(input_ids=idx).logits
    return (ours.float() - theirs.float()).abs().max().item()
