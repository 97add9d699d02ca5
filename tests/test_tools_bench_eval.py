"""tools/bench_eval.py end to end on a tiny model: every row of its table, and task sizes counted from
files when given (nothing about speed is asserted)."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT
from tests.test_tasks import task_files


def test_bench_eval_prints_every_row(tmp_path, tiny_dataset):
    files = task_files(tmp_path / "tasks", n=5)
    args = [sys.executable, "tools/bench_eval.py", "--config", "demo", "--vocab-size", "300", "--repeats", "1",
            "--sample-tokens", "4", "--tokenizer", str(tiny_dataset / "tokenizer.json"),
            "--tasks", files["hellaswag"], "--tasks", files["lambada"]]
    for s in ("model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.seq_len=64",
              "training.eval_interval=10", "training.eval_windows=4"):
        args += ["--set", s]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for row in ("val bits per byte          4 windows x 64", "task hellaswag             5 x 4 x ~",
                "task lambada               5 x 1 x ~", "samples", "all of it", "training between two       10 steps",
                "share of wall time"):
        assert row in out, row
    assert "(counted)" in out and "(estimated)" not in out
