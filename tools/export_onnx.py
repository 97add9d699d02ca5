"""Export a trained model's forward pass to ONNX for CPU inference, optionally int8-quantized.

    python tools/export_onnx.py runs/demo --out exports/demo.onnx            # fp32
    python tools/export_onnx.py runs/demo --out exports/demo.onnx --int8     # and exports/demo.int8.onnx

The graph maps ``input_ids`` (batch, seq) int64 to ``logits`` (batch, seq, vocab_size) float32; batch
and seq are dynamic (seq up to the model's ``seq_len``). It is the full forward without a KV cache,
for scoring and batch inference. ``--kv-cache`` exports the forward with a cache instead, for
token-by-token generation: ``past_keys`` and ``past_values`` (n_layers, batch, n_heads, past,
head_dim) in, the same with ``past + seq`` positions out as ``present_keys`` / ``present_values``; the
first call passes empty pasts (past = 0), each later call the presents of the one before. ``--int8``
adds a copy made by ONNX Runtime's dynamic quantization: weights of MatMul and Gather (embedding)
nodes stored as int8, activations quantized per call; norms, softmax and the rest stay fp32.

Export uses the TorchScript-based exporter (``torch.onnx.export(dynamo=False)``), which needs nothing
beyond torch; the dynamo exporter would need ``onnxscript``. After writing, each file is run with
onnxruntime on random tokens and compared with PyTorch (with ``--kv-cache``: a prompt then single
tokens, against the model's own KV cache): the largest absolute logit difference and how often the
top-1 token agrees. ``tools/bench_onnx.py`` measures speed.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

from train.checkpoint import CheckpointError, find_checkpoint, load_model  # noqa: E402
from train.model import GPT  # noqa: E402

OPSET = 17
TRACE_SHAPE = (2, 16)  # example input for tracing; the exported axes are dynamic
CHECK_SHAPES = ((1, 1), (3, 37))  # differ from TRACE_SHAPE so the check exercises the dynamic axes
FP32_TOLERANCE = 1e-4  # max abs logit difference ORT fp32 vs PyTorch fp32 that counts as a correct export


class ExportError(Exception):
    """A model or file that cannot be exported; the message says why and what to do."""


class LogitsOnly(torch.nn.Module):
    """The forward as ONNX sees it: input_ids (B, T) -> logits (B, T, vocab_size)."""

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(input_ids)
        return logits


class WithPast(torch.nn.Module):
    """The forward with a KV cache as ONNX sees it (``--kv-cache``):

    input_ids (B, T), past_keys and past_values (n_layers, B, n_heads, P, head_dim)
    -> logits (B, T, vocab_size), present_keys and present_values (n_layers, B, n_heads, P + T, head_dim).

    The first call passes the prompt with P = 0 (empty pasts), each later call the new tokens and the
    presents of the call before. It is the model's own layers, with the cache as inputs and outputs
    instead of the preallocated buffers of ``GPT.new_kv_cache``; :func:`check_with_past` holds it to
    that cache's logits.
    """

    def __init__(self, model: GPT):
        super().__init__()
        self.model = model

    def forward(self, input_ids, past_keys, past_values):
        m = self.model
        T, P = input_ids.shape[1], past_keys.shape[3]
        positions = torch.arange(T, device=input_ids.device) + P
        x, rope = m.embed(input_ids, positions)
        # query i sits at position P + i and may see keys 0..P + i
        mask = torch.arange(T + P, device=input_ids.device)[None, :] <= positions[:, None]
        keys, values = [], []
        for layer, block in enumerate(m.blocks):  # Block.forward, with the cache passed in and out
            q, k, v = block.attn.heads(block.norm1(x), rope)
            k = torch.cat((past_keys[layer], k), dim=2)
            v = torch.cat((past_values[layer], v), dim=2)
            keys.append(k)
            values.append(v)
            x = x + block.attn.out(torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask))
            x = x + block.mlp(block.norm2(x))
        return m.head(x), torch.stack(keys), torch.stack(values)


def empty_past(cfg, batch: int, dtype=np.float32) -> np.ndarray:
    """The past_keys / past_values of a first call: no positions yet."""
    return np.zeros((cfg.n_layers, batch, cfg.n_heads, 0, cfg.d_model // cfg.n_heads), dtype=dtype)


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ExportError("onnx and onnxruntime are needed; run `pip install -e '.[tools]'`") from None


def int8_path(path: Path) -> Path:
    """exports/demo.onnx -> exports/demo.int8.onnx"""
    return path.with_name(path.stem + ".int8" + path.suffix)


def export_fp32(model: GPT, path: Path, kv_cache: bool = False) -> None:
    """Trace ``model`` (fp32, CPU, eval) into ``path`` with dynamic batch and sequence axes (and, with
    ``kv_cache``, the :class:`WithPast` graph with a dynamic past length)."""
    _require_onnx()
    import onnx

    model = model.float().cpu().eval()
    b, t = TRACE_SHAPE
    example = torch.zeros(b, min(t, model.cfg.seq_len), dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    if kv_cache:
        c = model.cfg
        past = torch.zeros(c.n_layers, b, c.n_heads, 3, c.d_model // c.n_heads)  # traced with P > 0
        module, args = WithPast(model), (example[:, :2], past, past)
        names = (["input_ids", "past_keys", "past_values"], ["logits", "present_keys", "present_values"])
        cache_axes = {1: "batch", 3: "past"}
        axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"},
                "past_keys": cache_axes, "past_values": cache_axes,
                "present_keys": {1: "batch", 3: "past_plus_seq"}, "present_values": {1: "batch", 3: "past_plus_seq"}}
    else:
        module, args = LogitsOnly(model), (example,)
        names = (["input_ids"], ["logits"])
        axes = {"input_ids": {0: "batch", 1: "seq"}, "logits": {0: "batch", 1: "seq"}}
    with warnings.catch_warnings():
        # the length check in GPT.forward is a Python comparison the tracer records as a constant;
        # lengths above seq_len are the caller's to avoid (ONNX Runtime then fails on the slice of
        # position embeddings / RoPE tables)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=OPSET,
                          input_names=names[0], output_names=names[1], dynamic_axes=axes)
    onnx.checker.check_model(str(path))


def quantize_int8(fp32: Path, out: Path, per_channel: bool = False) -> None:
    """ONNX Runtime dynamic quantization: int8 weights, activations quantized at run time.

    The fp32 graph is first pre-processed as ONNX Runtime recommends (its graph optimizations and ONNX
    shape inference; the symbolic shape pass is skipped, it cannot resolve the dynamic axes here).
    Without that step the quantized RMSNorm graph (two float->float Casts, from ``x.float()``) fails to
    load in onnxruntime 1.32: its basic graph optimizations drop a Cast that a later node still reads.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        pre = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=per_channel)


