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
        checksums.json                    {"sha256": {file: digest}} of the files above, written last
    RUN/checkpoints/latest                the name of the newest complete checkpoint (written last)
    RUN/checkpoints/best                  the name of the one with the lowest val loss

A checkpoint is written into ``.tmp_step_XXXXXXXX`` and renamed into place; only then is ``latest``
rewritten (atomically), so a run killed at any moment leaves the previous checkpoint intact and named.
Everything loads with safetensors or ``torch.load(weights_only=True)``: no pickled objects.

Integrity: every file read from a checkpoint is first checked against the sha256 recorded when it was
written (:func:`verify`), so a flipped byte or a file cut short is named instead of being trained on
or surfacing later as a NaN. Checkpoints written before checksums were recorded load unverified, and
the loaders say so. :func:`resume_checkpoint` picks what a run continues from: the checkpoint
``latest`` names if it is complete and intact, else the newest one that is, never nothing while a
usable one is there.

For other tools (generation, evaluation, export)::

    path = find_checkpoint("runs/demo", which="best")          # or "latest"; a checkpoint dir is returned as is
    model, model_config, tokenizer_path = load_model("runs/demo", device="cpu")
"""
from __future__ import annotations

import errno
import json
import os
import random
import shutil
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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
CHECKSUMS_NAME = "checksums.json"
TRAINING_FILES = (WEIGHTS_NAME, TRAINER_STATE_NAME, RNG_NAME, STATE_NAME, CONFIG_NAME)  # what resume reads
SET_ASIDE_PREFIX = "damaged_"  # a damaged checkpoint newer than the one resumed from is renamed with it
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile's OptimizedModule, DistributedDataParallel


class CheckpointError(shards.PipelineError):
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
    try:
        tmp.mkdir()
        weights = {k: v.detach().contiguous().cpu() for k, v in clean_state_dict(unwrap(model).state_dict()).items()}
        save_file(weights, str(tmp / WEIGHTS_NAME), metadata={"step": str(step)})
        # through files this function opens and closes: when a write fails (a full disk), torch.save given
        # a path leaves its file open, holding the space of the deleted partial file
        with open(tmp / TRAINER_STATE_NAME, "wb") as f:
            torch.save({"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else {}}, f)
        with open(tmp / RNG_NAME, "wb") as f:
            torch.save({"ranks": rng_states}, f)
        (tmp / STATE_NAME).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        digests = {f.name: shards.sha256_file(f) for f in sorted(tmp.iterdir())}
        (tmp / CHECKSUMS_NAME).write_text(json.dumps({"sha256": digests}, indent=2) + "\n", encoding="utf-8")
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if final.exists():
            # the same step saved again holds the same weights and state: keep the complete one on disk
            # (deleting it first would leave `latest` pointing at nothing if killed in between)
            shutil.rmtree(tmp)
        else:
            os.replace(tmp, final)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):
            _raise_if_out_of_space(e, root, name, checkpoint_bytes(model, optimizer), keep)
        raise
    try:
        if is_best:
            write_text_atomic(root / "best", name + "\n")
        write_text_atomic(root / "latest", name + "\n")
    except OSError as e:
        _raise_if_out_of_space(e, root, name, 1 << 20, keep)
        raise
    prune(root, keep)
    return final


def checkpoint_bytes(model: torch.nn.Module, optimizer) -> int:
    """About what one checkpoint takes on disk: the bytes of the weights and the optimizer state."""
    n = sum(t.numel() * t.element_size() for t in unwrap(model).state_dict().values())
    for per_param in optimizer.state_dict()["state"].values():
        n += sum(v.numel() * v.element_size() for v in per_param.values() if torch.is_tensor(v))
    return n


def _human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _raise_if_out_of_space(error: Exception, root: Path, name: str, needed: int, keep: int) -> None:
    """A CheckpointError saying how much space is needed and what to do, when ``error`` came from a full
    disk: ENOSPC/EDQUOT, or (PyTorch and safetensors report it in their own words, e.g. "unexpected pos")
    less free space than the checkpoint needs, measured after its partial files were removed."""
    free = shutil.disk_usage(root).free
    if not (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)) and free >= needed:
        return
    latest = _read_pointer(root, "latest")
    resume = (f"it resumes from {latest}, which is intact" if latest else
              "it starts again from step 0, as no checkpoint was complete yet")
    raise CheckpointError(
        f"no space left on the filesystem of {root} for checkpoint {name}: it needs about {_human_bytes(needed)}, "
        f"{_human_bytes(free)} are free. Each checkpoint takes about that much; the run keeps "
        f"training.keep_checkpoints={keep} of them plus the best, and writes the next before pruning. Free space "
        f"there (other runs, damaged_step_* directories), lower training.keep_checkpoints, or move the run directory "
        f"to a bigger disk, then rerun the same command: {resume}. "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from error


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
    try:
        name = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:  # a damaged pointer names nothing; resume_checkpoint looks at the step_* dirs
        return None
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


def recorded_checksums(ckpt: Path) -> dict[str, str] | None:
    """{file name: sha256} recorded when ``ckpt`` was written; None for a checkpoint written before
    checksums were recorded."""
    path = Path(ckpt) / CHECKSUMS_NAME
    if not path.exists():
        return None
    try:
        digests = json.loads(path.read_text(encoding="utf-8"))["sha256"]
        if not (isinstance(digests, dict) and all(isinstance(v, str) for v in digests.values())):
            raise ValueError("not a {file: digest} object")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is damaged ({e}), so the checkpoint's files cannot be checked; use "
                              f"another checkpoint of the run, or restore {path} from a copy") from None
    return digests


def verify(ckpt: Path, names: Iterable[str]) -> bool:
    """Check the files ``names`` of ``ckpt`` against the sha256 recorded when it was written; raise
    CheckpointError naming the first one that is missing or changed. Returns False, checking only that
    the files exist, for a checkpoint written before checksums were recorded."""
    ckpt = Path(ckpt)
    digests = recorded_checksums(ckpt)
    for name in names:
        path = ckpt / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing, so {ckpt} is incomplete; use another checkpoint of the run")
        if digests is None:
            continue
        if name not in digests:
            raise CheckpointError(f"{path} is not listed in {ckpt / CHECKSUMS_NAME}; the checkpoint was changed "
                                  f"after it was written. Use another checkpoint of the run")
        if shards.sha256_file(path) != digests[name]:
            raise CheckpointError(f"{path} does not match the sha256 recorded when the checkpoint was written "
                                  f"({CHECKSUMS_NAME}): the file is damaged (a disk error, a copy cut short, an "
                                  f"edit). Use another checkpoint of the run, or restore the file from a copy")
    return digests is not None


@contextmanager
def reading(path: Path) -> Iterator[None]:
    """Report a file that does not parse as a CheckpointError naming it. (PyTorch's own message for a
    failed weights_only load suggests weights_only=False, which would run code from the file: never that.)"""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as e:
        raise CheckpointError(f"{path} cannot be read ({type(e).__name__}): it is damaged or was not written "
                              f"by this project. Use another checkpoint of the run, or restore the file from "
                              f"a copy") from None


def read_state(ckpt: Path) -> dict:
    ckpt = Path(ckpt)
    verify(ckpt, [STATE_NAME])
    with reading(ckpt / STATE_NAME):
        return json.loads((ckpt / STATE_NAME).read_text(encoding="utf-8"))


def read_config(ckpt: Path) -> dict:
    """The resolved config a checkpoint was trained with (all sections), as saved."""
    ckpt = Path(ckpt)
    verify(ckpt, [CONFIG_NAME])
    with reading(ckpt / CONFIG_NAME):
        return json.loads((ckpt / CONFIG_NAME).read_text(encoding="utf-8"))


def read_model_config(ckpt: Path) -> ModelConfig:
    config = read_config(ckpt)
    with reading(Path(ckpt) / CONFIG_NAME):
        return ModelConfig(**config["model"])


def resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The checkpoint a run directory continues from, and the ones passed over with what is wrong with each.

    The one ``latest`` names comes first; if it is missing, incomplete or damaged, the newest ``step_*``
    directory whose files are all there and intact. (None, []) when the directory holds no checkpoint;
    a CheckpointError listing every problem when it holds some but none is usable: a run is never
    silently restarted from step 0 beside checkpoints it would then prune.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None, []
    latest = _read_pointer(root, "latest")
    steps = sorted((p for p in root.glob("step_*") if p.is_dir()), reverse=True)
    candidates = ([root / latest] if latest else []) + [p for p in steps if p.name != latest]
    passed_over = []
    for candidate in candidates:
        if not candidate.is_dir():
            problem = f"{root / 'latest'} names {candidate.name}, which is missing"
        else:
            try:
                verify(candidate, TRAINING_FILES)
                read_state(candidate)
                problem = None
            except CheckpointError as e:
                problem = str(e)
        if problem is None:
            return candidate, passed_over
        passed_over.append((candidate, problem))
    if passed_over:
        problems = "; ".join(f"{p.name}: {problem}" for p, problem in passed_over)
        raise CheckpointError(f"refusing to start {run_dir} from scratch: it holds checkpoints, but none is usable "
                              f"({problems}). Restore the damaged files, or start a new run with another --out "
                              f"(or move {root} away)")
    return None, []


def set_aside(ckpt: Path) -> Path:
    """Rename a damaged checkpoint to ``damaged_step_XXXXXXXX`` (kept for inspection, never loaded or
    pruned), so that training past its step writes a fresh one; drop ``best`` if it named it."""
    root = ckpt.parent
    target = root / f"{SET_ASIDE_PREFIX}{ckpt.name}"
    n = 1
    while target.exists():
        target, n = root / f"{SET_ASIDE_PREFIX}{ckpt.name}.{n}", n + 1
    os.replace(ckpt, target)
    if _read_pointer(root, "best") == ckpt.name:
        (root / "best").unlink()
    return target


def point_latest(ckpt: Path) -> None:
    """Make ``latest`` name ``ckpt`` (after falling back to it)."""
    write_text_atomic(ckpt.parent / "latest", ckpt.name + "\n")


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu",
               which: str = "best") -> tuple[GPT, ModelConfig, Path]:
    """A trained model in eval mode, its ModelConfig, and the run's tokenizer.json path.

    ``path`` is a run directory (its ``which`` checkpoint is used, "best" by default) or a checkpoint
    directory. The tokenizer is ``RUN/tokenizer.json`` (the dataset's, copied at the start of the run).
    """
    ckpt = find_checkpoint(path, which)
    if not verify(ckpt, [WEIGHTS_NAME, CONFIG_NAME]):
        warnings.warn(f"{ckpt} has no {CHECKSUMS_NAME} (it was written before checkpoints recorded checksums): "
                      f"loading it unverified", stacklevel=2)
    model_cfg = read_model_config(ckpt)
    model = GPT(model_cfg)
    with reading(ckpt / WEIGHTS_NAME):
        model.load_state_dict(clean_state_dict(load_file(str(ckpt / WEIGHTS_NAME))))
    model.to(device).eval()
    tokenizer_path = ckpt.parent.parent / shards.TOKENIZER_NAME
    if not tokenizer_path.exists():
        raise CheckpointError(f"{tokenizer_path} is missing; copy the dataset's {shards.TOKENIZER_NAME} there")
    return model, model_cfg, tokenizer_path


def load_training_state(ckpt: Path, model: torch.nn.Module, optimizer, scaler, rank: int) -> tuple[dict, dict]:
    """Restore model, optimizer and scaler in place; returns (state.json, this rank's RNG state or {}).

    Every file is checked against its recorded sha256 first (CheckpointError naming a damaged one)."""
    ckpt = Path(ckpt)
    verify(ckpt, TRAINING_FILES)
    with reading(ckpt / WEIGHTS_NAME):
        load_model_state(model, load_file(str(ckpt / WEIGHTS_NAME), device="cpu"))
    with reading(ckpt / TRAINER_STATE_NAME):
        trainer = torch.load(ckpt / TRAINER_STATE_NAME, map_location="cpu", weights_only=True)
        optimizer.load_state_dict(trainer["optimizer"])
        if scaler is not None and trainer["scaler"]:
            scaler.load_state_dict(trainer["scaler"])
    with reading(ckpt / RNG_NAME):
        ranks = torch.load(ckpt / RNG_NAME, map_location="cpu", weights_only=True)["ranks"]
    return read_state(ckpt), (ranks[rank] if rank < len(ranks) else {})
