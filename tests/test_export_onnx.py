"""tools/export_onnx.py: the ONNX file runs in onnxruntime with dynamic shapes and gives our logits."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import make_random_run
from train.checkpoint import load_model

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import export_onnx  # noqa: E402

FP32_TOLERANCE = 1e-4  # max abs logit difference, ORT fp32 vs PyTorch fp32
# int8 dynamic quantization of these tiny random-weight models (logits of magnitude ~5): measured
# max abs differences were 0.11 (default) and 0.23 (RoPE+SwiGLU+RMSNorm); the bounds leave 2x room
INT8_TOLERANCE = 0.5
INT8_MIN_TOP1 = 0.75

ARCHS = {"default": dict(), "rope-swiglu-rmsnorm": dict(rope=True, swiglu=True, rmsnorm=True, bias=False)}


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_onnx_fp32_and_int8_agree_with_pytorch(tmp_path, tiny_dataset, arch, capsys):
    run = make_random_run(tmp_path, tiny_dataset, **ARCHS[arch])
    out = tmp_path / "onnx" / "model.onnx"
    export_onnx.main([str(run), "--out", str(out), "--int8"])
    printed = capsys.readouterr().out
    assert "fp32" in printed and "int8" in printed and "top-1 agreement" in printed

    int8 = tmp_path / "onnx" / "model.int8.onnx"
    assert out.exists() and int8.exists()
    assert int8.stat().st_size < out.stat().st_size / 2  # weights stored as int8
    model, cfg, _ = load_model(run, device="cpu")
    fp32_sess, int8_sess = export_onnx.session(out), export_onnx.session(int8)
    assert [i.name for i in fp32_sess.get_inputs()] == ["input_ids"]
    assert [o.name for o in fp32_sess.get_outputs()] == ["logits"]
    g = torch.Generator().manual_seed(3)
    for shape in [(1, 1), (1, cfg.seq_len), (5, 7)]:  # neither is the traced (2, 16): the axes are dynamic
        idx = torch.randint(0, cfg.vocab_size, shape, generator=g)
        with torch.no_grad():
            expected = model(idx)[0].numpy()
        got = fp32_sess.run(["logits"], {"input_ids": idx.numpy()})[0]
        assert got.shape == (*shape, cfg.vocab_size)
        assert np.abs(got - expected).max() < FP32_TOLERANCE
        assert (got.argmax(-1) == expected.argmax(-1)).all()
        q = int8_sess.run(["logits"], {"input_ids": idx.numpy()})[0]
        agree = export_onnx.agreement(expected, q)
        assert agree["max_abs_diff"] < INT8_TOLERANCE, agree
        if shape != (1, 1):
            assert agree["top1_agreement"] >= INT8_MIN_TOP1, agree


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_kv_cache_export_generates_what_pytorch_generates(tmp_path, tiny_dataset, arch, capsys):
    """--kv-cache: a prompt with empty pasts, then one token at a time fed the presents; greedy decoding
    through onnxruntime picks PyTorch's tokens with PyTorch's logits."""
    run = make_random_run(tmp_path, tiny_dataset, **ARCHS[arch])
    out = tmp_path / "onnx" / "decoder.onnx"
    export_onnx.main([str(run), "--out", str(out), "--kv-cache"])
    assert "KV cache" in capsys.readouterr().out
    model, cfg, _ = load_model(run, device="cpu")
    model = model.float().eval()
    sess = export_onnx.session(out)
    assert [i.name for i in sess.get_inputs()] == ["input_ids", "past_keys", "past_values"]

    prompt = torch.tensor([[5, 17, 42, 7], [9, 9, 100, 3]])
    ids_pt, ids_ort = prompt.clone(), prompt.numpy().copy()
    cache = model.new_kv_cache(2, cfg.seq_len, dtype=torch.float32)
    past_k = past_v = export_onnx.empty_past(cfg, 2)
    step_in_pt, step_in_ort, start = prompt, prompt.numpy(), 0
    with torch.no_grad():
        for _ in range(cfg.seq_len - prompt.shape[1]):  # to the model's full length
            ref = model(step_in_pt, kv_cache=cache, start_pos=start)[0][:, -1].numpy()
            logits, past_k, past_v = sess.run(None, {"input_ids": step_in_ort, "past_keys": past_k,
                                                     "past_values": past_v})
            assert np.abs(logits[:, -1] - ref).max() < FP32_TOLERANCE
            start += step_in_pt.shape[1]
            step_in_pt = torch.from_numpy(ref.argmax(-1))[:, None]
            step_in_ort = logits[:, -1].argmax(-1)[:, None].astype(np.int64)
            ids_pt, ids_ort = torch.cat((ids_pt, step_in_pt), 1), np.concatenate((ids_ort, step_in_ort), 1)
    assert past_k.shape == (cfg.n_layers, 2, cfg.n_heads, cfg.seq_len - 1, cfg.d_model // cfg.n_heads)
    assert np.array_equal(ids_pt.numpy(), ids_ort)


def test_agreement_counts_exactly():
    reference = np.array([[[0.0, 1.0, 0.0], [2.0, 0.0, 0.0]]], dtype=np.float32)  # argmax 1, 0
    other = np.array([[[0.0, 1.5, 0.0], [0.0, 0.0, 2.0]]], dtype=np.float32)  # argmax 1, 2
    assert export_onnx.agreement(reference, other) == {"max_abs_diff": 2.0, "top1_agreement": 0.5, "positions": 2}


def test_bad_out_name_and_missing_run_are_actionable(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        export_onnx.main([str(tmp_path), "--out", str(tmp_path / "model.bin")])
    assert e.value.code == 1
    assert "should end in .onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        export_onnx.main([str(tmp_path), "--out", str(tmp_path / "model.onnx")])
    assert e.value.code == 1
    assert "has no complete checkpoint" in capsys.readouterr().err


def test_bench_onnx_runs_both_tables_on_a_trained_run(tmp_path, tiny_dataset, capsys):
    import bench_onnx
    run = make_random_run(tmp_path, tiny_dataset)
    bench_onnx.main([str(run), "--shapes", "1x8,2x16", "--decode", "6+5", "--repeats", "1", "--warmup", "0",
                     "--threads", "1"])
    out = capsys.readouterr().out
    rows = {line.split()[0] + " " + line.split()[1]: line.split() for line in out.splitlines()
            if line.strip().startswith(("1x8", "2x16", "PyTorch", "ORT"))}
    assert {"1x8 ORT", "2x16 ORT", "ORT fp32", "ORT int8", "PyTorch fp32"} <= set(rows)
    assert float(rows["ORT fp32"][-1]) < FP32_TOLERANCE  # last step's logits through the cached graph
    assert "6-token prompt, then 5 single tokens" in out
    with pytest.raises(SystemExit):
        bench_onnx.main([str(run), "--decode", "30+30"])  # beyond seq_len 32
