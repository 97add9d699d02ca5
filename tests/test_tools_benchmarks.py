"""The stage 1 and trainer benchmarks run end to end on tiny settings and print their tables.

They assert nothing about speed (machines are shared and noisy): the benchmarks' own checks run
(tiktoken and HF give the same token counts, the builder writes every document), and the tables hold
every row a closing note quotes.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_tool(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_bench_preprocess_prints_every_row(tmp_path):
    out = run_tool("tools/bench_preprocess.py", "--mb", "0.3", "--repeat", "1", "--vocab-size", "2000",
                   "--dir", str(tmp_path / "bench"))
    for row in ("HF tokenizers encode_batch", "raw tiktoken, 2 threads", "raw tiktoken arrays, 2 processes",
                "builder --workers 2 (whole build)", "builder --workers 2 (encoding phase)",
                "builder -w2 / HF encode_batch", "builder -w2 / raw tiktoken 2 threads",
                "main thread of a -w2 encoding pass", "peak RSS of a build", "BPE training, vocab 2000",
                "sampled build over HTTP", "plain local build of those files", "sampled over HTTP / plain local",
                "planning 2,400 URLs"):
        assert row in out, row
    assert "same vocabulary: True" in out


@pytest.mark.slow
def test_bench_train_prints_every_row():
    out = run_tool("tools/bench_train.py", "--steps", "2", "--warmup", "1", "--repeat", "1", "--loader-shape", "4x64")
    for recipe in ("demo", "demo_modern"):  # both recipes by default, each a ratio of its own bare loop
        assert re.search(rf"^{recipe} +[\d,]+ +[\d,]+ +[\d.]+x", out, re.M), out
    for row in ("bare loop tok/s", "trainer tok/s", "trainer / bare", "optimizer muon", "loader: vectorized gather",
                "loader: per-window Python loop", "loader: Loader.next_batch"):
        assert row in out, row


@pytest.mark.slow
def test_bench_checkpoint_prints_every_row(tmp_path):
    out = run_tool("tools/bench_checkpoint.py", "--preset", "demo", "--vocab-size", "512", "--repeat", "1",
                   "--out", str(tmp_path))
    for row in ("written on the training thread (before)", "background: snapshot on the training thread",
                "background: steps slowed while writing", "stall after / before:"):
        assert row in out, row
    assert not list(tmp_path.iterdir())  # its checkpoints were written in a temporary directory, then removed
