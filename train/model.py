"""A GPT-style decoder in one file, readable top to bottom (after nanoGPT's ``model.py``).

Token embeddings (+ learned position embeddings unless ``rope``), ``n_layers`` pre-norm blocks of
causal self-attention (``F.scaled_dot_product_attention``) and an MLP, a final norm, and an output
layer tied to the token embedding. Options, all off by default, are branches in this file: RoPE,
SwiGLU, RMSNorm, gradient checkpointing, and the parts of the modern recipe (``demo_modern``,
``75m_dolma_modern``; README "Training recipes"): QK-norm, a ReLU² MLP, a normalized embedding,
zero-initialized output projections, an untied output layer and logit soft-capping. With every
option off the model is GPT-2's.

API
---
Training::

    model = GPT(ModelConfig(vocab_size=8192, seq_len=256, n_layers=4, d_model=256, n_heads=4))
    logits, loss = model(idx, targets)          # idx, targets: (B, T) int64 -> logits (B, T, vocab_size)
    logits, _ = model(idx)                      # loss is None without targets
    _, loss = model(idx, targets, return_logits=False)   # what the trainer calls: the loss alone

The loss-only forward (``return_logits=False``) gives the same loss and gradients without the
(B, T, vocab_size) logits: :func:`chunked_cross_entropy` computes them a chunk of tokens at a time and,
when gradients are wanted, the chunk's gradients with them, so backward keeps (B*T, d_model) and
(vocab_size, d_model) gradients instead of logits (0.7 GiB in bf16 at 12 x 1024 x 32k, and the fp32
log-softmax and soft-cap outputs cross-entropy would keep beside them).

Incremental decoding with a KV cache (what ``train/generate.py`` uses)::

    cache = model.new_kv_cache(batch_size=B, max_len=L, device=..., dtype=...)   # L <= seq_len
    logits, _ = model(prompt, kv_cache=cache, start_pos=0)          # prompt: (B, T0), fills rows 0..T0-1
    logits, _ = model(next_tok, kv_cache=cache, start_pos=T0)       # next_tok: (B, 1), and so on

``start_pos`` is the absolute position of ``idx[:, 0]``; the cache holds keys and values of positions
``0 .. start_pos + T - 1`` afterwards. Positions must stay below ``seq_len`` (the model never saw
later ones). Greedy decoding with and without the cache gives the same tokens (tests/test_model.py).

Cost: :meth:`GPT.estimate_flops_per_token` (forward + backward) and :func:`mfu`.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint


@dataclass
class ModelConfig:
    vocab_size: int = 0        # from the dataset manifest; 0 until the trainer fills it in
    seq_len: int = 256         # context length in tokens
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    dropout: float = 0.0
    bias: bool = True          # biases in linear layers and norms
    rope: bool = False         # rotary position embeddings instead of learned absolute ones
    rope_theta: float = 10000.0
    swiglu: bool = False       # SwiGLU MLP (hidden 8/3 * d_model, rounded up to a multiple of 64) instead of GELU 4x
    rmsnorm: bool = False      # RMSNorm instead of LayerNorm
    grad_checkpointing: bool = False  # recompute each block in backward: less activation memory, ~1/3 more compute
    # the modern recipe's parts (README "Training recipes" measures what each pays); all off = GPT-2
    qk_norm: bool = False      # RMS-normalize each head's queries and keys (no weights): attention logits stay bounded
    relu2: bool = False        # ReLU(x)^2 MLP (hidden 4x) instead of GELU; exclusive with swiglu
    embed_norm: bool = False   # RMS-normalize the embedding (no weights) before the first block
    zero_init: bool = False    # output projections of attention and MLP (and an untied head) start at zero
    untied_head: bool = False  # a separate output matrix (lm_head) instead of the token embedding
    logit_softcap: float = 0.0  # logits = cap * tanh(logits / cap); 0 = off

    def validate(self) -> None:
        if self.vocab_size <= 0:
            raise ValueError("model.vocab_size must be positive (the trainer takes it from the dataset manifest)")
        if self.d_model % self.n_heads:
            raise ValueError(f"model.d_model ({self.d_model}) must be divisible by model.n_heads ({self.n_heads})")
        if self.rope and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"RoPE needs an even head size; d_model / n_heads = {self.d_model // self.n_heads}")
        if self.swiglu and self.relu2:
            raise ValueError("model.swiglu and model.relu2 are two kinds of MLP; set at most one of them")
        if self.logit_softcap < 0:
            raise ValueError(f"model.logit_softcap must be 0 (off) or positive, got {self.logit_softcap}")


class KVCache:
    """Keys and values of every layer for positions 0..max_len-1: each (n_layers, B, n_heads, max_len, head_dim)."""

    def __init__(self, cfg: ModelConfig, batch_size: int, max_len: int, device=None, dtype=torch.float32):
        if max_len > cfg.seq_len:
            raise ValueError(f"a KV cache of {max_len} positions exceeds the model's seq_len {cfg.seq_len}")
        shape = (cfg.n_layers, batch_size, cfg.n_heads, max_len, cfg.d_model // cfg.n_heads)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_len = max_len


RMS_EPS = 1e-6


def rms_norm(x: torch.Tensor, eps: float = RMS_EPS) -> torch.Tensor:
    """x scaled to unit root-mean-square over its last dimension (computed in fp32), without weights."""
    norm = x.float().pow(2).mean(-1, keepdim=True).add(eps).rsqrt()
    return (x.float() * norm).type_as(x)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = RMS_EPS):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return rms_norm(x, self.eps) * self.weight


def make_norm(cfg: ModelConfig) -> nn.Module:
    return RMSNorm(cfg.d_model) if cfg.rmsnorm else nn.LayerNorm(cfg.d_model, bias=cfg.bias)


def rope_tables(cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (seq_len, head_dim / 2) for rotary embeddings."""
    head_dim = cfg.d_model // cfg.n_heads
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    angles = torch.outer(torch.arange(cfg.seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :h/2], x[..., h/2:]) of x: (B, n_heads, T, head_dim) by the angles of its positions."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos[None, None], sin[None, None]  # (1, 1, T, head_dim / 2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qk_norm = cfg.qk_norm
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.proj.is_residual = True  # scaled at init by depth, or zero with zero_init
        self.dropout = cfg.dropout
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def heads(self, x, rope=None):
        """Queries, keys and values of x: (B, T, C), each (B, n_heads, T, head_dim), rotated with RoPE.

        With qk_norm, queries and keys are RMS-normalized per head first, so a logit q.k / sqrt(head_dim)
        is at most sqrt(head_dim) whatever the weights grow to. The norm has no weights, so it commutes
        with the rotation (which keeps each pair's length): normalizing after RoPE gives the same q, k.
        """
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))
        if self.qk_norm:
            q, k = rms_norm(q), rms_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return q, k, v

    def out(self, y):
        """The heads' outputs y: (B, n_heads, T, head_dim) merged and projected back to (B, T, C)."""
        B, nh, T, hd = y.shape
        return self.resid_dropout(self.proj(y.transpose(1, 2).contiguous().view(B, T, nh * hd)))

    def forward(self, x, rope=None, kv_cache=None, layer=0, start_pos=0):
        B, T, C = x.shape
        q, k, v = self.heads(x, rope)
        dropout = self.dropout if self.training else 0.0
        if kv_cache is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        else:
            end = start_pos + T
            kv_cache.k[layer, :B, :, start_pos:end] = k
            kv_cache.v[layer, :B, :, start_pos:end] = v
            k, v = kv_cache.k[layer, :B, :, :end], kv_cache.v[layer, :B, :, :end]  # (B, nh, end, hd)
            # query i sits at absolute position start_pos + i and may see keys 0..start_pos + i
            mask = torch.ones(T, end, dtype=torch.bool, device=x.device).tril(diagonal=start_pos)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        return self.out(y)