def session(path: Path, threads: int = 0, spin: bool = True):
    """An ONNX Runtime CPU session; ``threads`` = 0 lets ORT choose. ``spin=False`` stops its idle
    worker threads from busy-waiting after a call (which would take CPU from whatever runs next)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def agreement(reference: np.ndarray, other: np.ndarray) -> dict:
    """Max abs logit difference and the fraction of positions whose argmax token is the same."""
    return {"max_abs_diff": float(np.abs(reference - other).max()),
            "top1_agreement": float((reference.argmax(-1) == other.argmax(-1)).mean()),
            "positions": int(np.prod(reference.shape[:-1]))}


@torch.no_grad()
def check(model: GPT, path: Path, shapes=CHECK_SHAPES, seed: int = 0) -> dict:
    """Agreement of the ONNX file with PyTorch fp32 over random tokens of ``shapes``, pooled."""
    sess = session(path)
    g = torch.Generator().manual_seed(seed)
    refs, outs = [], []
    for b, t in shapes:
        idx = torch.randint(0, model.cfg.vocab_size, (b, min(t, model.cfg.seq_len)), generator=g)
        refs.append(model(idx)[0].float().numpy().reshape(-1, model.cfg.vocab_size))
        outs.append(sess.run(["logits"], {"input_ids": idx.numpy()})[0].reshape(-1, model.cfg.vocab_size))
    return agreement(np.concatenate(refs), np.concatenate(outs))


@torch.no_grad()
def check_with_past(model: GPT, path: Path, batch: int = 2, prompt: int = 5, steps: int = 6, seed: int = 0) -> dict:
    """Agreement of a ``--kv-cache`` file with the model's own KV cache: a prompt with empty pasts,
    then ``steps`` single tokens, each fed the presents of the call before."""
    sess = session(path)
    c = model.cfg
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, c.vocab_size, (batch, prompt + steps), generator=g)
    cache = model.new_kv_cache(batch, prompt + steps, dtype=torch.float32)
    past_k = past_v = empty_past(c, batch)
    refs, outs, start = [], [], 0
    for end in [prompt] + list(range(prompt + 1, prompt + steps + 1)):
        chunk = ids[:, start:end]
        refs.append(model(chunk, kv_cache=cache, start_pos=start)[0].float().numpy().reshape(-1, c.vocab_size))
        logits, past_k, past_v = sess.run(None, {"input_ids": chunk.numpy(), "past_keys": past_k,
                                                 "past_values": past_v})
        outs.append(logits.reshape(-1, c.vocab_size))
        start = end
    if past_k.shape[3] != prompt + steps:
        raise ExportError(f"the exported cache holds {past_k.shape[3]} positions after {prompt + steps} tokens; "
                          f"the export is wrong, please report it with the run's config.json")
    return agreement(np.concatenate(refs), np.concatenate(outs))


def export(path: str | Path, out: str | Path, int8: bool = False, which: str = "best",
           per_channel: bool = False, kv_cache: bool = False) -> dict:
    """Write OUT (fp32) and, with ``int8``, OUT's .int8 twin; returns paths, sizes and agreement."""
    _require_onnx()
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"--out {out} should end in .onnx (the int8 file is written beside it as "
                          f"{int8_path(out.with_suffix('.onnx')).name})")
    try:
        ckpt = find_checkpoint(path, which)
        model, cfg, _ = load_model(ckpt, device="cpu")
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    model = model.float().eval()
    export_fp32(model, out, kv_cache)
    files = {"fp32": out}
    if int8:
        files["int8"] = int8_path(out)
        quantize_int8(out, files["int8"], per_channel=per_channel)
    results = {}
    for kind, f in files.items():
        results[kind] = {"file": str(f), "bytes": f.stat().st_size,
                         **(check_with_past(model, f) if kv_cache else check(model, f))}
    fp32_diff = results["fp32"]["max_abs_diff"]
    if not fp32_diff < FP32_TOLERANCE:
        raise ExportError(f"ONNX Runtime's fp32 logits differ from PyTorch's by up to {fp32_diff:.3g} (tolerance "
                          f"{FP32_TOLERANCE:g}); the export is wrong, please report it with the run's config.json")
    return {"checkpoint": str(ckpt), "seq_len": cfg.seq_len, "vocab_size": cfg.vocab_size, "kv_cache": kv_cache,
            "check_shapes": [list(s) for s in CHECK_SHAPES], "results": results}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python tools/export_onnx.py", description=__doc__.split("\n\n")[0],
                                epilog="Speed: python tools/bench_onnx.py RUN",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or one of its checkpoints/step_* dirs")
    p.add_argument("--out", required=True, metavar="FILE.onnx", help="the fp32 model file to write")
    p.add_argument("--int8", action="store_true", help="also write FILE.int8.onnx (dynamic int8 quantization)")
    p.add_argument("--per-channel", action="store_true",
                   help="int8 scales per output channel instead of per tensor (often closer to fp32)")
    p.add_argument("--which", choices=("best", "latest"), default="best",
                   help="the run's checkpoint to export (default: best, i.e. lowest val loss, else latest)")
    p.add_argument("--kv-cache", action="store_true",
                   help="export the forward with a KV cache (past_keys/past_values in, present_keys/"
                        "present_values out) for token-by-token generation, instead of the plain forward")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        summary = export(args.run, args.out, args.int8, args.which, args.per_channel, args.kv_cache)
    except ExportError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"exported {summary['checkpoint']} (seq_len {summary['seq_len']}, vocab {summary['vocab_size']:,})")
    if summary["kv_cache"]:
        print("agreement with PyTorch's KV cache over a 2x5 prompt and 6 single-token steps (onnxruntime, CPU):")
    else:
        shapes = " + ".join(f"{b}x{t}" for b, t in summary["check_shapes"])
        print(f"agreement with PyTorch fp32 on {shapes} random tokens (onnxruntime, CPU):")
    for kind, r in summary["results"].items():
        print(f"  {kind:<5} {r['file']}  {r['bytes'] / 1e6:.1f} MB  max |logit diff| {r['max_abs_diff']:.2e}  "
              f"top-1 agreement {r['top1_agreement']:.1%} of {r['positions']} positions")


if __name__ == "__main__":
    main()
