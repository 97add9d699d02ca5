"""DDP on CPU: 2 gloo processes x accumulation k log the losses of 1 process x accumulation 2k."""
import json
import math
import os
import subprocess
import sys

import pytest

from tests.test_train import TINY, losses

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_double_accumulation(tiny_dataset, tmp_path):
    common = TINY + ["training.max_steps=8", "training.checkpoint_interval=4", "training.eval_interval=4"]

    def run(out, launcher, accum):
        args = launcher + ["-m", "train", "--data", str(tiny_dataset), "--out", str(out), "--config", "demo"]
        for o in common + [f"training.grad_accum_steps={accum}"]:
            args += ["--set", o]
        done = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    out = run(tmp_path / "ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node", "2"], accum=2)
    assert "2 process(es)" in out
    run(tmp_path / "one", [sys.executable], accum=4)
    ddp, one = losses(tmp_path / "ddp"), losses(tmp_path / "one")
    assert sorted(ddp) == sorted(one) == list(range(1, 9))
    for step in one:
        assert math.isclose(ddp[step], one[step], rel_tol=1e-5), (step, ddp[step], one[step])
    evals = [[json.loads(line)["val_loss"] for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["type"] == "eval"] for name in ("ddp", "one")]
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(*evals)) and len(evals[0]) == 2
