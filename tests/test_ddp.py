"""DDP on CPU: 2 gloo processes x accumulation k log the losses of 1 process x accumulation 2k; a signal
to one rank stops both, at the next step where they synchronise."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, check_two_ranks_match_one_with_double_accumulation, losses, wait_for
from train.checkpoint import find_checkpoint

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def launch(data, out, overrides, nproc=2) -> list[str]:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "train", "--data", str(data), "--out", str(out), "--config", "demo"]
    for o in overrides:
        args += ["--set", o]
    return args


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_double_accumulation(tiny_dataset, task_files, tmp_path):
    """...with the evaluation's tasks: each rank scores half of the items, and the counts add up."""
    tasks = ",".join(str(f) for f in task_files)
    check_two_ranks_match_one_with_double_accumulation(tiny_dataset, tmp_path, "demo",
                                                       TINY + [f"training.eval_tasks={tasks}"])


@pytest.mark.slow
def test_two_compiled_gloo_ranks_match_one_compiled_process_with_double_accumulation(tiny_dataset, tmp_path):
    """training.compile=true under DDP: the model is compiled, then wrapped in DDP, whose hooks all-reduce
    the gradients of the compiled backward (inductor on CPU, gloo)."""
    check_two_ranks_match_one_with_double_accumulation(tiny_dataset, tmp_path, "demo", TINY + ["training.compile=true"])


def worker_pid(launcher_pid: int, rank: int) -> int | None:
    """The pid of the torchrun worker with RANK=rank, found through /proc (Linux)."""
    pending = [launcher_pid]
    while pending:
        pid = pending.pop()
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in env and pid != launcher_pid:
            return pid
        pending += [int(c) for c in children]
    return None


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="finds the workers through Linux's /proc")
def test_sigterm_to_one_rank_stops_both_at_the_next_log_step(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(launch(tiny_dataset, run, TINY + ["training.max_steps=100000", "training.log_interval=5",
                                                              "training.eval_interval=0",
                                                              "training.checkpoint_interval=100000"]),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(losses(run)) >= 2, proc, timeout=120)
    rank1 = worker_pid(proc.pid, 1)
    assert rank1 is not None
    os.kill(rank1, signal.SIGTERM)  # rank 0 is not signalled: it learns of the stop from rank 1's flag
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0 and "exitcode  : 75" in out, out  # each rank exits "preempted"
    assert "stopped by signal 15 (SIGTERM); continue with --resume" in out
    last = max(losses(run))
    assert last % 5 == 0  # the ranks agreed at a log step, and logged it
    assert find_checkpoint(run).name == f"step_{last:08d}"
