"""What an evaluation in the training loop measures: val loss and bits per byte, task scores, samples;
logged to metrics.jsonl and TensorBoard, printed in the summary, and exact across a resume."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, losses

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(data: Path, out: Path, *sets: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "train", "--data", str(data), "--out", str(out), "--config", "demo"]
    for o in TINY + list(sets):
        args += ["--set", o]
    return subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=300)


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["type"] == kind]


def evaluated(data: Path, out: Path, task_files: list[Path], *sets: str) -> subprocess.CompletedProcess:
    return cli(data, out, "training.max_steps=12", "training.eval_interval=6", "training.checkpoint_interval=6",
               "training.keep_checkpoints=3", "training.sample_tokens=6", "logging.tensorboard=true",
               f"training.eval_tasks={','.join(map(str, task_files))}", *sets)


@pytest.fixture(scope="module")
def run_12(tiny_dataset, task_files, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("evals") / "run"
    done = evaluated(tiny_dataset, run, task_files)
    assert done.returncode == 0, done.stderr
    (run / "stdout.txt").write_text(done.stdout)
    return run


@pytest.mark.slow
def test_each_evaluation_logs_bits_per_byte_task_scores_and_samples(run_12):
    evals = records(run_12, "eval")
    assert [r["step"] for r in evals] == [6, 12]
    for r in evals:
        assert 0 < r["val_bpb"] < r["val_loss"] * 2 and r["eval_s"] > 0
        assert set(r["tasks"]) == {"next_words", "last_word"}
        choice, last_word = r["tasks"]["next_words"], r["tasks"]["last_word"]
        assert choice["items"] == last_word["items"] == 24
        assert 0 <= choice["acc"] <= 1 and 0 <= choice["acc_norm"] <= 1
        assert last_word["acc_norm"] is None and last_word["ppl"] > 1
    samples = records(run_12, "samples")
    assert [r["step"] for r in samples] == [6, 12] and len(samples[0]["samples"]) == 6
    assert samples[0]["samples"][0]["prompt"] == "The capital of France is"
    out = (run_12 / "stdout.txt").read_text()
    assert "| bpb " in out and "| next_words acc_norm " in out and "| last_word acc " in out
    assert "    'The capital of France is' -> " in out
    assert "val bits per byte" in out and "tasks: next_words acc_norm" in out and "(24 items)" in out
    assert "peak memory: " in out and "% of it)" in out
    train = records(run_12, "train")
    assert all(r["peak_mem_host"] > 0 and r["wall_tokens_per_s"] > 0 for r in train)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(run_12 / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"eval/val_bpb", "eval/tasks/next_words/acc_norm", "eval/tasks/last_word/ppl",
            "train/wall_tokens_per_s"} <= set(tags["scalars"])
    assert "samples/text_summary" in tags["tensors"]


@pytest.mark.slow
def test_a_resume_with_tasks_and_samples_is_exact(tiny_dataset, task_files, run_12, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_12, run)
    shutil.rmtree(run / "checkpoints" / "step_00000012")
    (run / "checkpoints" / "latest").write_text("step_00000006\n")
    done = evaluated(tiny_dataset, run, task_files)
    assert done.returncode == 0, done.stderr
    assert "resuming from" in done.stdout
    assert losses(run) == losses(run_12)
    strip = [{k: v for k, v in r.items() if k not in ("eval_s", "tasks")} | {"tasks": {
        name: {k: v for k, v in score.items() if k != "seconds"} for name, score in r["tasks"].items()}}
        for r in records(run, "eval")]
    assert strip == [{k: v for k, v in r.items() if k not in ("eval_s", "tasks")} | {"tasks": {
        name: {k: v for k, v in score.items() if k != "seconds"} for name, score in r["tasks"].items()}}
        for r in records(run_12, "eval")]
    assert records(run, "samples") == records(run_12, "samples")


def test_a_missing_task_file_is_named_before_anything_trains(tiny_dataset, tmp_path):
    done = cli(tiny_dataset, tmp_path / "run", f"training.eval_tasks={tmp_path / 'hellaswag.jsonl'}")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert f"task file {tmp_path / 'hellaswag.jsonl'} does not exist" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
