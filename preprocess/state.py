"""The resumable state of an unfinished build, kept in ``OUT/.build/``.

``state.json`` is replaced atomically and names the files holding the writers' unflushed buffers;
those files carry the sequence number of the save that wrote them and are written before the state
that names them, so whatever moment a build is killed at, ``state.json`` and its buffers agree.
"""
from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import shards

STATE_DIR = ".build"
STATE_NAME = "state.json"
STATE_VERSION = 2
_SHARD_FILE = re.compile(r"^(train|val)_\d{6}\.(bin|idx)$")
# what an atomic write killed half-way leaves: shards.atomic_open's ".NAME.XXXX.tmp", tokenizer.save's
# ".tokenizer.json.tmp", the builder's ".tokenizer.json.copy"
_TEMPORARY = re.compile(r"^\.((train|val)_\d{6}\.(bin|idx)|manifest\.json|tokenizer\.json|state\.json|pending_\w+\.(tok|off))"
                        r"(\.\w+\.tmp|\.tmp|\.copy)$")


@dataclass
class BuildState:
    options: dict
    inputs: list                       # [path, kind, size] of every input, to notice a changed input list
    tokenizer_sha256: str | None = None
    position: tuple = (0, 0)           # (input index, items of it consumed)
    resume: list | None = None         # for a JSONL input: [decompressed bytes, lines] of it consumed
    input_stats: list = field(default_factory=list)
    totals: dict = field(default_factory=lambda: {s: {"tokens": 0, "documents": 0} for s in shards.SPLITS})
    skipped: dict = field(default_factory=dict)
    repaired: int = 0
    shards: list = field(default_factory=list)
    next_index: dict = field(default_factory=lambda: {s: 0 for s in shards.SPLITS})
    pending: dict = field(default_factory=dict)   # split -> file stem in .build
    seq: int = 0
    stopped: bool = False

    @classmethod
    def fresh(cls, options: dict, inputs) -> "BuildState":
        return cls(options=options, inputs=[[x.path, x.kind, x.size] for x in inputs],
                   input_stats=[{"records": 0, "documents": 0, "tokens": 0, "skipped": {}, "status": "pending"}
                                for _ in inputs])

    def total_tokens(self) -> int:
        return sum(t["tokens"] for t in self.totals.values())

    def save_pending(self, out: Path, writers: dict) -> None:
        """Write both writers' unflushed buffers under a new sequence number (state.json still names
        the previous ones until :func:`save_state` replaces it)."""
        self.seq += 1
        d = Path(out) / STATE_DIR
        self.pending = {}
        for split, w in writers.items():
            self.next_index[split] = w.index
            if not w.pending_documents:
                continue
            parts, offsets = w.pending_parts()
            stem = f"pending_{self.seq:06d}_{split}"
            shards.atomic_write_parts(d / f"{stem}.tok", parts)
            shards.atomic_write_bytes(d / f"{stem}.off", offsets.tobytes())
            self.pending[split] = stem

    def load_pending(self, out: Path) -> dict:
        d = Path(out) / STATE_DIR
        dtype = shards.numpy_dtype(self.options["dtype"])
        return {split: (np.fromfile(d / f"{stem}.tok", dtype=dtype),
                        np.fromfile(d / f"{stem}.off", dtype=shards.INDEX_DTYPE))
                for split, stem in self.pending.items()}


def save_state(out: Path, state: BuildState) -> None:
    d = Path(out) / STATE_DIR
    d.mkdir(parents=True, exist_ok=True)
    data = asdict(state)
    data["version"] = STATE_VERSION
    shards.write_json_atomic(d / STATE_NAME, data)
    keep = set(state.pending.values())
    for p in d.glob("pending_*"):
        if p.stem not in keep:
            p.unlink(missing_ok=True)


def load_state(out: Path) -> BuildState | None:
    path = Path(out) / STATE_DIR / STATE_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise shards.DatasetError(f"{path} is unreadable ({e}); use --overwrite to start the build over") from None
    if data.pop("version", None) != STATE_VERSION:
        raise shards.DatasetError(f"{path} was written by another version of the builder; use --overwrite "
                                  f"to start the build over")
    data["position"] = tuple(data["position"])
    return BuildState(**data)


def remove_temporaries(out: Path) -> None:
    """Delete the temporary files of writes interrupted by a kill (only the builder's own names)."""
    for d in (Path(out), Path(out) / STATE_DIR):
        if d.is_dir():
            for p in d.iterdir():
                if _TEMPORARY.match(p.name):
                    p.unlink(missing_ok=True)


def has_foreign_output(out: Path, tokenizer_arg: str | None) -> bool:
    """Does OUT hold shard or tokenizer files that no build state accounts for?"""
    out = Path(out)
    if not out.is_dir():
        return False
    tok = out / shards.TOKENIZER_NAME
    if tok.exists() and not (tokenizer_arg and Path(tokenizer_arg).resolve() == tok.resolve()):
        return True
    return any(_SHARD_FILE.match(p.name) for p in out.iterdir())


def clear_output(out: Path, keep: str | None = None) -> None:
    """Remove what a build writes (shards, manifest, tokenizer, state), nothing else; ``keep`` is a
    --tokenizer path that may live in OUT and must survive."""
    out = Path(out)
    if not out.is_dir():
        return
    (out / shards.MANIFEST_NAME).unlink(missing_ok=True)
    tok = out / shards.TOKENIZER_NAME
    if not (keep and Path(keep).resolve() == tok.resolve()):
        tok.unlink(missing_ok=True)
    for p in out.iterdir():
        if _SHARD_FILE.match(p.name):
            p.unlink()
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
