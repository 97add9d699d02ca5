"""What one training process holds in accelerator memory, part by part, from the config alone.

``estimate(cfg, precision)`` returns a :class:`MemoryEstimate`: fp32 weights and gradients, each
optimizer's state (AdamW's two moments, Muon's momentum), the tensors autograd keeps from forward to
backward ("activations": the blocks', eager and under ``torch.compile``, and the output layer's, with
the loss-only training forward ``model(idx, targets, return_logits=False)`` and with full logits),
and the largest transients. Its
``lines()`` are what ``python -m train --dry-run`` prints; ``largest_micro_batch`` answers which
micro-batch fits a GPU of a given size.

The activation terms are counted tensor by tensor from what each operation of ``train/model.py``
saves for backward (bytes per token per layer, plus per-matrix terms). They are checked for the
presets' options (both recipes, dropout 0, no gradient checkpointing; swiglu and gradient
checkpointing are counted the same way but not measured; dropout's masks are not counted).
:func:`measure_saved_bytes` measures the same quantity with saved-tensor hooks (each storage autograd
keeps, parameters left out, counted once) and :func:`measure_peak_bytes` a step's peak with the
profiler's memory events; ``tests/test_memory.py`` holds the estimate within 10% of both on small
configs and ``tools/bench_memory.py`` compares them per preset at its micro-batch on CPU. On a GPU
the attention kernel (flash or memory-efficient SDPA) saves the same query, key, value, output and
log-sum-exp as the CPU one; that, the allocator's rounding and the CUDA context are what the CPU
measurement cannot check.
"""
from __future__ import annotations

import contextlib
import json
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from train.config import Config, ModelConfig
from train.model import GPT, LOSS_CHUNK_BYTES
from train.optim import MuonAdamW, build_optimizer

GIB = 2 ** 30
# what a CUDA process has before the first tensor (context, cuBLAS/cuDNN workspaces): the fit table
# subtracts it from a GPU's memory, with 5% for the caching allocator's rounding and fragmentation
CUDA_RESERVED_BYTES = 0.75 * GIB
ALLOCATOR_SLACK = 0.05


@dataclass
class MemoryEstimate:
    """Bytes of one training process, per part (see the module docstring)."""
    micro_batch: int
    seq_len: int
    precision: str
    weights: int
    grads: int
    optimizer: dict[str, int] = field(default_factory=dict)  # {"AdamW moments": .., "Muon momentum": ..}
    blocks_eager: int = 0            # the embedding's and blocks' saved tensors (autocast's weight copies too), eager
    blocks_compiled: int = 0         # the same under torch.compile (inductor's partitioner)
    output_layer_eager: int = 0      # final norm, head and loss with the loss-only forward, eager
    output_layer_compiled: int = 0   # the same under torch.compile
    output_layer_logits: int = 0     # the same when the forward returns the logits (eager)
    workspace: int = 0               # the forward and backward's largest transient: a loss chunk's temporaries,
                                     # a block's gradients
    step_workspace: int = 0          # the optimizer step's temporaries (Muon's stacked updates, CPU AdamW's)
    ddp_buckets: int = 0             # DDP's gradient buckets, under torchrun
    grads_in_forward: bool = True    # gradient accumulation: the grads exist while a later micro-batch runs

    @property
    def static(self) -> int:
        """What lives across the step: weights, optimizer state, DDP's buckets, and the grads when they
        are held through a forward (with gradient accumulation; else the peak, at the end of the forward,
        comes before backward creates them)."""
        grads = self.grads if self.grads_in_forward else 0
        return self.weights + grads + sum(self.optimizer.values()) + self.ddp_buckets

    def activations(self, compiled: bool) -> int:
        if compiled:
            return self.blocks_compiled + self.output_layer_compiled
        return self.blocks_eager + self.output_layer_eager

    def total(self, compiled: bool) -> int:
        """Peak bytes of a training step: everything held, then the larger of the end of a forward (the
        saved activations and the largest transient) and the optimizer step (the grads and its temporaries)."""
        forward = self.static + self.activations(compiled) + self.workspace
        step = self.weights + self.grads + sum(self.optimizer.values()) + self.ddp_buckets + self.step_workspace
        return max(forward, step)

    def lines(self, compiled: bool) -> list[str]:
        """The dry run's report, one part a line, in GiB."""
        def g(n: int) -> str:
            return f"{n / GIB:.2f} GiB"
        optim = ", ".join(f"{name} {g(n)}" for name, n in self.optimizer.items())
        used, other = ("compiled", "eager") if compiled else ("eager", "compiled")
        mine, theirs = self.activations(compiled), self.activations(not compiled)
        output = self.output_layer_compiled if compiled else self.output_layer_eager
        out = [f"estimated memory per process: {g(self.total(compiled))} (micro-batch {self.micro_batch} x "
               f"{self.seq_len}, {self.precision}, {used}; {g(self.total(not compiled))} {other})",
               f"  weights {g(self.weights)}, grads {g(self.grads)}, optimizer: {optim}",
               f"  activations ({used}) {g(mine)} ({other} {g(theirs)}), of which the output layer and loss "
               f"{g(output)} (eager with the logits returned: {g(self.output_layer_logits)}); largest transient "
               f"{g(self.workspace)}, in the optimizer step {g(self.step_workspace)}"]
        if self.ddp_buckets:
            out.append(f"  DDP gradient buckets {g(self.ddp_buckets)}")
        return out


