"""The optimizer and the learning-rate schedule: what ``train()`` steps with.

``build_optimizer(model, cfg, device)`` returns the optimizer with its parameter groups, per
``training.optimizer``:

* ``adamw`` (GPT-2's recipe): AdamW on everything, weight decay on the block and head matrices only;
* ``muon``: Muon on the blocks' 2-D matrices (attention and MLP weights), whose update is the momentum
  orthogonalized by Newton-Schulz iterations, so every direction of a matrix moves at the same rate;
  AdamW on what is not a hidden matrix (the embedding, an untied head, norm weights and biases), each
  of those groups with its own learning rate. Both are one :class:`MuonAdamW`. Muon is
  :class:`FusedMuon`: ``torch.optim.Muon``'s update and state dict, with the matrices of one shape
  stacked and orthogonalized together (one Newton-Schulz per shape instead of one per matrix).

``get_lr(step, lr, ...)`` is the schedule, a pure function of the step: linear warmup, then cosine
decay (``training.schedule=cosine``) or warmup-stable-decay (``wsd``: the peak until the last
``training.decay_fraction`` of the steps, then a linear decay). ``set_lr(optimizer, step, ...)``
gives every group its own peak scaled by it; the trainer calls it before every optimizer step.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch
from torch.optim._muon import _adjust_lr

from train.config import Config, TrainingConfig
from train.model import GPT


def get_lr(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float, schedule: str = "cosine",
           decay_fraction: float = 0.2) -> float:
    """The learning rate of ``step`` (0-based) for a peak ``lr``: linear warmup over ``warmup_steps``, then

    * ``cosine``: cosine decay to ``lr * min_lr_ratio`` at max_steps;
    * ``wsd``: ``lr`` until the last ``round(decay_fraction * max_steps)`` steps, then a linear decay that
      reaches ``lr * min_lr_ratio`` at max_steps. One run's stable phase can be decayed from anywhere.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "wsd":
        decay_steps = max(1, round(decay_fraction * max_steps))
        left = max_steps - step  # steps to go, this one included
        if left >= decay_steps:
            return lr
        return lr * (min_lr_ratio + (1 - min_lr_ratio) * max(0, left) / decay_steps)
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def peak_lr(t: TrainingConfig, group: dict) -> float:
    """A parameter group's peak learning rate: Muon's matrices, the embedding and an untied head have
    their own (optimizer=muon names its groups so); everything else takes ``training.lr``."""
    return {"muon": t.muon_lr, "embedding": t.embed_lr, "head": t.head_lr}.get(group.get("name"), t.lr)


def set_lr(optimizer, step: int, t: TrainingConfig, max_steps: int) -> float:
    """Set every group's lr for ``step`` from its peak and the schedule; returns training.lr's value at
    ``step`` (what the trainer logs as ``lr``: the other groups follow the same curve)."""
    for group in optimizer.param_groups:
        group["lr"] = get_lr(step, peak_lr(t, group), t.warmup_steps, max_steps, t.min_lr_ratio, t.schedule,
                             t.decay_fraction)
    return get_lr(step, t.lr, t.warmup_steps, max_steps, t.min_lr_ratio, t.schedule, t.decay_fraction)


