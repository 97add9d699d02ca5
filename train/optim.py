"""The optimizer and the learning-rate schedule: what ``train()`` steps with.

``build_optimizer(model, cfg, device)`` returns the optimizer with its parameter groups;
``get_lr(step, ...)`` is the schedule, a pure function of the step. The trainer sets each group's
``lr`` from it before every optimizer step.
"""
from __future__ import annotations

import math

import torch

from train.config import Config
from train.model import GPT


def get_lr(step: int, lr: float, warmup_steps: int, max_steps: int, min_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps`` to ``lr``, then cosine decay to ``lr * min_lr_ratio`` at max_steps."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def build_optimizer(model: GPT, cfg: Config, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not biases, norms or embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.dim() >= 2 and "emb" not in name else no_decay).append(p)
    t = cfg.training
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=(t.beta1, t.beta2), fused=device.type == "cuda")
