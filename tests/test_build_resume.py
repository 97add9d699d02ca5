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
from tests.test_build import FAST, build, file_hashes, make_corpus

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


def test_interrupted_after_max_tokens_is_reached_reruns_to_the_same_dataset(tmp_path, monkeypatch):
    """Stopped by --max-tokens, the build is cut off just before its manifest (the last moment a kill
    can land): the rerun must finish the same dataset, not read on past the limit."""
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=3, docs_per_file=60)
    assert build(corpus, tmp_path / "reference", "--max-tokens", "3000") == 0
    reference = file_hashes(tmp_path / "reference")
    assert shards.load_manifest(tmp_path / "reference")["stopped_at_max_tokens"]

    real = shards.write_manifest

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(shards, "write_manifest", killed)
    assert build(corpus, tmp_path / "out", "--max-tokens", "3000") != 0  # "interrupted; ... run it again"
    assert (tmp_path / "out" / ".build" / "state.json").exists()
    monkeypatch.setattr(shards, "write_manifest", real)
    assert build(corpus, tmp_path / "out", "--max-tokens", "3000") == 0
    assert file_hashes(tmp_path / "out") == reference