def parameter_counts(cfg: Config) -> dict[str, int]:
    """Parameters per optimizer state: "adamw" (two fp32 moments each) and "muon" (one fp32 momentum),
    grouped by ``build_optimizer`` itself on a model built on the meta device (nothing allocated), and
    "muon_largest_shape": the parameters of Muon's largest group of same-shape matrices, "largest": of
    the largest parameter."""
    with torch.device("meta"):
        model = GPT(cfg.model)
    opt = build_optimizer(model, cfg, torch.device("meta"))
    total = sum(p.numel() for p in model.parameters())
    largest = max(p.numel() for p in model.parameters())
    if not isinstance(opt, MuonAdamW):
        return {"adamw": total, "muon": 0, "muon_largest_shape": 0, "largest": largest, "total": total}
    by_shape: dict[tuple, int] = {}
    for group in opt.muon.param_groups:
        for p in group["params"]:
            by_shape[tuple(p.shape)] = by_shape.get(tuple(p.shape), 0) + p.numel()
    muon = sum(by_shape.values())
    return {"adamw": total - muon, "muon": muon, "muon_largest_shape": max(by_shape.values()), "largest": largest,
            "total": total}


def mlp_hidden(m: ModelConfig) -> int:
    """The MLP's hidden width (train/model.py's MLP)."""
    return 64 * math.ceil(8 * m.d_model / 3 / 64) if m.swiglu else 4 * m.d_model


def block_bytes_per_token(m: ModelConfig, act: int, compiled: bool) -> int:
    """Bytes one block keeps for backward per token; ``act``: bytes of an autocast activation (2 in
    bf16/fp16, 4 in fp32). Norms take the fp32 residual stream; linear layers save their (autocast)
    inputs; attention saves q, k, v, its output and the log-sum-exp (4 B per head)."""
    C, nh, H = m.d_model, m.n_heads, mlp_hidden(m)
    rotated = m.rope or m.qk_norm  # q and k are new tensors, and attention's output comes out head-major
    n = 3 * act * C                # the qkv matmul's output (q, k, v are views of it, or v is)
    n += 2 * act * C               # inputs of the qkv and fc matmuls
    n += act * C                   # attention's output, the proj matmul's input
    if rotated:
        n += 2 * act * C           # rotated / normalized q and k
    if m.rope:
        n += act * C               # the output made token-major again for proj: a copy
    n += 4 * nh                    # attention's log-sum-exp (fp32)
    if m.swiglu:
        n += 4 * act * H           # fc's output (gate and value), silu(gate), their product
    else:
        n += 2 * act * H           # GELU: its input and output; ReLU^2: relu's output and its square
    if compiled:
        # inductor recomputes the norms' elementwise work: each keeps its fp32 input and one statistic
        n += 2 * (4 * C + 4)
        if m.qk_norm:
            n += 2 * 4 * nh        # the per-head rms of q and k
        return n
    if m.rmsnorm:
        n += 2 * (8 * C + 4)       # rms_norm saves its fp32 input and its normalized output (for the weight)
    else:
        n += 2 * (4 * C + 8)       # LayerNorm: the fp32 input, mean and rstd
    if m.qk_norm:
        n += 2 * 4 * nh            # the per-head rms of q and k
        if act < 4:
            n += 4 * 4 * C         # rms_norm's two fp32 copies of q and of k (x.float() twice)
    return n


