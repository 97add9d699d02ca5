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
                            "last_val_loss": 4.2, "best_val_loss": 4.2, "best_val_step": 30, "last_lr": 1.5e-4}
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
