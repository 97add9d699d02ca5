"""The dataset directory: the one place that defines its on-disk format.

A dataset directory holds ``tokenizer.json``, ``manifest.json`` and, per split, numbered shards::

    train_000000.bin   raw little-endian token ids, no header (np.memmap(path, dtype=uint16) reads it)
    train_000000.idx   raw little-endian uint64, one entry per document: the offset of its separator

Every document is preceded by one separator token (``<|endoftext|>``), so document ``i`` of a shard
is ``bin[idx[i] + 1 : idx[i + 1]]`` and the last one runs to the end of the file. Documents never
span two shards. ``manifest.json`` is written last, atomically; a directory without one is not a
dataset. Every other module reads and writes shards through this one.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TOKENIZER_NAME = "tokenizer.json"
BUILD_DIR = ".build"    # an unfinished build's state (python -m preprocess); gone once the manifest is written
SPLITS = ("train", "val")
INDEX_DTYPE = np.dtype("<u8")
DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
UINT16_LIMIT = 1 << 16  # a uint16 shard can hold ids 0..65535, i.e. a vocabulary of at most 65,536
REQUIRED_MANIFEST_KEYS = ("format_version", "dtype", "vocab_size", "eot_id", "tokenizer_sha256", "shards",
                          "totals", "inputs", "skipped", "options")
REQUIRED_SHARD_KEYS = ("split", "file", "tokens", "documents", "sha256")


class PipelineError(Exception):
    """The root of every error a user can cause or act on: a bad option or config, a damaged or missing
    file, a full disk, a run that cannot go on. Each command catches this one class and prints its
    message, which names what is wrong and what to do, as one line; anything else is a bug and keeps its
    traceback. Every package of the project derives its errors from it, except ``tokenizer`` (which
    imports nothing of the project): its ``TokenizerError`` is turned into the stage's own error where a
    stage calls it."""


class DatasetError(PipelineError):
    """A problem with a dataset directory that the user can act on; the message says what to do."""


class DirectoryInUse(DatasetError):
    """Another process is writing into the same directory."""


class DiskFull(DatasetError):
    """A write ran out of space (or quota); the message names the file, the space it needed and had."""

    def __init__(self, path: str | os.PathLike, needed: int | None):
        self.path, self.needed = Path(path), needed
        free = free_bytes(self.path.parent)
        need = f"it needed about {_mb(needed)}" if needed else "it needed more"
        have = f", {_mb(free)} are free there" if free is not None else ""
        super().__init__(f"no space left on the device holding {self.path} ({need}{have})")


def _mb(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def free_bytes(directory: str | os.PathLike) -> int | None:
    try:
        return shutil.disk_usage(directory).free
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------------
# names and dtypes

def shard_file_name(split: str, index: int) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return f"{split}_{index:06d}.bin"


def index_file_name(bin_name: str) -> str:
    return bin_name[: -len(".bin")] + ".idx"


_SHARD_FILE = re.compile(r"^(train|val)_\d{6}\.(bin|idx)$")


def is_shard_file(name: str) -> bool:
    """Whether ``name`` is a shard or index file name (``train_000012.bin``, ``val_000000.idx``)."""
    return _SHARD_FILE.match(name) is not None


def choose_dtype(vocab_size: int, requested: str) -> str:
    """``requested`` (uint16 or uint32) for a vocabulary, refusing ``uint16`` for one over 65,536 up
    front, before any work is done."""
    if requested not in DTYPES:
        raise DatasetError(f"unknown dtype {requested!r}; use one of {sorted(DTYPES)}")
    if requested == "uint16" and vocab_size > UINT16_LIMIT:
        raise DatasetError(
            f"a vocabulary of {vocab_size:,} tokens does not fit in uint16 shards (ids must be below "
            f"{UINT16_LIMIT:,}); use --dtype uint32, or a vocabulary of at most {UINT16_LIMIT:,} tokens")
    return requested


def numpy_dtype(name: str) -> np.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise DatasetError(f"unknown shard dtype {name!r} in manifest; expected one of {sorted(DTYPES)}") from None


# ---------------------------------------------------------------------------------------------------
# atomic writes

def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", size: int | None = None) -> Iterator:
    """Open a temporary file beside ``path``; on success fsync it and ``os.replace`` it into place.

    On any failure the temporary file is removed and the error propagates; ``path`` is untouched. A
    full disk (or quota) is :class:`DiskFull`, naming ``path`` and ``size``, the bytes being written.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, None) from None
        raise
    # mkstemp creates 0600; datasets are shared between users and containers, so honour the umask
    os.fchmod(fd, 0o666 & ~_UMASK)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = os.path.getsize(tmp) if os.path.exists(tmp) else None
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFull(path, size or written) from None
        raise
    _fsync_dir(path.parent)


