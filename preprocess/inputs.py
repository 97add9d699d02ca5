"""Resolving inputs: what the user typed (files, directories, globs, URLs, ``hf:`` specs, an input
list) as a deterministic list of :class:`InputFile`, regular files only. What cannot be resolved
raises ``InputError``, naming the spec and where it was given."""
from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass

from preprocess.errors import InputError

# Longest suffix first: ".jsonl.gz" must win over ".gz".
_KINDS = (
    (".jsonl.gz", "jsonl.gz"), (".json.gz", "jsonl.gz"), (".ndjson.gz", "jsonl.gz"),
    (".jsonl.zst", "jsonl.zst"), (".json.zst", "jsonl.zst"), (".ndjson.zst", "jsonl.zst"),
    (".jsonl.zstd", "jsonl.zst"), (".json.zstd", "jsonl.zst"),
    (".jsonl", "jsonl"), (".json", "jsonl"), (".ndjson", "jsonl"),
    (".parquet", "parquet"), (".txt", "txt"),
)
KNOWN_SUFFIXES = tuple(s for s, _ in _KINDS)
HF_PREFIX = "hf:"
LINE_KINDS = frozenset({"jsonl", "jsonl.gz", "jsonl.zst"})


@dataclass(frozen=True, slots=True)
class InputFile:
    path: str         # local path, http(s) URL, or "hf:NAME[:CONFIG][:SPLIT]"
    kind: str         # "jsonl", "jsonl.gz", "jsonl.zst", "parquet", "txt", "hf"
    size: int | None  # bytes on disk; None when unknown (URLs, hf)


def is_url(spec: str) -> bool:
    return spec.startswith(("http://", "https://"))


def kind_of(path: str) -> str | None:
    """The input kind from a file name or URL (query string ignored), or None when unknown."""
    name = path.split("?", 1)[0].split("#", 1)[0].lower() if is_url(path) else path.lower()
    for suffix, kind in _KINDS:
        if name.endswith(suffix):
            return kind
    return None


def parse_hf_spec(spec: str) -> tuple[str, str | None, str]:
    """``hf:NAME[:CONFIG][:SPLIT]`` -> (name, config or None, split, default "train")."""
    parts = spec[len(HF_PREFIX):].split(":")
    if not parts[0] or len(parts) > 3:
        raise InputError(f"--input {spec}: expected hf:NAME[:CONFIG][:SPLIT], e.g. hf:allenai/c4:en:train")
    name = parts[0]
    config = parts[1] if len(parts) > 1 and parts[1] else None
    split = parts[2] if len(parts) > 2 and parts[2] else "train"
    return name, config, split


# ---------------------------------------------------------------------------------------------------
# resolving inputs

def resolve_inputs(specs: list[str], input_list: str | None = None,
                   note: Callable[[str], None] | None = None) -> list[InputFile]:
    """Expand ``specs`` and the entries of ``input_list`` into input files, in a deterministic order.

    Each spec is a local file, a directory (searched recursively for files with a known suffix, hidden
    files and directories skipped), a glob pattern (``**`` allowed), an http(s) URL or an ``hf:`` spec.
    Matches of one spec are sorted; specs keep the order given, then the input list's entries follow
    in file order. A file named twice is read once (its first place wins). ``input_list`` holds one
    path or URL per line; blank lines and ``#`` comments are ignored. Only regular files are inputs:
    a FIFO, socket or device named outright is an error, and one met in a directory or a glob is
    passed over with a ``note``.
    """
    entries: list[tuple[str, str]] = [(spec, "--input") for spec in specs]
    if input_list is not None:
        entries += _read_input_list(input_list)
    out: list[InputFile] = []
    seen: set[str] = set()
    for spec, where in entries:
        for inp in _resolve_one(spec, where, note or (lambda msg: None)):
            key = inp.path if is_url(inp.path) or inp.kind == "hf" else os.path.realpath(inp.path)
            if key not in seen:
                seen.add(key)
                out.append(inp)
    return out


