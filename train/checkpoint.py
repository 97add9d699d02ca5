"""Checkpoints of a run directory: one mapping of named parts, written atomically in the background,
verified once, resumed exactly; and loading a trained model elsewhere.

A checkpoint is a mapping ``{name: part}``; each part has ``state_dict()`` / ``load_state_dict()``
(torchtitan's ``CheckpointManager(states=...)``). The trainer names its parts in one place
(``checkpoint_parts`` in train/trainer.py: model, optimizer, scaler, loader, train state, RNG,
fingerprints, process, config); adding one (EMA weights, say) is one line there. How a part is stored
follows from its state dict: flat tensors go to ``NAME.safetensors``, anything else holding tensors to
``NAME.pt`` (``torch.save``, loaded with ``weights_only=True``), everything else to ``NAME.json``.

Layout::

    RUN/config.json                       the resolved config (model.vocab_size included)
    RUN/tokenizer.json                    copied from the dataset, so the run is self-contained
    RUN/checkpoints/step_00001000/
        state.json                        the index: {"format_version": 2, "step": N, "parts": {name: file}}
        model.safetensors                 weights (no "_orig_mod." / "module." prefixes)
        optimizer.pt, rng.pt              optimizer state; Python, NumPy, torch CPU/CUDA RNG of every rank
        config.json, train_state.json,    the JSON parts
        loader.json, fingerprints.json, process.json
        checksums.json                    {"sha256": {file: digest}} of the files above, written last
    RUN/checkpoints/best_step_00000900/   the best weights so far (model.safetensors, config.json, ...),
                                          when the best evaluation fell between checkpoints
    RUN/checkpoints/latest                the name of the newest complete checkpoint (written last)
    RUN/checkpoints/best                  the name of the directory holding the best weights

A checkpoint is written into ``.tmp_step_XXXXXXXX`` and renamed into place; only then is ``latest``
rewritten (atomically), so a run killed at any moment leaves the previous checkpoint intact and named.
Writing does not stall training: :func:`snapshot` copies every part's state to host memory (pinned,
reused, copied on the device's stream, so training goes on at once) and a :class:`Writer` thread
serialises, hashes, fsyncs and renames it while the next steps run; one write is in flight at a time.
Everything loads with safetensors or ``torch.load(weights_only=True)``: no pickled objects.

Integrity: every file is checked against the sha256 recorded when it was written (:func:`verify`) before
it is used, once: :func:`resume_checkpoint` verifies the checkpoint it picks (the one ``latest`` names
if it is complete and intact, else the newest one that is, never nothing while a usable one is there)
and :func:`load` then reads it without hashing again. Checkpoints written before checksums were
recorded load unverified, and the loaders say so. Checkpoints of format 1 (no ``format_version``:
``trainer_state.pt`` and a flat ``state.json``) still load.

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
import sys
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import shards
from train.model import GPT, ModelConfig

FORMAT_VERSION = 2
CHECKPOINT_DIR = "checkpoints"
STEP_PREFIX = "step_"
BEST_PREFIX = "best_step_"  # best weights written between checkpoints
WEIGHTS_NAME = "model.safetensors"
STATE_NAME = "state.json"
CONFIG_NAME = "config.json"
CHECKSUMS_NAME = "checksums.json"
V1_TRAINER_STATE_NAME = "trainer_state.pt"  # format 1: {"optimizer", "scaler"}
SET_ASIDE_PREFIX = "damaged_"  # a damaged checkpoint newer than the one resumed from is renamed with it
WRAPPER_PREFIXES = ("_orig_mod.", "module.")  # torch.compile's OptimizedModule, DistributedDataParallel


class CheckpointError(shards.PipelineError):
    """A missing or unusable checkpoint; the message says what to do."""


def step_name(step: int, prefix: str = STEP_PREFIX) -> str:
    return f"{prefix}{step:08d}"


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
# parts

class Stateful(Protocol):
    def state_dict(self) -> Any: ...
    def load_state_dict(self, state: Any) -> None: ...


class Weights:
    """A model as a part: its weights under their plain names, whatever wraps it."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, torch.Tensor]:
        return clean_state_dict(unwrap(self.model).state_dict())

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        load_model_state(self.model, state)