class MLP(nn.Module):
    """GELU (GPT-2), SwiGLU, or ReLU²: relu(x)^2, as cheap as GELU and sparse (Primer, So et al. 2021)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.swiglu, self.relu2 = cfg.swiglu, cfg.relu2
        if cfg.swiglu:
            hidden = 64 * math.ceil(8 * cfg.d_model / 3 / 64)  # same parameter count as GELU 4x, rounded
            self.fc = nn.Linear(cfg.d_model, 2 * hidden, bias=cfg.bias)  # gate and value in one matmul
        else:
            hidden = 4 * cfg.d_model
            self.fc = nn.Linear(cfg.d_model, hidden, bias=cfg.bias)
        self.proj = nn.Linear(hidden, cfg.d_model, bias=cfg.bias)
        self.proj.is_residual = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        h = self.fc(x)
        if self.swiglu:
            gate, value = h.chunk(2, dim=-1)
            h = F.silu(gate) * value
        elif self.relu2:
            h = F.relu(h).square()
        else:
            h = F.gelu(h, approximate="tanh")
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = make_norm(cfg)
        self.attn = CausalSelfAttention(cfg)
        self.norm2 = make_norm(cfg)
        self.mlp = MLP(cfg)

    def forward(self, x, rope=None, kv_cache=None, layer=0, start_pos=0):
        x = x + self.attn(self.norm1(x), rope, kv_cache, layer, start_pos)
        return x + self.mlp(self.norm2(x))


# fp32 logits one chunk of the loss-only forward computes at once: 128 MiB, 1,048 tokens at a 32k vocabulary
# (a matmul of 1,048 x d_model x 32k still fills a GPU; the chunk's few temporaries are the forward's peak)
LOSS_CHUNK_BYTES = 2 ** 27


def output_logits(x: torch.Tensor, weight: torch.Tensor, softcap: float) -> torch.Tensor:
    """The output layer on normalized x: (N, C) -> logits (N, vocab_size); soft-capped when softcap > 0.
    In fp32 under autocast: tanh of bf16 logits would cost the loss its precision."""
    logits = F.linear(x, weight)
    if softcap > 0:
        # |logits| < softcap smoothly (Gemma 2): no token can be driven to overconfidence early in training
        logits = softcap * torch.tanh(logits.float() / softcap)
    return logits


class ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``output_logits(x, weight, softcap)`` against targets, with its gradients
    computed in forward a chunk of rows at a time: backward only scales the saved d(loss)/dx (N, C)
    and d(loss)/dweight (vocab_size, C). The same arithmetic and precisions as the logits path under
    autocast (bf16 logits, fp32 soft cap and softmax, bf16 matmuls for the gradients), summed in fp32."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float, chunk: int):
        n = x.size(0)
        loss = torch.zeros((), dtype=torch.float32, device=x.device)
        grad_x = torch.empty_like(x)
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, n, chunk):
            xc, tc = x[start:start + chunk], targets[start:start + chunk]  # (n_c, C), (n_c,)
            z = F.linear(xc, weight)  # (n_c, V), bf16 under autocast
            logits = z.float()
            if softcap > 0:
                capped = torch.tanh(logits / softcap)
                logits = softcap * capped
            lse = torch.logsumexp(logits, dim=-1)  # (n_c,)
            loss = loss + (lse - logits.gather(1, tc[:, None]).squeeze(1)).sum()
            # d(summed loss)/d(logits) = softmax - one_hot(target); through the cap: times 1 - tanh^2
            grad = torch.exp(logits - lse[:, None])
            grad.scatter_add_(1, tc[:, None], torch.full_like(grad[:, :1], -1.0))
            if softcap > 0:
                grad = grad * (1 - capped * capped)
            grad = grad.to(z.dtype)
            grad_x[start:start + chunk] = grad @ weight  # (n_c, C)
            grad_w += (grad.t() @ xc).float()           # (V, C)
        ctx.save_for_backward(grad_x / n, (grad_w / n).to(weight.dtype))
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, grad_w * grad_loss, None, None, None


def chunked_cross_entropy(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, softcap: float,
                          chunk: int) -> torch.Tensor:
    """Mean cross-entropy over every target of the output layer on x: (N, C) normalized, weight
    (vocab_size, C), targets (N,), ``chunk`` rows of logits at a time. Equal to
    ``F.cross_entropy(output_logits(x, weight, softcap).float(), targets)`` (every target counts: there is
    no ignore_index) in value and gradients, without holding (N, vocab_size) logits."""
    if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
        return ChunkedCrossEntropy.apply(x, weight, targets, softcap, chunk)
    total = torch.zeros((), dtype=torch.float32, device=x.device)
    for start in range(0, x.size(0), chunk):
        logits = output_logits(x[start:start + chunk], weight, softcap)
        total = total + F.cross_entropy(logits.float(), targets[start:start + chunk], reduction="sum")
    return total / x.size(0)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = None if cfg.rope else nn.Embedding(cfg.seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm = make_norm(cfg)
        # By default the output layer is the token embedding itself (weight tying): F.linear(x, tok_emb.weight),
        # and there is no lm_head parameter, so state dicts and safetensors hold the matrix once. untied_head
        # gives the output its own matrix: the input embedding then only has to be a good lookup table.
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False) if cfg.untied_head else None
        if self.lm_head is not None:
            self.lm_head.is_head = True
        if cfg.rope:
            cos, sin = rope_tables(cfg)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2: N(0, 0.02); projections into the residual stream scaled by 1/sqrt(2 * n_layers)
        # so the stream's variance does not grow with depth. zero_init starts those projections (and an
        # untied head) at zero instead: every block begins as the identity and the first logits are
        # uniform; the gradients reaching them are not zero, so they move from the first step.
        if isinstance(module, nn.Linear):
            if self.cfg.zero_init and (getattr(module, "is_residual", False) or getattr(module, "is_head", False)):
                nn.init.zeros_(module.weight)
            else:
                std = 0.02 / math.sqrt(2 * self.cfg.n_layers) if getattr(module, "is_residual", False) else 0.02
                nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; without the position embedding when ``non_embedding``. The token embedding is
        counted when it is also the output layer (its matmul is real compute), not beside an untied head."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding and self.pos_emb is not None:
            n -= self.pos_emb.weight.numel()
        if non_embedding and self.lm_head is not None:
            n -= self.tok_emb.weight.numel()
        return n

    def new_kv_cache(self, batch_size: int, max_len: int | None = None, device=None,
                     dtype: torch.dtype | None = None) -> KVCache:
        """An empty cache for ``batch_size`` sequences of up to ``max_len`` (default seq_len) positions."""
        param = self.tok_emb.weight
        return KVCache(self.cfg, batch_size, max_len or self.cfg.seq_len, device or param.device, dtype or param.dtype)

    def embed(self, idx: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """idx: (B, T) token ids at absolute ``positions`` (T,) -> the blocks' input x (B, T, C) and the
        RoPE (cos, sin) of those positions, each (T, head_dim / 2), or None with learned positions."""
        x = self.tok_emb(idx)  # (B, T, C)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(positions)
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        if self.cfg.embed_norm:
            # unit RMS whatever the embedding's scale: the blocks' outputs are added to a stream of known size
            x = rms_norm(x)
        return self.drop(x), rope

    def output_weight(self) -> torch.Tensor:
        """The output layer's matrix (vocab_size, d_model): the token embedding, or the untied head's."""
        return self.tok_emb.weight if self.lm_head is None else self.lm_head.weight

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """The last block's output x: (B, T, C) -> logits (B, T, vocab_size): final norm, output layer, soft cap."""
        return output_logits(self.norm(x), self.output_weight(), self.cfg.logit_softcap)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                start_pos: int = 0, return_logits: bool = True) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """idx: (B, T) token ids -> (logits (B, T, vocab_size), mean cross-entropy over targets or None).

        ``return_logits=False`` with targets: (None, the same loss) through :func:`chunked_cross_entropy`,
        never holding the logits (training's forward)."""
        B, T = idx.shape
        end = start_pos + T
        limit = kv_cache.max_len if kv_cache is not None else self.cfg.seq_len
        if end > limit:
            raise ValueError(f"positions {start_pos}..{end - 1} exceed the {'KV cache' if kv_cache else 'model'} "
                             f"length {limit}; crop the input to the last {limit - start_pos} tokens")
        x, rope = self.embed(idx, torch.arange(start_pos, end, device=idx.device))
        for layer, block in enumerate(self.blocks):
            if self.cfg.grad_checkpointing and self.training and kv_cache is None:
                x = checkpoint(block, x, rope, use_reentrant=False)
            else:
                x = block(x, rope, kv_cache, layer, start_pos)
        if targets is not None and not return_logits:
            x = self.norm(x).view(B * T, -1)  # (B*T, C)
            chunk = max(1, LOSS_CHUNK_BYTES // (4 * self.cfg.vocab_size))
            return None, chunked_cross_entropy(x, self.output_weight(), targets.reshape(-1), self.cfg.logit_softcap,
                                               chunk)
        logits = self.head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.reshape(-1))
        return logits, loss

    def estimate_flops_per_token(self) -> float:
        """FLOPs of one training token (forward + backward): 6 per parameter that multiplies activations,
        plus attention scores and weighted values, 12 * n_layers * d_model * seq_len (PaLM appendix B)."""
        c = self.cfg
        return 6 * self.num_params(non_embedding=True) + 12 * c.n_layers * c.d_model * c.seq_len


