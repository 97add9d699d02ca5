"""End to end: the built-in corpus -> preprocess -> train a few steps -> the loss falls along a golden curve.

The curve is kept in tests/golden/train_e2e_loss.json so a regression in learning (model, optimizer,
schedule, loader) shows up as a different curve. Regenerate it after an intended change with
``UPDATE_GOLDEN=1 pytest tests/test_train_e2e.py`` and say why in the commit.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden" / "train_e2e_loss.json"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
# fp32 on one thread; still, CPU kernels may differ slightly across machines and torch builds
TOLERANCE = 0.05


@pytest.mark.slow
def test_loss_falls_on_the_built_in_corpus_along_the_golden_curve(tmp_path):
    data, run = tmp_path / "data", tmp_path / "run"
    subprocess.run([sys.executable, "-m", "preprocess", "--out", str(data), "--vocab-size", "1024",
                    "--max-tokens", "300000", "--val-fraction", "0.05", "--quiet"], env=ENV, check=True)
    sets = ["model.seq_len=64", "model.n_layers=2", "model.d_model=64", "model.n_heads=2",
            "training.batch_size=16", "training.max_steps=200", "training.warmup_steps=20", "training.lr=5e-3",
            "training.log_interval=20", "training.eval_interval=50", "training.eval_windows=32",
            "training.checkpoint_interval=200", "training.device=cpu", "training.precision=fp32"]
    args = [sys.executable, "-m", "train", "--data", str(data), "--out", str(run), "--config", "demo"]
    for s in sets:
        args += ["--set", s]
    subprocess.run(args, env=ENV, check=True, capture_output=True)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    curve = {"train": {r["step"]: round(r["loss"], 4) for r in records if r["type"] == "train"},
             "val": {r["step"]: round(r["val_loss"], 4) for r in records if r["type"] == "eval"}}
    train = list(curve["train"].values())
    assert abs(train[0] - math.log(1024)) < 0.6  # the first log averages steps 1..20 of a fast fall
    # the unigram entropy of these train tokens is 5.94 nats: below it, the model uses context
    assert train[-1] < 5.6, "the loss did not fall below what token frequencies alone give"
    assert list(curve["val"].values()) == sorted(curve["val"].values(), reverse=True)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(curve, indent=1) + "\n")
    golden = json.loads(GOLDEN.read_text())
    for kind in ("train", "val"):
        got = {str(k): v for k, v in curve[kind].items()}
        assert got.keys() == golden[kind].keys()
        for step, loss in golden[kind].items():
            assert abs(got[step] - loss) < TOLERANCE, f"{kind} loss at step {step}: {got[step]}, golden {loss}"