def estimate(cfg: Config, precision: str, device_type: str = "cuda", world_size: int = 1,
             micro_batch: int | None = None) -> MemoryEstimate:
    """Memory of one training process of ``cfg`` at ``precision`` (``fp32``, ``bf16`` or ``fp16``) on a
    ``device_type`` device (``cuda``: AdamW is fused, without temporaries; ``cpu``: it steps one
    parameter at a time) and ``micro_batch`` (default ``training.batch_size``) sequences of
    ``seq_len`` tokens, with the loss-only forward (``model(idx, targets, return_logits=False)``)."""
    m = cfg.model
    B = micro_batch or cfg.training.batch_size
    T, C, V = m.seq_len, m.d_model, m.vocab_size
    tokens = B * T
    act = 4 if precision == "fp32" else 2
    autocast = act < 4
    counts = parameter_counts(cfg)
    n = counts["total"]
    optimizer = {"AdamW moments": 8 * counts["adamw"]}
    if counts["muon"]:
        optimizer["Muon momentum"] = 4 * counts["muon"]

    H = mlp_hidden(m)
    block_matrices = m.n_layers * (4 * C * C + (3 if m.swiglu else 2) * C * H)
    weight_copies = act * block_matrices if autocast else 0  # autocast's bf16 copies, saved by the matmuls
    embed = 8 * tokens  # the token ids (int64), saved by the embedding
    if m.rope:
        embed += 2 * T * (C // m.n_heads // 2) * 4  # the cos and sin of the positions, shared by the layers
    else:
        embed += T * 8  # the positions
    eager_embed = embed + (tokens * (4 * C + 4) if m.embed_norm else 0)
    compiled_embed = embed + (tokens * 4 if m.embed_norm else 0)
    blocks = {c: m.n_layers * tokens * block_bytes_per_token(m, act, c) for c in (False, True)}
    if m.grad_checkpointing:
        # each block keeps its fp32 input; backward recomputes one block at a time
        blocks = {c: m.n_layers * tokens * 4 * C + blocks[c] // m.n_layers for c in (False, True)}
        weight_copies //= m.n_layers

    final_norm = tokens * ((8 * C + 4) if m.rmsnorm else (4 * C + 8))
    cap = m.logit_softcap > 0
    chunk = max(1, LOSS_CHUNK_BYTES // (4 * V))
    # loss-only forward: the saved d(loss)/dx (fp32, tokens x C) and d(loss)/dW (fp32, V x C). Compiled,
    # inductor keeps the matmuls' bf16 results and scales them in backward: d(loss)/dW stays bf16 while
    # keeping each chunk's is smaller than their fp32 sum
    loss_only = final_norm + tokens * 4 * C + 4 * V * C
    loss_only_compiled = (tokens * (4 * C + 4) + tokens * act * C
                          + min(4, act * math.ceil(tokens / chunk)) * V * C)
    # full logits, eager: the head's input and bf16 weight copy, log-softmax's fp32 output, tanh's with a cap
    # and the int64 targets
    with_logits = final_norm + tokens * (act * C + 4 * V * (2 if cap else 1) + 8) + (act * V * C if autocast else 0)

    # one loss chunk's temporaries: logits (act), their fp32 copy, softmax, its low-precision copy,
    # tanh and its derivative with a cap; the chunk's weight gradient (act and fp32)
    loss_chunk = min(chunk, tokens) * V * (2 * act + 8 + (8 if cap else 0)) + V * C * (act + 4)
    block_grads = tokens * (4 * C + act * H) * 2  # gradients flowing through one block in backward
    # FusedMuon: the Nesterov updates and the orthogonalized ones (fp32, every matrix), and the bf16
    # Newton-Schulz iterates of the largest shape; AdamW on CPU: a few temporaries of the largest parameter
    step_workspace = 8 * counts["muon"] + 4 * counts["muon_largest_shape"]
    if device_type != "cuda":
        step_workspace += 3 * 4 * counts["largest"]
    return MemoryEstimate(
        micro_batch=B, seq_len=T, precision=precision, weights=4 * n, grads=4 * n, optimizer=optimizer,
        blocks_eager=blocks[False] + eager_embed + weight_copies,
        blocks_compiled=blocks[True] + compiled_embed + weight_copies,
        output_layer_eager=loss_only, output_layer_compiled=loss_only_compiled, output_layer_logits=with_logits,
        workspace=max(loss_chunk, block_grads), step_workspace=step_workspace,
        ddp_buckets=4 * n if world_size > 1 else 0, grads_in_forward=cfg.training.grad_accum_steps > 1)


def usable_bytes(gib: float) -> float:
    """What a training process can allocate on a GPU of ``gib`` GiB (see CUDA_RESERVED_BYTES)."""
    return (gib * GIB - CUDA_RESERVED_BYTES) * (1 - ALLOCATOR_SLACK)


def largest_micro_batch(cfg: Config, precision: str, gib: float, compiled: bool,
                        candidates=(1, 2, 4, 6, 8, 12, 16, 24, 32, 48, 64)) -> int:
    """The largest micro-batch of ``candidates`` whose estimated peak fits a ``gib`` GiB GPU; 0 if none."""
    fits = [b for b in candidates
            if estimate(cfg, precision, "cuda", micro_batch=b).total(compiled) <= usable_bytes(gib)]
    return max(fits, default=0)


def measure_saved_bytes(model: GPT, idx: torch.Tensor, targets: torch.Tensor, precision: str,
                        return_logits: bool, forward=None) -> tuple[int, torch.Tensor]:
    """(bytes autograd keeps from a training forward of ``model`` to its backward, the loss): every
    storage a saved tensor lives in, counted once, parameters left out (they are held anyway).
    ``forward``: what to call (the model itself, or ``torch.compile(model)``: the saved-tensor hooks
    see a compiled graph's saved tensors too). The graph lives as long as the returned loss."""
    forward = model if forward is None else forward
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    amp = torch.autocast(idx.device.type, dtype=dtype) if dtype else contextlib.nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), amp:
        loss = forward(idx, targets, return_logits=return_logits)[1]
    return sum(kept.values()), loss


def tensors_in(state) -> list[torch.Tensor]:
    """Every tensor in a (nested) state dict: an optimizer's state, for :func:`measure_peak_bytes`."""
    if torch.is_tensor(state):
        return [state]
    if isinstance(state, dict):
        return [t for v in state.values() for t in tensors_in(v)]
    if isinstance(state, (list, tuple)):
        return [t for v in state for t in tensors_in(v)]
    return []


def measure_peak_bytes(step, held: list[torch.Tensor], device: torch.device) -> int:
    """Peak bytes on ``device`` while ``step()`` runs: the storages of ``held`` (what exists before it and
    lives through it: weights, grads, optimizer state), counted once, plus the most the step itself has
    allocated at any moment, from the "Total Allocated" of torch's profiler's memory events (which on
    CPU count blocks allocated since profiling started)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in held if t.device == device}
    with torch.profiler.profile(profile_memory=True) as prof:
        step()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(path))
        events = json.loads(path.read_text())["traceEvents"]
    device_type = 0 if device.type == "cpu" else 1  # the trace's "Device Type": c10's DeviceType (CPU 0, CUDA 1)
    totals = [e["args"]["Total Allocated"] for e in events
              if e.get("name") == "[memory]" and e["args"].get("Device Type") == device_type]
    return sum(storages.values()) + max(totals, default=0)
