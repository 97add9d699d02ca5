"""tools/bench_generate.py on a tiny preset file (the real run uses the small preset; see its --help)."""
from __future__ import annotations

import json

from tests.conftest import load_tool

bench_generate = load_tool("bench_generate")


def test_bench_reports_both_modes_and_the_ratio(capsys, tmp_path):
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps({"model": {"seq_len": 32, "n_layers": 1, "d_model": 16, "n_heads": 2}}))
    argv = ["--preset", str(preset), "--vocab-size", "50", "--context", "16", "--new-tokens", "3", "--repeats", "1",
            "--device", "cpu"]
    assert bench_generate.main(argv + ["--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert (r["n_layers"], r["d_model"], r["context"], r["new_tokens"]) == (1, 16, 16, 3)
    assert r["ratio"] == r["no_cache"]["decode_s"] / r["kv_cache"]["decode_s"]
    assert bench_generate.main(argv) == 0
    assert "KV cache speedup" in capsys.readouterr().out


def test_bench_rejects_a_context_past_seq_len(capsys, tmp_path):
    preset = tmp_path / "tiny.json"
    preset.write_text(json.dumps({"model": {"seq_len": 32, "n_layers": 1, "d_model": 16, "n_heads": 2}}))
    assert bench_generate.main(["--preset", str(preset), "--context", "40", "--device", "cpu"]) == 2
    assert capsys.readouterr().err == "error: context 40 + 16 new tokens exceeds seq_len 32\n"