class Record:
    """A JSON-able dict as a part (fingerprints, the config): saved as it is; what a checkpoint held is
    in ``loaded`` after loading (the trainer checks these before it builds anything)."""

    def __init__(self, value: dict):
        self.value, self.loaded = value, None

    def state_dict(self) -> dict:
        return self.value

    def load_state_dict(self, state: dict) -> None:
        self.loaded = state


def rng_state() -> dict:
    """This process's Python, NumPy, torch CPU and CUDA RNG states, as tensors and lists."""
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


class RNG:
    """The RNG states of every process as one part. ``collective``: :func:`snapshot` asks it on every rank
    (its state dict gathers all ranks' states, with ``gather``); each rank restores its own."""
    collective = True

    def __init__(self, rank: int = 0, gather: Callable[[dict], list[dict]] | None = None):
        self.rank, self.gather = rank, gather

    def state_dict(self) -> dict:
        mine = rng_state()
        return {"ranks": self.gather(mine) if self.gather else [mine]}

    def load_state_dict(self, state: dict) -> None:
        ranks = state["ranks"]
        if self.rank < len(ranks) and ranks[self.rank]:
            set_rng_state(ranks[self.rank])


# ---------------------------------------------------------------------------------------------------
# writing: a snapshot on the training thread, the files in a background thread

def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if torch.is_tensor(obj):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def storage_of(name: str, state: Any) -> str:
    """The file a part's state is stored in: ``NAME.safetensors`` for flat tensors, ``NAME.pt`` for
    anything else holding tensors or not surviving JSON unchanged (int keys), else ``NAME.json``."""
    if isinstance(state, Mapping) and state and all(torch.is_tensor(v) for v in state.values()):
        return f"{name}.safetensors"
    if next(_tensors(state), None) is None:
        try:
            if json.loads(json.dumps(state)) == state:
                return f"{name}.json"
        except (TypeError, ValueError):
            pass
    return f"{name}.pt"


