"""The resumable state of an unfinished build, kept in ``OUT/.build/``.

``state.json`` is replaced atomically and names the files holding the writers' unflushed buffers;
those files carry the sequence number of the save that wrote them and are written before the state
that names them, so whatever moment a build is killed at, ``state.json`` and its buffers agree.

The state is only saved at a *verified* point of the stream: where everything read so far has passed
its checks (a gzip member's CRC is at its end). Shards written after that point are re-written by the
resumed build, byte for byte, or deleted when the data behind them turns out to be damaged
(:class:`Snapshot` is that point, held in memory).
"""
from __future__ import annotations

import copy
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import shards
from preprocess.plan import PLAN_NAME

STATE_NAME = "state.json"
STATE_VERSION = 4
# what an atomic write killed half-way leaves: shards.atomic_open's ".NAME.XXXX.tmp", tokenizer.save's
# ".tokenizer.json.tmp", the builder's ".tokenizer.json.copy"
_TEMPORARY = re.compile(r"^\.((train|val)_\d{6}\.(bin|idx)|manifest\.json|tokenizer\.json|plan\.json|state\.json"
                        r"|pending_\w+\.(tok|off))(\.\w+\.tmp|\.tmp|\.copy)$")


@dataclass
class BuildState:
    options: dict
    tokenizer_sha256: str | None = None
    position: tuple = (0, 0)           # (index into the build's reads, items of that input consumed)
    resume: list | None = None         # for a JSONL input: [decompressed bytes, lines] of it consumed
    input_stats: list = field(default_factory=list)  # per input of the plan, in its order
    totals: dict = field(default_factory=lambda: {s: {"tokens": 0, "documents": 0} for s in shards.SPLITS})
    skipped: dict = field(default_factory=dict)
    repaired: int = 0
    shards: list = field(default_factory=list)
    next_index: dict = field(default_factory=lambda: {s: 0 for s in shards.SPLITS})
    pending: dict = field(default_factory=dict)   # split -> file stem in .build
    seq: int = 0
    stopped: bool = False              # --in-order: --max-tokens was reached
    record_sources: dict = field(default_factory=dict)  # records' own "source" field -> [documents, tokens]
    encoder: dict | None = None        # the engine the build goes on with: {asked, engine, reason}

    @classmethod
    def fresh(cls, options: dict, n_inputs: int) -> BuildState:
        return cls(options=options,
                   input_stats=[{"records": 0, "documents": 0, "tokens": 0, "skipped": {}, "status": "pending"}
                                for _ in range(n_inputs)])

    def total_tokens(self) -> int:
        return sum(t["tokens"] for t in self.totals.values())

    def total_documents(self) -> int:
        return sum(t["documents"] for t in self.totals.values())

    def save_pending(self, out: Path, writers: dict) -> None:
        """Write both writers' unflushed buffers under a new sequence number (state.json still names
        the previous ones until :func:`save_state` replaces it)."""
        self.seq += 1
        d = Path(out) / shards.BUILD_DIR
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
        d = Path(out) / shards.BUILD_DIR
        dtype = shards.numpy_dtype(self.options["dtype"])
        return {split: (np.fromfile(d / f"{stem}.tok", dtype=dtype),
                        np.fromfile(d / f"{stem}.off", dtype=shards.INDEX_DTYPE))
                for split, stem in self.pending.items()}


@dataclass
class Snapshot:
    """The state and the writers' buffers at the last verified point, to roll back to when what was
    read after it turns out to be damaged. Only the current input's stats can change after it (a
    verified point falls at least at every input's end), so only those are copied."""
    state: dict
    input_index: int | None  # the input being read at this point (None: every read is done)
    input_stats: dict | None
    writers: dict

    @classmethod
    def take(cls, state: BuildState, input_index: int | None, writers: dict) -> Snapshot:
        keep = {k: copy.deepcopy(getattr(state, k)) for k in ("position", "resume", "totals", "skipped",
                                                                "repaired", "record_sources", "stopped")}
        keep["n_shards"] = len(state.shards)
        stats = None if input_index is None else copy.deepcopy(state.input_stats[input_index])
        return cls(keep, input_index, stats, {split: w.save() for split, w in writers.items()})

    def restore(self, state: BuildState, writers: dict, out: Path, unlink: bool = True) -> int:
        """Put ``state`` and ``writers`` back as they were; delete the shards written since (with
        ``unlink``; else the caller saves the state first, then removes the shards it no longer lists:
        this point may be older than the state on disk). Returns the number of documents rolled back."""
        docs_before = state.total_documents()
        for k, v in self.state.items():
            if k != "n_shards":
                setattr(state, k, copy.deepcopy(v))
        for entry in state.shards[self.state["n_shards"]:] if unlink else ():
            for name in (entry["file"], shards.index_file_name(entry["file"])):
                (Path(out) / name).unlink(missing_ok=True)
        del state.shards[self.state["n_shards"]:]
        if self.input_index is not None:
            state.input_stats[self.input_index] = copy.deepcopy(self.input_stats)
        for split, w in writers.items():
            w.load(self.writers[split])
        return docs_before - state.total_documents()


def save_state(out: Path, state: BuildState) -> None:
    d = Path(out) / shards.BUILD_DIR
    d.mkdir(parents=True, exist_ok=True)
    data = asdict(state)
    data["version"] = STATE_VERSION
    shards.write_json_atomic(d / STATE_NAME, data)
    keep = set(state.pending.values())
    for p in d.glob("pending_*"):
        if p.stem not in keep:
            p.unlink(missing_ok=True)


def load_state(out: Path) -> BuildState | None:
    path = Path(out) / shards.BUILD_DIR / STATE_NAME
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
    for d in (Path(out), Path(out) / shards.BUILD_DIR):
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
    return (out / PLAN_NAME).exists() or any(shards.is_shard_file(p.name) for p in out.iterdir())


def clear_output(out: Path, keep: str | None = None) -> None:
    """Remove what a build writes (shards, manifest, tokenizer, state), nothing else; ``keep`` is a
    --tokenizer path that may live in OUT and must survive."""
    out = Path(out)
    if not out.is_dir():
        return
    (out / shards.MANIFEST_NAME).unlink(missing_ok=True)
    (out / PLAN_NAME).unlink(missing_ok=True)
    tok = out / shards.TOKENIZER_NAME
    if not (keep and Path(keep).resolve() == tok.resolve()):
        tok.unlink(missing_ok=True)
    for p in out.iterdir():
        if shards.is_shard_file(p.name):
            p.unlink()
    shutil.rmtree(out / shards.BUILD_DIR, ignore_errors=True)


def remove_unlisted_shards(out: Path, state: BuildState) -> None:
    """Delete shard files a killed build wrote after its last saved (verified) point: the resumed build
    writes them again, or fewer when what they held was damaged."""
    listed = {e["file"] for e in state.shards}
    listed |= {shards.index_file_name(name) for name in listed}
    for p in Path(out).iterdir():
        if shards.is_shard_file(p.name) and p.name not in listed:
            p.unlink()
