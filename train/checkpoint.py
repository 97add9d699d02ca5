"""Checkpoints of a run directory: atomic writes, exact resume, and loading a trained model elsewhere.

Layout::

    RUN/config.json                       the resolved config (model.vocab_size included)
    RUN/tokenizer.json                    copied from the dataset, so the run is self-contained
    RUN/checkpoints/step_00001000/
        model.safetensors                 weights (no "_orig_mod." / "module." prefixes)
        trainer_state.pt                  optimizer and GradScaler state dicts
        rng.pt                            Python, NumPy, torch CPU and CUDA RNG states of every rank
        state.json                        step, tokens, loader state, fingerprints, losses, time
        config.json                       the resolved config
    RUN/checkpoints/latest                the name of the newest complete checkpoint (written last)
    RUN/checkpoints/best                  the name of the one with the lowest val loss

A checkpoint is written into ``.tmp_step_XXXXXXXX`` and renamed into place; only then is ``latest``
rewritten (atomically), so a run killed at any moment leaves the previous checkpoint intact and named.
Everything loads with safetensors or ``torch.load(weights_only=True)``: no pickled objects.

For other tools (generation, evaluation, export)::

    path = find_checkpoint("runs/demo", which="best")          # or "latest"; a checkpoint dir is returned as is
    model, model_config, tokenizer_path = load_model("runs/demo", device="cpu")
"""
from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import shards
from train.model import GPT, ModelConfig

CHECKPOINT_DIR = "checkpoints"
WEIGHTS_NAME = "model.safetensors"
TRAINER_STATE_NAME = "trainer_state.pt"
RNG_NAME = "rng.pt"
STATE_NAME = "state.json"
CONFIG_NAME = "config.json"
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile's OptimizedModule, DistributedDataParallel


class CheckpointError(Exception):
    """A missing or unusable checkpoint; the message says what to do."""


def step_name(step: int) -> str:
    return f"step_{step:08d}"


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def clean_state_dict(state: dict) -> dict:
    """Strip compile/DDP prefixes so a state dict loads into a plain model."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_model_state(model: torch.nn.Module, state: dict) -> None:
    """Load weights saved from a plain, compiled or DDP model into a plain, compiled or DDP one."""
    unwrap(model).load_state_dict(clean_state_dict(state))


# ---------------------------------------------------------------------------------------------------
# RNG states as tensors and lists (loadable with weights_only=True)

def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------------
# writing

def write_text_atomic(path: Path, text: str) -> None:
    shards.atomic_write_bytes(path, text.encode("utf-8"))


def save_checkpoint(run_dir: Path, step: int, model: torch.nn.Module, optimizer, scaler, state: dict,
                    config: dict, rng_states: list[dict], keep: int, is_best: bool) -> Path:
    """Write ``RUN/checkpoints/step_XXXXXXXX`` atomically, point ``latest`` (and ``best``) at it, prune.

    ``state`` is the JSON-able trainer state (step, tokens, loader, fingerprints, losses);
    ``rng_states`` holds one RNG state per rank. Called on rank 0 only.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    name = step_name(step)
    final, tmp = root / name, root / f".tmp_{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        weights = {k: v.detach().contiguous().cpu() for k, v in clean_state_dict(unwrap(model).state_dict()).items()}
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"step": str(step)})
        torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else {}},
                   tmp / TRAINER_STATE_NAME)
        torch.save({"ranks": rng_states}, tmp / RNG_NAME)
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            # the same step saved again holds the same weights and state: keep the complete one on disk
            # (deleting it first would leave `latest` pointing at nothing if killed in between)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if is_best:
        write_text_atomic(root / "best", name + "\n")
    write_text_atomic(root / "latest", name + "\n")
    prune(root, keep)
    return final


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints and the best one, and leftover temporaries."""
    protected = {_read_pointer(root, "best"), _read_pointer(root, "latest")}
    steps = sorted(p for p in root.glob("step_*") if p.is_dir())
    for p in steps[: max(0, len(steps) - keep)]:
        if p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp_step_*"):
        shutil.rmtree(p, ignore_errors=True)


def _read_pointer(root: Path, which: str) -> str | None:
    path = root / which
    if not path.exists():
        return None
    name = path.read_text(encoding="utf-8").strip()
    return name or None


# ---------------------------------------------------------------------------------------------------
# reading

def find_checkpoint(path: str | os.PathLike, which: str = "latest") -> Path:
    """The checkpoint directory for a run directory (``which`` = "latest" or "best") or a checkpoint dir.

    "best" falls back to "latest" when the run has not evaluated yet. Raises CheckpointError when the
    path holds no complete checkpoint.
    """
    if which not in ("latest", "best"):
        raise ValueError(f"which must be 'latest' or 'best', not {which!r}")
    path = Path(path)
    if (path / WEIGHTS_NAME).exists():
        return path
    root = path / CHECKPOINT_DIR
    name = _read_pointer(root, which) or (_read_pointer(root, "latest") if which == "best" else None)
    if name is None:
        raise CheckpointError(f"{path} has no complete checkpoint (no {root / 'latest'}); pass a run directory "
                              f"written by `python -m train` or a checkpoint directory holding {WEIGHTS_NAME}")
    ckpt = root / name
    if not (ckpt / WEIGHTS_NAME).exists():
        raise CheckpointError(f"{root / which} names {name}, but {ckpt / WEIGHTS_NAME} is missing; the run "
                              f"directory was changed by hand: point {root / which} at an existing step_* dir")
    return ckpt


def read_state(ckpt: Path) -> dict:
    return json.loads((ckpt / STATE_NAME).read_text(encoding="utf-8"))


def read_model_config(ckpt: Path) -> ModelConfig:
    cfg = json.loads((ckpt / CONFIG_NAME).read_text(encoding="utf-8"))
    return ModelConfig(**cfg["model"])


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               which: str = "best") -> tuple[GPT, ModelConfig, Path]:
    """A trained model in eval mode, its ModelConfig, and the run's tokenizer.json path.

    ``path`` is a run directory (its ``which`` checkpoint is used, "best" by default) or a checkpoint
    directory. The tokenizer is ``RUN/tokenizer.json`` (the dataset's, copied at the start of the run).
    """
    ckpt = find_checkpoint(path, which)
    model_cfg = read_model_config(ckpt)
    model = GPT(model_cfg)
    model.load_state_dict(clean_state_dict(load_file(str(ckpt / WEIGHTS_NAME))))
    model.to(device).eval()
    tokenizer_path = ckpt.parent.parent / shards.TOKENIZER_NAME
    if not tokenizer_path.exists():
        raise CheckpointError(f"{tokenizer_path} is missing; copy the dataset's {shards.TOKENIZER_NAME} there")
    return model, model_cfg, tokenizer_path


def load_training_state(ckpt: Path, model: torch.nn.Module, optimizer, scaler, rank: int) -> tuple[dict, dict]:
    """Restore model, optimizer and scaler in place; returns (state.json, this rank's RNG state or {})."""
    load_model_state(model, load_file(str(ckpt / WEIGHTS_NAME), device="cpu"))
    trainer = torch.load(ckpt / TRAINER_STATE_NAME, map_location="cpu", weights_only=True)
    optimizer.load_state_dict(trainer["optimizer"])
    if scaler is not None and trainer["scaler"]:
        scaler.load_state_dict(trainer["scaler"])
    ranks = torch.load(ckpt / RNG_NAME, map_location="cpu", weights_only=True)["ranks"]
    return read_state(ckpt), (ranks[rank] if rank < len(ranks) else {})