def _read_input_list(path: str) -> list[tuple[str, str]]:
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise InputError(f"--input-list {path}: cannot read it ({e.strerror}); check the path") from None
    except UnicodeDecodeError as e:
        raise InputError(f"--input-list {path}: not UTF-8 text ({e.reason} at byte {e.start}); "
                         f"it should hold one path or URL per line") from None
    entries = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if line and not line.startswith("#"):
            entries.append((line, f"--input-list {path} line {n}"))
    if not entries:
        raise InputError(f"--input-list {path}: no paths or URLs in it (blank lines and # comments are ignored)")
    return entries


def _resolve_one(spec: str, where: str, note: Callable[[str], None]) -> list[InputFile]:
    if spec.startswith(HF_PREFIX):
        parse_hf_spec(spec)  # fail early on a malformed spec
        return [InputFile(spec, "hf", None)]
    if is_url(spec):
        kind = kind_of(spec)
        if kind is None:
            raise InputError(f"{where}: {spec}: unknown file type; a URL must end in one of "
                             f"{', '.join(KNOWN_SUFFIXES)}")
        return [InputFile(spec, kind, None)]
    if os.path.isdir(spec):
        if _is_output_dir(spec):
            raise InputError(f"{where}: {spec} is a dataset or run directory written by this project, not a "
                             f"corpus; give the directory of the input files")
        files = _walk(spec, note)
        if not files:
            raise InputError(f"{where}: directory {spec} holds no input files (looked recursively for "
                             f"{', '.join(KNOWN_SUFFIXES)})")
        return [_local(p) for p in files]
    if os.path.exists(spec):
        if kind_of(spec) is None:
            raise InputError(f"{where}: {spec}: unknown file type; expected a name ending in "
                             f"{', '.join(KNOWN_SUFFIXES)} (or a directory, glob, URL or hf: spec)")
        special = _not_regular(spec)
        if special:
            raise InputError(f"{where}: {spec} is {special}, not a regular file; only regular files are read "
                             f"(copy the data into a file first)")
        return [_local(spec)]
    if glob.has_magic(spec):
        matches = sorted(glob.glob(spec, recursive=True))
        files: list[str] = []
        for m in matches:
            if os.path.isdir(m):
                files += _walk(m, note)
            elif kind_of(m) is not None:
                special = _not_regular(m)
                if special:
                    note(f"passed over {m}: {special}, not a regular file")
                else:
                    files.append(m)
        if not files:
            what = f"{len(matches)} paths, none of them input files" if matches else "nothing"
            raise InputError(f"{where}: pattern {spec!r} matched {what}; input files end in "
                             f"{', '.join(KNOWN_SUFFIXES)}")
        return [_local(p) for p in files]
    raise InputError(f"{where}: {spec}: no such file or directory; check the path (or quote a glob pattern)")


def _walk(top: str, note: Callable[[str], None]) -> list[str]:
    found = []
    for root, dirs, files in os.walk(top):
        # hidden ones (.git, .cache, a default corpus stash) and this project's own outputs (a dataset
        # built into a folder of the corpus must not be read back as input: its tokenizer.json and
        # manifest.json are .json files)
        dirs[:] = [d for d in dirs if not d.startswith(".") and not _is_output_dir(os.path.join(root, d))]
        for f in files:
            if f.startswith(".") or kind_of(f) is None:
                continue
            path = os.path.join(root, f)
            special = _not_regular(path)
            if special:
                note(f"passed over {path}: {special}, not a regular file")
            else:
                found.append(path)
    return sorted(found)


def _not_regular(path: str) -> str | None:
    """What ``path`` is when it is not a regular file (links followed), else None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    return ("a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode) else
            "a directory" if stat.S_ISDIR(mode) else "not a regular file")


def _is_output_dir(path: str) -> bool:
    """A dataset or run directory: the lock every writer takes, an unfinished build, or a manifest with
    its tokenizer."""
    import shards

    return (os.path.exists(os.path.join(path, shards.LOCK_NAME)) or os.path.isdir(os.path.join(path, shards.BUILD_DIR))
            or (os.path.exists(os.path.join(path, shards.MANIFEST_NAME))
                and os.path.exists(os.path.join(path, shards.TOKENIZER_NAME))))


def _local(path: str) -> InputFile:
    return InputFile(path, kind_of(path), os.path.getsize(path))
