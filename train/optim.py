"""The optimizer and the learning-rate schedule: what ``train()`` steps with.

``build_optimizer(model, cfg, device)`` returns the optimizer with its parameter groups, per
``training.optimizer``:

* ``adamw`` (GPT-2's recipe): AdamW on everything, weight decay on the block and head matrices only;
* ``muon``: ``torch.optim.Muon`` on the blocks' 2-D matrices (attention and MLP weights), whose update
  is the momentum orthogonalized by Newton-Schulz iterations, so every direction of a matrix moves at
  the same rate; AdamW on what is not a hidden matrix (the embedding, an untied head, norm weights
  and biases), each of those groups with its own learning rate. Both are one :class:`MuonAdamW`.

``get_lr(step, lr, ...)`` is the schedule, a pure function of the step: linear warmup, then cosine
decay (``training.schedule=cosine``) or warmup-stable-decay (``wsd``: the peak until the last
``training.decay_fraction`` of the steps, then a linear decay). ``set_lr(optimizer, step, ...)``
gives every group its own peak scaled by it; the trainer calls it before every optimizer step.
"""
from __future__ import annotations

import math

import torch

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


class MuonAdamW:
    """``torch.optim.Muon`` on the hidden matrices and ``torch.optim.AdamW`` on the rest, as one optimizer.

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
    muon = torch.optim.Muon([{"params": named["muon"], "name": "muon"}], lr=t.muon_lr, weight_decay=t.weight_decay,
                            momentum=t.muon_momentum, nesterov=True)
    adam_groups = [{"params": params, "name": name, "weight_decay": 0.0}
                   for name, params in named.items() if name != "muon" and params]
    adamw = torch.optim.AdamW(adam_groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=fused)
    return MuonAdamW(muon, adamw)