class HostCopies:
    """Host buffers for snapshots, reused from one checkpoint to the next (pinned when the tensors are on
    a GPU, so copies run asynchronously on the device's stream). One snapshot is written at a time, so a
    buffer is free again once the previous write is done."""

    def __init__(self):
        self._buffers: dict[tuple, torch.Tensor] = {}

    def copy(self, obj: Any, path: tuple = ()) -> Any:
        if torch.is_tensor(obj):
            src = obj.detach()
            key = (*path, tuple(src.shape), src.dtype)
            buf = self._buffers.get(key)
            if buf is None:
                buf = torch.empty(src.shape, dtype=src.dtype, pin_memory=src.is_cuda)
                self._buffers[key] = buf
            buf.copy_(src, non_blocking=src.is_cuda)
            return buf
        if isinstance(obj, Mapping):
            return {k: self.copy(v, (*path, k)) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return type(obj)(self.copy(v, (*path, i)) for i, v in enumerate(obj))
        return obj


def snapshot(parts: Mapping[str, Stateful | None], main: bool, copies: HostCopies) -> dict[str, Any] | None:
    """Every part's state, with tensors copied to host memory: what a :class:`Writer` writes while
    training goes on. Called on every rank (collective parts gather there); None on ranks other than 0.
    Copies from a GPU are queued on its stream, before any later step's kernels: the writer waits for
    them (``snap["_ready"]``), training does not."""
    states = {name: part.state_dict() for name, part in parts.items()
              if part is not None and (main or getattr(part, "collective", False))}
    if not main:
        return None
    snap = {name: copies.copy(state, (name,)) for name, state in states.items()}
    if torch.cuda.is_available() and any(t.is_pinned() for t in _tensors(snap)):
        event = torch.cuda.Event()
        event.record()
        snap["_ready"] = event
    return snap


def write(run_dir: Path, step: int, snap: dict[str, Any], keep: int, pointers: Iterable[str] = ("latest",),
          prefix: str = STEP_PREFIX) -> Path:
    """Write ``snap`` as ``RUN/checkpoints/PREFIXXXXXXXXX`` atomically, point ``pointers`` at it, prune.

    Each part goes to the file :func:`storage_of` names; ``state.json`` indexes them; ``checksums.json``
    (written last, before the rename) holds the sha256 of every file. Called on rank 0 only."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    ready = snap.pop("_ready", None)
    if ready is not None:
        ready.synchronize()  # the copies from the device are in host memory
    name = step_name(step, prefix)
    final, tmp = root / name, root / f".tmp_{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    files = {part: storage_of(part, state) for part, state in snap.items()}
    try:
        tmp.mkdir()
        for part, state in snap.items():
            path = tmp / files[part]
            if path.suffix == ".safetensors":
                save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"step": str(step)})
            elif path.suffix == ".json":
                path.write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
            else:
                # through a file this function opens and closes: when a write fails (a full disk), torch.save
                # given a path leaves its file open, holding the space of the deleted partial file
                with open(path, "wb") as f:
                    torch.save(state, f)
        index = {"format_version": FORMAT_VERSION, "step": step, "parts": files}
        (tmp / STATE_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
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
            needed = sum(t.numel() * t.element_size() for t in _tensors(snap))
            _raise_if_out_of_space(e, root, name, needed, keep)
        raise
    try:
        for pointer in pointers:
            write_text_atomic(root / pointer, name + "\n")
    except OSError as e:
        _raise_if_out_of_space(e, root, name, 1 << 20, keep)
        raise
    prune(root, keep)
    return final


class Writer:
    """Runs checkpoint writes in a background thread, one at a time.

    ``submit(job)`` first waits for the previous job and re-raises its error (so the host buffers it
    used are free, and a failed write is reported at the next checkpoint at the latest); ``wait()``
    waits for the last one and returns what it returned. With ``background=False`` each job runs at
    once on the caller's thread (what a benchmark compares against)."""

    def __init__(self, background: bool = True):
        self.background = background
        self._thread: threading.Thread | None = None
        self._result: Any = None
        self._error: BaseException | None = None

    def submit(self, job: Callable[[], Any]) -> None:
        self.wait()
        if not self.background:
            self._result = job()
            return

        def run():
            try:
                self._result = job()
            except BaseException as e:  # re-raised on the training thread by wait()
                self._error = e
        self._thread = threading.Thread(target=run, name="checkpoint-writer", daemon=False)
        self._thread.start()

    @property
    def busy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> Any:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return self._result

    def join(self) -> None:
        """Let the write in flight finish, whatever ends the run. Its failure, if not reported yet, is
        printed rather than raised: the run is ending already, perhaps on another error."""
        try:
            self.wait()
        except Exception as e:
            print(f"error: the last checkpoint was not written: {e}", file=sys.stderr)


def write_text_atomic(path: Path, text: str) -> None:
    shards.atomic_write_bytes(path, text.encode("utf-8"))


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
    """Delete all but the newest ``keep`` checkpoints, best weights no pointer names, and leftover temporaries."""
    protected = {_read_pointer(root, "best"), _read_pointer(root, "latest")}
    steps = sorted(p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir())
    for p in steps[: max(0, len(steps) - keep)]:
        if p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f"{BEST_PREFIX}*"):
        if p.is_dir() and p.name not in protected:
            shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(".tmp_*"):
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


def read_index(ckpt: Path) -> dict:
    """A checkpoint's ``state.json``: ``{"format_version", "step", "parts": {name: file}}`` (checked against its
    sha256). For a format-1 checkpoint the index is made from its files, its flat state under "v1_state"."""
    ckpt = Path(ckpt)
    verify(ckpt, [STATE_NAME])
    with reading(ckpt / STATE_NAME):
        state = json.loads((ckpt / STATE_NAME).read_text(encoding="utf-8"))
        version = state.get("format_version", 1)
        if version == 1:
            files = {"model": WEIGHTS_NAME, "optimizer": V1_TRAINER_STATE_NAME, "scaler": V1_TRAINER_STATE_NAME,
                     "rng": "rng.pt", "config": CONFIG_NAME, "train_state": STATE_NAME, "loader": STATE_NAME,
                     "fingerprints": STATE_NAME, "process": STATE_NAME}
            return {"format_version": 1, "step": state["step"], "parts": files, "v1_state": state}
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise CheckpointError(f"{ckpt} has checkpoint format {version!r}, newer than this version of the project "
                                  f"reads ({FORMAT_VERSION}); update the project to resume or load it")
        if not isinstance(state.get("parts"), dict):
            raise ValueError("no parts index")
        return state


