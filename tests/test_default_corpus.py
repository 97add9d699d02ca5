"""The built-in corpus: identical bytes every run, Dolma's format, read by the real reader."""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess import default_corpus
from preprocess.readers import Record, read_records, resolve_inputs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Written once for the module: generating it parses the whole stdlib (about 2.5 s)."""
    out = tmp_path_factory.mktemp("corpus")
    return out, default_corpus.write_default_corpus(out)


def test_deterministic_dolma_files_read_by_the_reader(tmp_path, corpus):
    out, a = corpus
    # Another process with another hash seed: set and dict order cannot leak into the bytes.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    subprocess.run([sys.executable, "-m", "preprocess.default_corpus", str(tmp_path / "b")], check=True,
                   env=env, cwd=Path(__file__).resolve().parents[1], capture_output=True)
    b = sorted((tmp_path / "b").glob("*.json.gz"))
    assert [p.name for p in a] == [f"python-docs-{i:04d}.json.gz" for i in range(4)]
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]

    inputs = resolve_inputs([str(out)])  # SHA256SUMS is not an input
    assert [i.path for i in inputs] == [str(p) for p in a]
    items = [item for inp in inputs for item in read_records(inp)]
    assert all(type(item) is Record for item in items)
    chars = sum(len(r.text) for r in items)
    assert 1000 < len(items) < 10_000 and 2_000_000 < chars < 10_000_000  # a few MB, a few thousand documents
    ids = [r.id for r in items]
    assert len(set(ids)) == len(ids)
    version = platform.python_version()
    assert ids[0] == f"python-{version}/topic/assert"
    assert f"python-{version}/stdlib/json.decoder.JSONDecoder" in ids

    with gzip.open(a[0], "rt", encoding="utf-8") as f:
        first = json.loads(f.readline())
    assert sorted(first) == ["added", "created", "id", "metadata", "source", "text"]
    assert first["source"] == "python-docs" and first["added"] == first["created"] == default_corpus.TIMESTAMP
    assert first["metadata"] == {"python_version": version, "kind": "topic", "path": "pydoc_data/topics.py"}
    assert a[0].read_bytes()[4:8] == b"\0\0\0\0"  # gzip mtime field

    sums = (out / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in a]


def test_ensure_is_idempotent_and_repairs(tmp_path, corpus):
    out = default_corpus.default_corpus_dir(tmp_path / "data" / "demo")
    assert out == tmp_path / "data" / ".default-corpus" / f"python-{platform.python_version()}-v1"
    shutil.copytree(corpus[0], out)
    paths = default_corpus.ensure_default_corpus(out)
    stamp = [p.stat().st_mtime_ns for p in paths]
    assert default_corpus.ensure_default_corpus(out) == paths
    assert [p.stat().st_mtime_ns for p in paths] == stamp  # intact: nothing rewritten
    good = paths[1].read_bytes()
    paths[1].write_bytes(good[:100])  # damaged: rewritten
    assert default_corpus.ensure_default_corpus(out) == paths
    assert paths[1].read_bytes() == good
