"""The built-in default corpus: documentation every Python installation carries, written as Dolma.

With no ``--input`` the pipeline builds on this, so a fresh machine needs no network and no download.
The text is Python's ``pydoc_data`` topics (the language reference pages ``help()`` shows) and the
docstrings of the standard library, read by parsing the source files with ``ast`` (never importing
them: importing runs code, prints, and differs by platform). Everything is sorted and the gzip
headers carry no time or name, so the bytes are identical on every run for a given Python version.

Files are written in Dolma's own format (gzipped JSONL, records with ``id``, ``text``, ``source``,
``added``, ``created``, ``metadata``) so the default run goes through the reader real Dolma uses, and
split over ``N_FILES`` files so the multi-file code paths run too.
"""
from __future__ import annotations

import ast
import gzip
import hashlib
import json
import os
import platform
import sysconfig
from collections.abc import Iterator
from pathlib import Path

GENERATOR_VERSION = 1  # bump when the documents change, so cached copies are rewritten
N_FILES = 4
SOURCE = "python-docs"
TIMESTAMP = "2024-01-01T00:00:00.000Z"  # fixed: a real time would change the bytes on every run
CHECKSUMS = "SHA256SUMS"               # `sha256sum -c SHA256SUMS` checks the files
# Not documentation, or not parseable by this Python (lib2to3's data holds Python 2 files).
_SKIP_DIRS = {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test", "data"}


def _python_version() -> str:
    return platform.python_version()


def stdlib_documents() -> Iterator[tuple[str, str, str]]:
    """(name, source path, text) for the stdlib's documentation, sorted by path.

    Per module: one document with the module docstring, its documented functions and its comments
    (the stdlib's comments are prose too, and double the text), then one per documented top-level
    class with its methods.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    for path in _stdlib_files(root):
        rel = path.relative_to(root)
        module = ".".join(rel.with_suffix("").parts)
        module = module[: -len(".__init__")] if module.endswith(".__init__") else module
        source = path.read_bytes()
        try:
            tree = ast.parse(source, filename=str(path))
        except (SyntaxError, ValueError):  # a source file this Python cannot parse is not documentation
            continue
        parts = []
        doc = ast.get_docstring(tree)
        if doc:
            parts.append(f"{module}\n\n{doc}")
        classes = []
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                text = "\n\n\n".join(_documented(node, f"{module}."))
                if text:
                    classes.append((f"{module}.{node.name}", text))
            else:
                parts += _documented(node, f"{module}.")
        comments = _comments(source, tree)
        if comments:
            parts.append(f"Comments in {rel.as_posix()}\n\n{comments}")
        if parts:
            yield module, rel.as_posix(), "\n\n\n".join(parts)
        for name, text in classes:
            yield name, rel.as_posix(), text


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirs, names in os.walk(root):
        # Only importable package directories: skips config-3.x-<platform>, site-packages and tests.
        dirs[:] = sorted(d for d in dirs if d.isidentifier() and d not in _SKIP_DIRS)
        files += [Path(dirpath) / n for n in names if n.endswith(".py") and n[:-3].isidentifier()]
    return sorted(files, key=lambda p: p.relative_to(root).parts)


def _documented(node: ast.stmt, prefix: str) -> list[str]:
    """Each documented function, or class and its documented methods, with signatures."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        doc = ast.get_docstring(node)
        return [f"{prefix}{node.name}({ast.unparse(node.args)})\n\n{doc}"] if doc else []
    if not isinstance(node, ast.ClassDef):
        return []
    out = []
    doc = ast.get_docstring(node)
    if doc:
        bases = ", ".join(ast.unparse(b) for b in node.bases)
        out.append(f"class {prefix}{node.name}" + (f"({bases})" if bases else "") + f"\n\n{doc}")
    for child in node.body:
        out += _documented(child, f"{prefix}{node.name}.")
    return out


def _comments(source: bytes, tree: ast.Module) -> str:
    """The file's whole-line comments as paragraphs: comments on consecutive lines join up.

    A line scan (``tokenize`` is 5x slower) that skips lines inside multi-line strings, where a
    ``#`` is not a comment. Trailing comments after code are left out: they annotate the code.
    """
    in_string = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Constant, ast.JoinedStr)) and node.end_lineno > node.lineno:
            in_string.update(range(node.lineno + 1, node.end_lineno + 1))
    paragraphs: list[list[str]] = []
    last_row = -1
    for row, line in enumerate(source.decode("utf-8", "replace").splitlines(), 1):
        stripped = line.lstrip()
        if not stripped.startswith("#") or row in in_string:
            continue
        text = stripped.lstrip("#").strip()
        if row <= 2 and (text.startswith("!") or "coding" in text):
            continue  # shebang and encoding lines
        if not text.strip("-=*#~ "):
            last_row = -1  # a blank or rule line ends a paragraph
            continue
        if row != last_row + 1:
            paragraphs.append([])
        paragraphs[-1].append(text)
        last_row = row
    return "\n\n".join("\n".join(p) for p in paragraphs)