def _read_file(path: Path) -> Any:
    with reading(path):
        if path.suffix == ".safetensors":
            return load_file(str(path), device="cpu")
        if path.suffix == ".json":
            return json.loads(path.read_text(encoding="utf-8"))
        return torch.load(path, map_location="cpu", weights_only=True)


def _read_v1_part(ckpt: Path, name: str, v1_state: dict) -> Any:
    if name in ("optimizer", "scaler"):
        return _read_file(ckpt / V1_TRAINER_STATE_NAME)[name]
    if name == "train_state":
        return v1_state
    if name == "loader":
        return v1_state["loader"]
    if name == "fingerprints":
        return {k: v1_state.get(k) for k in ("dataset_fingerprint", "tokenizer_fingerprint", "eot_id")}
    if name == "process":
        return {"world_size": v1_state.get("world_size", 1), "precision": v1_state.get("precision")}
    return _read_file(ckpt / {"model": WEIGHTS_NAME, "rng": "rng.pt", "config": CONFIG_NAME}[name])


def read_part(ckpt: Path, name: str, index: dict | None = None, verified: bool = False) -> Any:
    """The state of part ``name`` as saved (its file checked against its sha256 unless ``verified``)."""
    ckpt = Path(ckpt)
    index = index or read_index(ckpt)
    if name not in index["parts"]:
        raise CheckpointError(f"{ckpt} has no {name!r} part (it holds {', '.join(index['parts'])}); it was written "
                              f"with other settings. Resume with the settings the run was started with")
    if not verified:
        verify(ckpt, [index["parts"][name]])
    if index["format_version"] == 1:
        with reading(ckpt / index["parts"][name]):
            return _read_v1_part(ckpt, name, index["v1_state"])
    return _read_file(ckpt / index["parts"][name])


def load(ckpt: Path, parts: Mapping[str, Stateful | None], verified: bool = False) -> dict:
    """Restore every part (None parts are skipped) from ``ckpt`` in place; returns its index.

    ``verified``: ``ckpt`` came from :func:`resume_checkpoint`, which checked every file: nothing is
    hashed again. A part the checkpoint lacks, or one that does not fit, is a CheckpointError naming it."""
    ckpt = Path(ckpt)
    index = read_index(ckpt)
    for name, part in parts.items():
        if part is None:
            continue
        state = read_part(ckpt, name, index, verified)
        try:
            part.load_state_dict(state)
        except (KeyError, ValueError, RuntimeError, TypeError) as e:
            raise CheckpointError(f"{ckpt}: its {name!r} part does not fit this run ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}); resume with the settings the run "
                                  f"was started with, or start a new run") from None
    return index


def read_state(ckpt: Path) -> dict:
    """The training state a checkpoint holds (step, tokens, losses, time)."""
    return read_part(ckpt, "train_state")


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
    directory whose files are all there and intact. Every file of the one returned has been checked
    against its sha256 (load it with ``verified=True``). (None, []) when the directory holds no
    checkpoint; a CheckpointError listing every problem when it holds some but none is usable: a run is
    never silently restarted from step 0 beside checkpoints it would then prune.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    if not root.is_dir():
        return None, []
    latest = _read_pointer(root, "latest")
    steps = sorted((p for p in root.glob(f"{STEP_PREFIX}*") if p.is_dir()), reverse=True)
    candidates = ([root / latest] if latest else []) + [p for p in steps if p.name != latest]
    passed_over = []
    for candidate in candidates:
        if not candidate.is_dir():
            problem = f"{root / 'latest'} names {candidate.name}, which is missing"
        else:
            try:
                verify(candidate, sorted(set(read_index(candidate)["parts"].values())))
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
