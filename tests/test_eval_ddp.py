"""Evaluation under DDP (2 gloo ranks through torchrun) gives one process's numbers: the val loss and bits
per byte, and every task's counts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import shards
import tokenizer as tk
from tests.conftest import ROOT, make_random_run
from tests.test_tasks import task_files
from train.checkpoint import load_model
from train.evaluate import byte_length_table, val_metrics
from train.loader import ValWindows
from train.tasks import load_tasks, score_tasks

WORKER = textwrap.dedent("""
    import json, sys
    import torch, torch.distributed as dist
    import shards, tokenizer as tk
    from train.checkpoint import load_model
    from train.evaluate import byte_length_table, val_metrics
    from train.loader import ValWindows
    from train.tasks import load_tasks, score_tasks

    run, data, out, *specs = sys.argv[1:]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, _, tok_path = load_model(run)
    tok, cpu = tk.load(tok_path), torch.device("cpu")
    val = ValWindows(data, shards.load_manifest(data), model.cfg.seq_len, 10**9)
    result = {"val": val_metrics(model, val, 3, cpu, None, rank, world, byte_length_table(tok)),
              "tasks": score_tasks(model, load_tasks(specs), tok, cpu, None, rank, world, batch_size=4)}
    if rank == 0:
        open(out, "w").write(json.dumps(result))
    dist.destroy_process_group()
""")


@pytest.mark.slow
def test_two_gloo_ranks_evaluate_as_one_process(tmp_path, tiny_dataset):
    run = make_random_run(tmp_path, tiny_dataset)
    files = task_files(tmp_path / "tasks", n=11)  # odd: the ranks get different numbers of items
    specs = list(files.values())
    (tmp_path / "worker.py").write_text(WORKER, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    args = [str(tmp_path / "worker.py"), str(run), str(tiny_dataset), str(tmp_path / "ddp.json"), *specs]
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    ddp = json.loads((tmp_path / "ddp.json").read_text())

    model, _, tok_path = load_model(run)
    tok, cpu = tk.load(tok_path), torch.device("cpu")
    val = ValWindows(tiny_dataset, shards.load_manifest(tiny_dataset), model.cfg.seq_len, 10**9)
    assert len(val) >= 2  # both ranks read windows
    one = val_metrics(model, val, 3, cpu, byte_lengths=byte_length_table(tok))
    assert (ddp["val"]["tokens"], ddp["val"]["bytes"]) == (one["tokens"], one["bytes"])
    for key in ("val_loss", "val_ppl", "val_bpb"):
        assert ddp["val"][key] == pytest.approx(one[key], rel=1e-6), key
    tasks = score_tasks(model, load_tasks(specs), tok, cpu, batch_size=4)
    for name, scores in tasks.items():
        got = ddp["tasks"][name]
        assert got.pop("seconds") > 0 and scores.pop("seconds") > 0
        if "ppl" in scores:
            assert got.pop("ppl") == pytest.approx(scores.pop("ppl"), rel=1e-6)
        assert got == scores, name