def documents() -> list[dict]:
    """Every record of the corpus, in its fixed order: the pydoc topics, then the stdlib modules."""
    from pydoc_data.topics import topics

    version = _python_version()
    records = []

    def add(kind: str, name: str, text: str, path: str) -> None:
        records.append({"id": f"python-{version}/{kind}/{name}", "text": text, "source": SOURCE,
                        "added": TIMESTAMP, "created": TIMESTAMP,
                        "metadata": {"python_version": version, "kind": kind, "path": path}})

    for name in sorted(topics):
        add("topic", name, topics[name], "pydoc_data/topics.py")
    for name, path, text in stdlib_documents():
        add("stdlib", name, text, path)
    return records


def write_default_corpus(out_dir: str | os.PathLike) -> list[Path]:
    """Write the corpus as ``N_FILES`` gzipped JSONL files plus ``SHA256SUMS``; return the files.

    Documents fill the files in order (file 0 holds the first quarter), so reading the files in name
    order reads the documents in their fixed order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = documents()
    paths, sums = [], []
    for i in range(N_FILES):
        part = records[i * len(records) // N_FILES:(i + 1) * len(records) // N_FILES]
        # ensure_ascii=False keeps UTF-8 text as real Dolma files do; a lone surrogate (a docstring can
        # hold one) cannot be UTF-8, so "backslashreplace" writes it as the JSON escape \udXXX.
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part).encode("utf-8", "backslashreplace")
        path = out / f"{SOURCE}-{i:04d}.json.gz"
        blob = gzip.compress(data, compresslevel=6, mtime=0)  # mtime=0 and no name: identical bytes each run
        _write_atomic(path, blob)
        paths.append(path)
        sums.append(f"{hashlib.sha256(blob).hexdigest()}  {path.name}\n")
    _write_atomic(out / CHECKSUMS, "".join(sums).encode())  # last: its presence means the set is complete
    return paths


def ensure_default_corpus(out_dir: str | os.PathLike) -> list[Path]:
    """``write_default_corpus`` unless ``out_dir`` already holds it intact (checked against SHA256SUMS)."""
    out = Path(out_dir)
    paths = [out / f"{SOURCE}-{i:04d}.json.gz" for i in range(N_FILES)]
    try:
        want = dict(line.split()[::-1] for line in (out / CHECKSUMS).read_text().splitlines())
        if all(want.get(p.name) == hashlib.sha256(p.read_bytes()).hexdigest() for p in paths):
            return paths
    except (OSError, ValueError):
        pass  # missing or damaged: write it again
    return write_default_corpus(out)


def default_corpus_dir(out: str | os.PathLike) -> Path:
    """Where the CLI keeps the corpus for a build into ``out``: beside it, hidden, per Python version.

    Beside (not inside) the dataset directory, which holds only the dataset; the name carries the
    Python and generator versions because the documents depend on both.
    """
    return Path(out).parent / ".default-corpus" / f"python-{_python_version()}-v{GENERATOR_VERSION}"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> None:
    """``python -m preprocess.default_corpus DIR``: write the corpus and say what was written."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    args = p.parse_args(argv)
    paths = ensure_default_corpus(args.out_dir)
    total = sum(p.stat().st_size for p in paths)
    print(f"{len(paths)} files, {total / 1e6:.1f} MB compressed, in {args.out_dir}")


if __name__ == "__main__":
    main()
