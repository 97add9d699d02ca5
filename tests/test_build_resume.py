"""A real build subprocess killed with SIGKILL mid-way, then rerun: the result is byte-identical."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import shards
from tests.conftest import FAST, build, file_hashes, make_corpus

ROOT = Path(__file__).resolve().parents[1]


def _command(corpus: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "preprocess", "--input", str(corpus), "--out", str(out), *FAST, "--workers", "2"]


def _start(corpus: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(_command(corpus, out), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"the build ended before it could be killed: {proc.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the build made no progress"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


@pytest.mark.slow
def test_kill_9_mid_build_then_rerun_gives_identical_files(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=6, docs_per_file=250)
    assert build(corpus, tmp_path / "reference", "--workers", "2") == 0
    reference = file_hashes(tmp_path / "reference")
    n_train = sum(1 for name in reference if name.startswith("train_") and name.endswith(".bin"))
    assert n_train > 100

    out = tmp_path / "out"
    # first kill: as soon as the first shard appears; second: a good way further in
    _kill_when(_start(corpus, out), lambda: (out / "train_000000.bin").exists())
    assert not (out / shards.MANIFEST_NAME).exists()
    _kill_when(_start(corpus, out), lambda: (out / shards.shard_file_name("train", n_train // 2)).exists())
    assert not (out / shards.MANIFEST_NAME).exists()

    done = subprocess.run(_command(corpus, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "resuming the build" in done.stderr
    assert file_hashes(out) == reference
    assert not (out / ".build").exists()


@pytest.mark.parametrize("mode", ["--in-order", "sampled"])
def test_interrupted_after_max_tokens_is_reached_reruns_to_the_same_dataset(tmp_path, monkeypatch, mode):
    """Stopped by --max-tokens (in order, or by the budgets of a sampled plan), the build is cut off just
    before its manifest (the last moment a kill can land): the rerun must finish the same dataset, not
    read on past the limit."""
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=3, docs_per_file=60)
    args = ["--max-tokens", "3000"] + ([mode] if mode != "sampled" else [])
    assert build(corpus, tmp_path / "reference", *args) == 0
    reference = file_hashes(tmp_path / "reference")
    m = shards.load_manifest(tmp_path / "reference")
    if mode == "sampled":
        assert m["plan"]["mode"] == "proportional"
        assert any(x["status"] == "partly read: its token budget is reached" for x in m["inputs"])
    else:
        assert m["stopped_at_max_tokens"]

    real = shards.write_manifest

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(shards, "write_manifest", killed)
    assert build(corpus, tmp_path / "out", *args) != 0  # "interrupted; ... run it again"
    assert (tmp_path / "out" / ".build" / "state.json").exists()
    monkeypatch.setattr(shards, "write_manifest", real)
    assert build(corpus, tmp_path / "out", *args) == 0
    assert file_hashes(tmp_path / "out") == reference


def _mixed_corpus(root: Path) -> None:
    """Every local input kind in one corpus, with bad records, so that a kill can land while any of
    them is being read: multi-member gzip, multi-frame zstd, plain JSONL, parquet, txt."""
    import gzip
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    from tests.conftest import sample_texts

    texts = sample_texts(1600, seed=7)
    root.mkdir(parents=True)

    def lines(part, start):
        out = []
        for k, t in enumerate(part):
            out.append(json.dumps({"id": f"m{start + k}", "text": t}).encode())
            if k % 97 == 0:
                out += [b'{"text": 42}', b"", b'{"text": "a", oops}']
        return b"\n".join(out) + b"\n"
    (root / "a.json.gz").write_bytes(gzip.compress(lines(texts[:200], 0)) + gzip.compress(lines(texts[200:400], 200)))
    z = zstandard.ZstdCompressor()
    (root / "b.jsonl.zst").write_bytes(z.compress(lines(texts[400:600], 400)) + z.compress(lines(texts[600:800], 600)))
    (root / "c.jsonl").write_bytes(lines(texts[800:1000], 800))
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(400)], "text": texts[1000:1400]}), root / "d.parquet",
                   row_group_size=64)
    for k, t in enumerate(texts[1400:1600:20]):
        (root / f"e{k:02d}.txt").write_text(t)


@pytest.mark.slow
def test_killed_at_many_moments_across_every_input_kind_gives_identical_files(tmp_path):
    corpus = tmp_path / "corpus"
    _mixed_corpus(corpus)
    assert build(corpus, tmp_path / "reference", "--workers", "2") == 0
    reference = file_hashes(tmp_path / "reference")
    m = shards.load_manifest(tmp_path / "reference")
    assert {x["kind"] for x in m["inputs"]} == {"jsonl.gz", "jsonl.zst", "jsonl", "parquet", "txt"}
    assert sum(m["skipped"].values()) > 0
    n_train = sum(1 for name in reference if name.startswith("train_") and name.endswith(".bin"))
    assert n_train > 60

    out = tmp_path / "out"
    for k in (1, n_train // 5, 2 * n_train // 5, 3 * n_train // 5, 4 * n_train // 5):
        name = shards.shard_file_name("train", k)
        _kill_when(_start(corpus, out), lambda name=name: (out / name).exists())
    done = subprocess.run(_command(corpus, out), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert file_hashes(out) == reference
