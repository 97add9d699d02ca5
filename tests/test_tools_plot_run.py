"""tools/plot_run.py on hand-written metrics.jsonl files (the trainer's record format)."""
from __future__ import annotations

import json

from tests.conftest import load_tool

plot_run = load_tool("plot_run")


def write_run(path, records, tail=""):
    path.mkdir(parents=True)
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


RECORDS = [
    {"step": 10, "loss": 5.0, "lr": 1e-4, "tokens": 1000},
    {"step": 20, "loss": 4.0, "lr": 2e-4, "tokens": 2000},
    {"step": 20, "val_loss": 4.5},
    {"step": 30, "loss": 3.5, "lr": 1.5e-4, "tokens": 3000},
    {"type": "eval", "step": 30, "loss": 3.5, "lr": 1.5e-4, "val_loss": 4.2, "tokens": 3000},
]


def test_summary_and_plot(capsys, tmp_path):
    a = write_run(tmp_path / "a", RECORDS)
    b = write_run(tmp_path / "b", RECORDS[:2])
    out_png = tmp_path / "runs.png"
    assert plot_run.main([str(a), str(b), "--out", str(out_png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["runs"][0] == {"run": str(a), "records": 5, "last_step": 30, "tokens": 3000, "last_loss": 3.5,
                            "last_val_loss": 4.2, "best_val_loss": 4.2, "best_val_step": 30, "last_val_bpb": None,
                            "best_val_bpb": None, "tasks": {}, "last_lr": 1.5e-4}
    assert r["runs"][1]["best_val_loss"] is None and r["runs"][1]["last_lr"] == 2e-4
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_val_points_get_tokens_from_the_training_records():
    s = plot_run.series(RECORDS)
    assert s["val_tokens"] == [(2000, 4.5), (3000, 4.2)]
    assert s["loss_tokens"] == [(1000, 5.0), (2000, 4.0), (3000, 3.5)]
    assert s["lr_step"] == [(10, 1e-4), (20, 2e-4), (30, 1.5e-4)]


def test_half_written_last_line_is_skipped_with_a_note(capsys, tmp_path):
    run = write_run(tmp_path / "r", RECORDS, tail='{"step": 40, "lo')
    assert plot_run.main([str(run)]) == 0
    out, err = capsys.readouterr()
    assert err == f"note: {run / 'metrics.jsonl'}:6: skipped a half-written last line\n"
    assert out.splitlines()[1].split()[:2] == [str(run), "30"]


def test_errors_name_the_file(capsys, tmp_path):
    assert plot_run.main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {tmp_path / 'none' / 'metrics.jsonl'} does not exist")
    run = write_run(tmp_path / "bad", RECORDS[:1], tail='oops\n{"step": 2, "loss": 1.0}\n')
    assert plot_run.main([str(run)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {run / 'metrics.jsonl'}:2: not valid JSON")


# what the trainer logs once it measures bits per byte, tasks and samples (train/evaluate.py, train/tasks.py)
WITH_TASKS = RECORDS[:2] + [
    {"type": "eval", "step": 20, "loss": 4.0, "val_loss": 4.5, "val_ppl": 90.0, "val_bpb": 1.9, "tokens": 2000},
    {"type": "tasks", "step": 20, "tokens": 2000, "seconds": 1.5,
     "tasks": {"hellaswag": {"acc": 0.25, "acc_norm": 0.26, "items": 100, "seconds": 1.0},
               "lambada_openai": {"acc": 0.01, "acc_norm": None, "ppl": 900.0, "items": 50, "seconds": 0.5}}},
    {"type": "samples", "step": 20, "samples": [{"prompt": "The capital of France is", "completion": " the"}]},
    {"step": 30, "loss": 3.5, "lr": 1.5e-4, "tokens": 3000},
    {"type": "eval", "step": 30, "loss": 3.5, "val_loss": 4.2, "val_bpb": 1.7},
    {"type": "tasks", "step": 30, "tasks": {"hellaswag": {"acc": 0.27, "acc_norm": 0.3, "items": 100}}},
]


def test_bits_per_byte_and_task_curves(capsys, tmp_path):
    s = plot_run.series(WITH_TASKS)
    assert s["bpb_step"] == [(20, 1.9), (30, 1.7)] and s["bpb_tokens"] == [(2000, 1.9), (3000, 1.7)]
    # multiple choice by acc_norm, LAMBADA (no acc_norm) by acc; tokens from the training records when absent
    assert s["tasks_tokens"] == {"hellaswag": [(2000, 0.26), (3000, 0.3)], "lambada_openai": [(2000, 0.01)]}
    run = write_run(tmp_path / "t", WITH_TASKS)
    out_png = tmp_path / "t.png"
    assert plot_run.main([str(run), str(write_run(tmp_path / "plain", RECORDS)), "--out", str(out_png), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)["runs"][0]
    assert (r["last_val_bpb"], r["best_val_bpb"]) == (1.7, 1.7)
    assert r["tasks"] == {"hellaswag": {"step": 30, "acc": 0.27, "acc_norm": 0.3, "items": 100},
                          "lambada_openai": {"step": 20, "acc": 0.01, "acc_norm": None, "items": 50}}
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_run.main([str(run)]) == 0
    out = capsys.readouterr().out
    assert "val bpb" in out.splitlines()[0] and "1.7000" in out.splitlines()[1]
    assert f"  {run}: hellaswag at step 30: acc 0.2700, acc_norm 0.3000 (100 items)" in out