LOCK_NAME = ".lock"


def make_output_dir(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create the output directory ``path`` (and its parents). A DatasetError names it, what is wrong (a
    file, a read-only file system, no permission, a full disk) and what to do, instead of an OSError."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DatasetError(f"{option} {path} is a file, not a directory; give a directory to write into")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise output_error(path, option, e) from None
    probe = path / f".write_test_{os.getpid()}"
    try:  # os.access says yes to root on a read-only mount; a real write says what it is
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise output_error(path, option, e) from None
    finally:
        with suppress(OSError):
            probe.unlink()
    return path


def output_error(path: Path, option: str, e: OSError) -> DatasetError:
    """The error to raise when writing into the output directory ``path`` failed with ``e``."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        free = free_bytes(path if path.exists() else path.parent)
        return DatasetError(f"{option} {path}: no space left on that file system ({_mb(free or 0)} free); free "
                            f"space there or pick a directory on another disk")
    if e.errno == errno.EROFS:
        return DatasetError(f"{option} {path} is on a read-only file system; pick a directory you can write to")
    return DatasetError(f"{option} {path}: cannot write there ({e.strerror}); pick a directory you can write to")


@contextmanager
def directory_lock(directory: str | os.PathLike, holder: str) -> Iterator[None]:
    """Hold an exclusive lock on ``DIR/.lock`` while writing into ``DIR``: two builds (or two trainers)
    writing one directory would interleave their files. The operating system drops the lock when the
    process ends, however it ends, so a killed run never leaves a stale lock behind.

    A POSIX record lock (``lockf``), not ``flock``: it belongs to this process alone, so worker
    processes forked while it is held do not keep it alive after a ``kill -9`` of their parent.
    """
    import errno
    import fcntl

    path = Path(directory) / LOCK_NAME
    f = open(path, "a+", encoding="utf-8")
    try:
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno not in (errno.EACCES, errno.EAGAIN):
            f.close()
            raise
        f.seek(0)
        other = f.read().strip() or "another process"
        f.close()
        raise DirectoryInUse(f"{directory} is being written by {other}; wait for it to finish or stop it, "
                             f"or use another directory") from None
    f.seek(0)
    f.truncate()
    f.write(f"{holder} (pid {os.getpid()})\n")
    f.flush()
    try:
        yield
    finally:
        # left empty, not removed: removing it would let a process that opened it just before take a
        # lock on a file nobody else can see any more
        f.truncate(0)
        f.close()


def atomic_write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    with atomic_open(path, "wb", size=memoryview(data).nbytes) as f:
        f.write(data)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    # a lone surrogate (a file name that is not UTF-8, as Python reads it) can only stand in a string,
    # and is written as its JSON escape, \udcXX, which json.loads reads back as the same character
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------
# writing shards

def write_shard(directory: str | os.PathLike, split: str, index: int, tokens: np.ndarray | Sequence[np.ndarray],
                doc_offsets: np.ndarray) -> dict:
    """Write one shard (``.idx`` then ``.bin``, each atomically) and return its manifest entry.

    ``tokens`` (one array, or consecutive pieces written one after another without joining them)
    must already hold the separator before every document, and ``doc_offsets`` the position of each
    separator; both are checked, since a wrong index silently corrupts training.
    """
    directory = Path(directory)
    parts = [np.ascontiguousarray(t) for t in ([tokens] if isinstance(tokens, np.ndarray) else tokens)]
    for t in parts:
        if t.dtype not in DTYPES.values() or t.ndim != 1:
            raise ValueError(f"shard tokens must be 1-D uint16 or uint32 little-endian, got {t.dtype}")
    if len({t.dtype for t in parts}) > 1:
        raise ValueError("shard token pieces must share one dtype")
    n_tokens = sum(len(t) for t in parts)
    offsets = np.ascontiguousarray(doc_offsets, dtype=INDEX_DTYPE)
    if n_tokens and (len(offsets) == 0 or offsets[0] != 0):
        raise ValueError("the first document of a shard must start at offset 0")
    if len(offsets) > 1 and np.any(np.diff(offsets.astype(np.int64)) <= 0):
        raise ValueError("document offsets must be strictly increasing")
    if len(offsets) and int(offsets[-1]) >= n_tokens:
        raise ValueError("a document offset lies beyond the shard's tokens")
    name = shard_file_name(split, index)
    atomic_write_bytes(directory / index_file_name(name), offsets.tobytes())
    digest = atomic_write_parts(directory / name, parts)
    return {"split": split, "file": name, "tokens": int(n_tokens), "documents": int(len(offsets)),
            "sha256": digest}


def atomic_write_parts(path: str | os.PathLike, parts: Iterable[np.ndarray]) -> str:
    """Write arrays one after another as one file, atomically, without joining them in memory;
    returns the sha256 of the file's bytes."""
    h = hashlib.sha256()
    parts = list(parts)
    with atomic_open(path, "wb", size=sum(p.nbytes for p in parts)) as f:
        for part in parts:
            view = memoryview(np.ascontiguousarray(part)).cast("B")
            h.update(view)
            f.write(view)
    return h.hexdigest()


class ShardWriter:
    """Collects encoded documents of one split and writes a shard whenever ``shard_tokens`` is reached.

    A shard closes after the document that brings it to at least ``shard_tokens`` tokens (documents
    are never split), so a shard can exceed the target by less than one document. Documents come in
    blocks (:meth:`add_block`: many documents with their separators, as the build's workers return
    them), so the cost per document is numpy's, not Python's.
    """

    def __init__(self, directory: str | os.PathLike, split: str, dtype: str, eot_id: int, shard_tokens: int,
                 start_index: int = 0):
        if shard_tokens <= 0:
            raise ValueError("shard_tokens must be positive")
        self.directory = Path(directory)
        self.split = split
        self.dtype = numpy_dtype(dtype)
        self.eot_id = eot_id
        self.shard_tokens = shard_tokens
        self.index = start_index
        self._parts: list[np.ndarray] = []    # pieces of the shard being filled, in order
        self._offsets: list[np.ndarray] = []  # their documents' separator offsets within the shard
        self._n_tokens = 0
        self._n_docs = 0

    @property
    def pending_documents(self) -> int:
        return self._n_docs

    def add(self, doc_tokens) -> dict | None:
        """Append one document (its ids, without separator); returns the shard entry if one was written."""
        doc = np.asarray(doc_tokens, dtype=self.dtype)
        block = np.empty(len(doc) + 1, dtype=self.dtype)
        block[0] = self.eot_id
        block[1:] = doc
        entries = self.add_block(block, np.array([len(doc)], dtype=np.int64))
        return entries[0] if entries else None

    def add_block(self, tokens: np.ndarray, lengths: np.ndarray) -> list[dict]:
        """Append consecutive documents: ``tokens`` holds each one's separator then its ids, and
        ``lengths`` their id counts (separators excluded). Returns the entries of the shards written."""
        lengths = np.asarray(lengths, dtype=np.int64)
        ends = np.cumsum(lengths + 1)  # each document's end within the block
        need = int(ends[-1]) if len(ends) else 0
        if len(tokens) != need or tokens.dtype != self.dtype:
            raise ValueError(f"a block of {len(lengths)} documents needs {need} {self.dtype} tokens, "
                             f"got {len(tokens)} {tokens.dtype}")
        entries = []
        done_tok = done_doc = 0
        while done_doc < len(lengths):
            # the first document whose end brings the shard to shard_tokens closes it
            k = int(np.searchsorted(ends, done_tok + self.shard_tokens - self._n_tokens, side="left"))
            last = min(k, len(lengths) - 1)
            stop = int(ends[last])
            starts = ends[done_doc:last + 1] - (lengths[done_doc:last + 1] + 1)
            self._offsets.append(starts - done_tok + self._n_tokens)
            self._parts.append(tokens[done_tok:stop])
            self._n_tokens += stop - done_tok
            self._n_docs += last + 1 - done_doc
            done_tok, done_doc = stop, last + 1
            if k < len(lengths):
                entries.append(self.flush())
        return entries

    def pending_parts(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The buffered token pieces and the offsets not yet written (for saving resumable state)."""
        offsets = np.concatenate(self._offsets).astype(INDEX_DTYPE) if self._offsets else np.zeros(0, INDEX_DTYPE)
        return list(self._parts), offsets

    def restore(self, tokens: np.ndarray, offsets: np.ndarray) -> None:
        """Put back a buffer saved from :meth:`pending_parts`, its pieces joined (the writer must be empty)."""
        if self._n_tokens:
            raise RuntimeError("restore() on a writer that already holds documents")
        if len(tokens):
            self._parts = [np.asarray(tokens, dtype=self.dtype)]
            self._offsets = [np.asarray(offsets, dtype=np.int64)]
        self._n_tokens = int(len(tokens))
        self._n_docs = int(len(offsets))

    def save(self) -> tuple:
        """What :meth:`load` needs to put this writer back as it is now (the buffered pieces are shared,
        not copied: they are never changed in place)."""
        return list(self._parts), list(self._offsets), self._n_tokens, self._n_docs, self.index

    def load(self, saved: tuple) -> None:
        parts, offsets, self._n_tokens, self._n_docs, self.index = saved
        self._parts, self._offsets = list(parts), list(offsets)

    def flush(self) -> dict | None:
        """Write whatever is buffered as the next shard; None when the buffer is empty."""
        if not self._n_docs:
            return None
        parts, offsets = self.pending_parts()
        entry = write_shard(self.directory, self.split, self.index, parts, offsets)
        self.index += 1
        self._parts, self._offsets, self._n_tokens, self._n_docs = [], [], 0, 0
        return entry


# ---------------------------------------------------------------------------------------------------
# the manifest

def write_manifest(directory: str | os.PathLike, manifest: dict) -> None:
    """Write ``manifest.json`` atomically; call it last, after every shard it lists is on disk."""
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ValueError(f"manifest lacks required keys {missing}")
    write_json_atomic(Path(directory) / MANIFEST_NAME, manifest)


def load_manifest(directory: str | os.PathLike) -> dict:
    """Read and sanity-check ``DIR/manifest.json``; errors say what is wrong and what to do."""
    directory = Path(directory)
    path = directory / MANIFEST_NAME
    if not directory.is_dir():
        raise DatasetError(f"dataset directory {directory} does not exist; build one with "
                           f"`python -m preprocess --out {directory}`")
    if not path.exists():
        raise DatasetError(f"{directory} has no {MANIFEST_NAME}, so it is not a finished dataset (a build "
                           f"that was interrupted leaves none); run `python -m preprocess --out {directory}` "
                           f"again to resume or finish it")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); rebuild the dataset with --overwrite") from None
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise DatasetError(f"{path} lacks keys {missing}; was it written by this project? Rebuild with "
                           f"`python -m preprocess --overwrite`")
    if manifest["format_version"] != FORMAT_VERSION:
        raise DatasetError(f"{path} has format_version {manifest['format_version']}, this version reads "
                           f"{FORMAT_VERSION}; rebuild the dataset or use a matching version of the project")
    numpy_dtype(manifest["dtype"])
    for entry in manifest["shards"]:
        lacking = [k for k in REQUIRED_SHARD_KEYS if k not in entry]
        if lacking:
            raise DatasetError(f"{path}: shard entry {entry} lacks {lacking}")
    return manifest


def split_shards(manifest: dict, split: str) -> list[dict]:
    return [s for s in manifest["shards"] if s["split"] == split]


def dataset_fingerprint(manifest: dict) -> str:
    """sha256 over what defines the token stream: dtype, tokenizer, and every shard's name and checksum."""
    payload = {"dtype": manifest["dtype"], "tokenizer_sha256": manifest["tokenizer_sha256"],
               "shards": [[s["split"], s["file"], s["sha256"]] for s in manifest["shards"]]}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# reading shards

def shard_path(directory: str | os.PathLike, entry: dict) -> Path:
    return Path(directory) / entry["file"]


def open_tokens(directory: str | os.PathLike, entry: dict, dtype: str) -> np.ndarray:
    """The shard's tokens as a read-only memmap (an empty array for an empty shard)."""
    path = shard_path(directory, entry)
    if not path.exists():
        raise DatasetError(f"shard {path} is listed in the manifest but missing; restore it or rebuild "
                           f"the dataset")
    np_dtype = numpy_dtype(dtype)
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=np_dtype)
    return np.memmap(path, dtype=np_dtype, mode="r")


def open_index(directory: str | os.PathLike, entry: dict) -> np.ndarray:
    """The document offsets of a shard: uint64, one per document, each pointing at a separator."""
    path = Path(directory) / index_file_name(entry["file"])
    if not path.exists():
        raise DatasetError(f"index {path} is missing; rebuild the dataset")
    return np.fromfile(path, dtype=INDEX_DTYPE)


def document_bounds(offsets: np.ndarray, n_tokens: int) -> tuple[np.ndarray, np.ndarray]:
    """(starts, ends) of every document's text tokens, separators excluded: doc i is tokens[starts[i]:ends[i]]."""
    offsets = np.asarray(offsets, dtype=np.int64)
    starts = offsets + 1
    ends = np.append(offsets[1:], n_tokens).astype(np.int64)
    return starts, ends


def window_count(n_tokens: int, seq_len: int) -> int:
    """How many training windows a shard of ``n_tokens`` tokens holds: windows of ``seq_len + 1`` tokens
    start every ``seq_len`` tokens (window ``j`` is ``tokens[j*seq_len : (j+1)*seq_len + 1]``), so every
    token but the first is a target once; the tail too short for a whole window is dropped."""
    return max(0, (n_tokens - 1) // seq_len)


def iter_documents(directory: str | os.PathLike, entry: dict, dtype: str) -> Iterator[np.ndarray]:
    tokens = open_tokens(directory, entry, dtype)
    starts, ends = document_bounds(open_index(directory, entry), len(tokens))
    for a, b in zip(starts, ends, strict=True):
        yield tokens[a:b]


def verify_dataset(directory: str | os.PathLike, tokenizer_sha256: str | None = None,
                   check_tokens: bool = True) -> list[str]:
    """Check a dataset directory against its manifest; returns a list of problems (empty when sound).

    Checks: manifest readable; every listed shard and index present; sizes, token and document counts,
    and sha256 match; every token id below ``vocab_size``; every index entry points at a separator;
    totals add up; no stray shard files; and, when ``tokenizer_sha256`` is given (the fingerprint of
    the directory's ``tokenizer.json``), that it is the tokenizer the manifest names.
    """
    directory = Path(directory)
    try:
        manifest = load_manifest(directory)
    except DatasetError as e:
        return [str(e)]
    problems: list[str] = []
    np_dtype = numpy_dtype(manifest["dtype"])
    vocab_size, eot_id = manifest["vocab_size"], manifest["eot_id"]
    totals = {split: {"tokens": 0, "documents": 0} for split in SPLITS}
    listed = set()
    for entry in manifest["shards"]:
        name = entry["file"]
        listed.update({name, index_file_name(name)})
        path = directory / name
        if not path.exists():
            problems.append(f"{name}: missing (listed in the manifest)")
            continue
        size = path.stat().st_size
        if size != entry["tokens"] * np_dtype.itemsize:
            problems.append(f"{name}: {size} bytes on disk, manifest says {entry['tokens']} tokens "
                            f"({entry['tokens'] * np_dtype.itemsize} bytes); truncated or overwritten")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{name}: sha256 does not match the manifest (the file's bytes changed)")
        idx_path = directory / index_file_name(name)
        if not idx_path.exists():
            problems.append(f"{idx_path.name}: missing")
            continue
        if idx_path.stat().st_size % INDEX_DTYPE.itemsize:
            problems.append(f"{idx_path.name}: size is not a multiple of 8 bytes")
            continue
        offsets = np.fromfile(idx_path, dtype=INDEX_DTYPE)
        if len(offsets) != entry["documents"]:
            problems.append(f"{idx_path.name}: {len(offsets)} documents, manifest says {entry['documents']}")
        totals.setdefault(entry["split"], {"tokens": 0, "documents": 0})
        totals[entry["split"]]["tokens"] += entry["tokens"]
        totals[entry["split"]]["documents"] += entry["documents"]
        if not check_tokens or size != entry["tokens"] * np_dtype.itemsize:
            continue
        tokens = open_tokens(directory, entry, manifest["dtype"])
        if len(tokens):
            top = int(tokens.max())
            if top >= vocab_size:
                problems.append(f"{name}: token id {top} >= vocab_size {vocab_size}")
        if len(offsets):
            if offsets[0] != 0 or np.any(np.diff(offsets.astype(np.int64)) <= 0) or offsets[-1] >= len(tokens):
                problems.append(f"{idx_path.name}: offsets are not increasing within the shard")
            elif np.any(tokens[offsets.astype(np.int64)] != eot_id):
                problems.append(f"{idx_path.name}: an offset does not point at the separator {eot_id}")
            n_eot = int(np.count_nonzero(tokens == eot_id))
            if n_eot != len(offsets):
                problems.append(f"{name}: {n_eot} separators but {len(offsets)} documents in the index")
        elif len(tokens):
            problems.append(f"{idx_path.name}: empty index for a non-empty shard")
    for split, t in manifest["totals"].items():
        got = totals.get(split, {"tokens": 0, "documents": 0})
        if t.get("tokens") != got["tokens"] or t.get("documents") != got["documents"]:
            problems.append(f"totals[{split}] = {t} but the shards add up to {got}")
    for p in sorted(directory.iterdir()):
        if is_shard_file(p.name) and p.name not in listed:
            problems.append(f"{p.name}: stray shard file not listed in the manifest")
    if tokenizer_sha256 is not None and tokenizer_sha256 != manifest["tokenizer_sha256"]:
        problems.append(f"{TOKENIZER_NAME} has fingerprint {tokenizer_sha256[:16]}…, the manifest names "
                        f"{manifest['tokenizer_sha256'][:16]}…; the shards were not encoded with this tokenizer")
    return problems