def orthogonalize(updates: list[torch.Tensor], coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """Newton-Schulz orthogonalization of same-shape matrices at once: ``updates``, n matrices (rows, cols),
    -> (n, rows, cols) in the updates' dtype, each as ``torch.optim._muon._zeropower_via_newtonschulz``
    computes it: in ``dtype`` (bf16 in Muon), on the wide orientation (a tall matrix is transposed
    first and back last), scaled to Frobenius norm 1, then ``steps`` quintic iterations
    X <- a X + (b G + c G^2) X with G = X X^T."""
    x = torch.stack(updates).to(dtype)  # (n, rows, cols)
    tall = x.size(-2) > x.size(-1)
    if tall:
        x = x.mT
    x = x / torch.linalg.vector_norm(x, dim=(-2, -1), keepdim=True).clamp(min=eps)
    a, b, c = coefficients
    for _ in range(steps):
        gram = x @ x.mT  # (n, short, short)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if tall:
        x = x.mT
    return x.to(updates[0].dtype)


def orthogonalize_groups(groups: list[list[torch.Tensor]], coefficients: tuple[float, float, float], steps: int,
                         eps: float, dtype: torch.dtype) -> list[torch.Tensor]:
    """:func:`orthogonalize` of each group of same-shape matrices; one function, so that compiled it is
    one graph for every shape of a model, compiled once (no recompilation per shape)."""
    return [orthogonalize(group, coefficients, steps, eps, dtype) for group in groups]


_compiled = None


def compiled_orthogonalize_groups():
    """:func:`orthogonalize_groups` compiled, once per process: inductor fuses the stacking, casts and
    norms around the batched matmuls. ``emulate_precision_casts`` rounds to bf16 where the eager code
    does, so the compiled update stays the stock optimizer's to bf16 rounding (measured on CPU: bitwise at
    the tests' small shapes, 0.6% of the movement at 75m_dolma_modern's)."""
    global _compiled
    if _compiled is None:
        _compiled = torch.compile(orthogonalize_groups, dynamic=False, fullgraph=True,
                                  options={"emulate_precision_casts": True})
    return _compiled


class FusedMuon(torch.optim.Muon):
    """``torch.optim.Muon`` with its per-matrix loop replaced by work on all matrices together.

    The same update as the stock optimizer (torch 2.13's ``torch/optim/_muon.py``), step for step:
    momentum ``buf <- lerp(buf, grad, 1 - momentum)``, the Nesterov update ``lerp(grad, buf, momentum)``,
    its Newton-Schulz orthogonalization in bf16, decoupled weight decay ``p <- p (1 - lr wd)``, and
    ``p <- p - lr sqrt(max(1, rows / cols)) O``. The elementwise parts are ``torch._foreach_*`` ops over
    every matrix; the Newton-Schulz runs once per distinct matrix shape on the stacked matrices
    (:func:`orthogonalize`), all shapes in one graph compiled with ``torch.compile`` when ``compile`` is
    true (None: on CUDA, where the stock loop's 23 small kernels per matrix cost launches; eager on CPU,
    where compiling takes tens of seconds). ``tools/bench_muon.py`` counts and times the three.

    Being a ``torch.optim.Muon`` with the same defaults and per-parameter state (``momentum_buffer``),
    its state dict is the stock one: either loads the other's. ``ns_dtype`` is the Newton-Schulz
    precision (bf16 as torch's Muon; float32 for tests of the stacking against an exact reference).
    """

    def __init__(self, params, *, compile: bool | None = None, ns_dtype: torch.dtype = torch.bfloat16, **kwargs):
        super().__init__(params, **kwargs)
        self.compile, self.ns_dtype = compile, ns_dtype

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, bufs = [], [], []
            self._init_group(group, params, grads, bufs)  # creates missing momentum buffers
            if params:
                self._update(group, params, grads, bufs)
        return loss

    def _update(self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor],
                bufs: list[torch.Tensor]) -> None:
        lr, momentum = group["lr"], group["momentum"]
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        updates = torch._foreach_lerp(grads, bufs, momentum) if group["nesterov"] else bufs
        torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        by_shape = defaultdict(list)  # (rows, cols) -> indices into params
        for i, p in enumerate(params):
            by_shape[tuple(p.shape)].append(i)
        compile = params[0].is_cuda if self.compile is None else self.compile
        ortho = compiled_orthogonalize_groups() if compile else orthogonalize_groups
        stacked = ortho([[updates[i] for i in members] for members in by_shape.values()], group["ns_coefficients"],
                        group["ns_steps"], group["eps"], self.ns_dtype)  # per shape: (n, rows, cols)
        for (shape, members), ortho_updates in zip(by_shape.items(), stacked, strict=True):
            torch._foreach_add_([params[i] for i in members], list(ortho_updates.unbind(0)),
                                alpha=-_adjust_lr(lr, group["adjust_lr_fn"], shape))


class MuonAdamW:
    """Muon (:class:`FusedMuon`) on the hidden matrices and ``torch.optim.AdamW`` on the rest, as one optimizer.

    It has what the trainer, ``GradScaler`` and the checkpoints use of an optimizer: ``param_groups``
    (both optimizers' groups, so ``set_lr`` reaches every one), ``step``, ``zero_grad``, ``state_dict``
    and ``load_state_dict``. The state dict holds both states under "muon" and "adamw": tensors and
    numbers only, so it loads with ``torch.load(weights_only=True)``.
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW):
        self.muon, self.adamw = muon, adamw

    @property
    def param_groups(self) -> list[dict]:
        # a property: load_state_dict replaces the groups' dicts, and this always lists the current ones
        return self.muon.param_groups + self.adamw.param_groups

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if set(state) != {"muon", "adamw"}:
            raise ValueError("this optimizer state was not saved by training.optimizer=muon (it has no 'muon' and "
                             "'adamw' parts); resume with the optimizer the run was started with, or start a new run")
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])

    def __repr__(self) -> str:
        return f"MuonAdamW(\n{self.muon!r},\n{self.adamw!r})"


def build_optimizer(model: GPT, cfg: Config, device: torch.device) -> torch.optim.AdamW | MuonAdamW:
    """The optimizer of ``training.optimizer`` with its parameter groups (see the module docstring).

    Weight decay (decoupled: each step multiplies a matrix by ``1 - lr * weight_decay``) applies to the
    blocks' matrices and an untied head under AdamW, to Muon's matrices under Muon; never to biases,
    norms or embeddings.
    """
    t = cfg.training
    fused = device.type == "cuda"
    if t.optimizer == "adamw":
        decay, no_decay = [], []
        for name, p in model.named_parameters():
            (decay if p.dim() >= 2 and "emb" not in name else no_decay).append(p)
        groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)

    named = {"muon": [], "embedding": [], "head": [], "vectors": []}
    for name, p in model.named_parameters():
        if name.startswith("blocks.") and p.dim() == 2:
            named["muon"].append(p)
        elif "emb" in name:
            named["embedding"].append(p)
        elif name.startswith("lm_head."):
            named["head"].append(p)
        else:
            named["vectors"].append(p)  # norm weights and biases
    muon = FusedMuon([{"params": named["muon"], "name": "muon"}], lr=t.muon_lr, weight_decay=t.weight_decay,
                     momentum=t.muon_momentum, nesterov=True)
    adam_groups = [{"params": params, "name": name, "weight_decay": 0.0}
                   for name, params in named.items() if name != "muon" and params]
    adamw = torch.optim.AdamW(adam_groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)
    return MuonAdamW(muon, adamw)