def mfu(flops_per_token: float, tokens_per_s: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved FLOP/s over the accelerator's peak (e.g. 989e12 for H100 bf16 dense)."""
    return flops_per_token * tokens_per_s / peak_flops


# Dense (no 2:4 sparsity) peak FLOP/s: (bf16/fp16 tensor cores with fp32 accumulation, TF32 tensor cores),
# keyed by gpu_key(name). From NVIDIA's datasheets, whose tensor figures are with sparsity: halved here.
# GeForce cards accumulate fp32 at half the fp16-accumulate rate; their figures are the whitepapers'
# "with FP32 Accumulate" ones (Ampere GA102, Ada). RTX 3060: no whitepaper table; the GA10x rate of
# 512 dense FLOP/clock/SM x 28 SMs x 1.777 GHz boost. A10G: no NVIDIA datasheet; AWS's G5 figures.
PEAK_FLOPS = {
    "b200": (2250e12, 1125e12),        # HGX B200 datasheet, per GPU
    "h200": (989.4e12, 494.7e12),      # H200 SXM
    "h200 nvl": (835.5e12, 417.5e12),
    "h100": (989.4e12, 494.7e12),      # H100 SXM ("NVIDIA H100 80GB HBM3")
    "h100 nvl": (835.5e12, 417.5e12),
    "h100 pcie": (756.5e12, 378e12),
    "a100": (312e12, 156e12),          # SXM4 ("NVIDIA A100-SXM4-80GB")
    "a100 pcie": (312e12, 156e12),     # "NVIDIA A100-PCIE-40GB", "NVIDIA A100 80GB PCIe"
    "l40s": (362.05e12, 183e12),
    "l40": (181.05e12, 90.5e12),
    "l4": (121e12, 60e12),
    "a10": (125e12, 62.5e12),
    "a10g": (70e12, 35e12),
    "rtx 4090": (165.2e12, 82.6e12),
    "rtx 4080": (97.5e12, 48.7e12),
    "rtx 3090": (71e12, 35.6e12),
    "rtx 3060": (25.5e12, 12.7e12),
}


def gpu_key(name: str) -> str:
    """The PEAK_FLOPS key of a name as ``torch.cuda.get_device_name`` reports it: lower case, without
    "NVIDIA"/"GeForce", memory size and type, or the SXM form factor (the table's default), e.g.
    "NVIDIA H100 80GB HBM3" -> "h100", "NVIDIA A100-PCIE-40GB" -> "a100 pcie",
    "NVIDIA GeForce RTX 3060" -> "rtx 3060"."""
    words = name.lower().replace("-", " ").replace("_", " ").split()
    drop = {"nvidia", "geforce"}
    return " ".join(w for w in words if w not in drop and not re.fullmatch(r"\d+gb|hbm\d*e?|sxm\d*", w))


def peak_flops_of(name: str, dtype: torch.dtype) -> float | None:
    """Dense peak FLOP/s of the GPU called ``name`` for ``dtype`` (bf16/fp16 tensor cores, else TF32), or
    None when it is not in PEAK_FLOPS. Names match exactly: an L40S is not an L4, an RTX 3090 Ti not an RTX 3090."""
    peaks = PEAK_FLOPS.get(gpu_key(name))
    if peaks is None:
        return None
    return peaks[0] if dtype in (torch.bfloat16, torch.float16) else peaks[1]


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Dense peak FLOP/s of the CUDA GPU ``device`` for ``dtype``; None on CPU or for a GPU not in PEAK_FLOPS."""
    if device.type != "cuda":
        return None
    return peak_flops_of(torch.cuda.get_device_name(device), dtype)
