"""CPU inference benchmark: PyTorch fp32 vs ONNX Runtime fp32 vs ONNX Runtime int8, same model, same inputs.

    python tools/bench_onnx.py                         # the `small` preset with random weights (~1 min on 2 cores)
    python tools/bench_onnx.py runs/demo               # a trained model (agreement figures then mean something)
    python tools/bench_onnx.py --shapes 1x64,8x256 --repeats 10 --threads 4

For each (batch x seq) shape, each engine runs one forward (input_ids -> logits, no KV cache)
``--warmup`` times untimed, then ``--repeats`` times timed, the engines taking turns so that other
load on the host falls on all of them; the table gives the median latency, tokens per second
(batch * seq / median) and the speed-up over PyTorch. Agreement is measured on the
same inputs against PyTorch fp32 logits: the largest absolute difference and the share of positions
whose top-1 token is the same. PyTorch and ONNX Runtime get the same number of threads.

Then generation through each engine's KV cache (``--decode P+N``, batch 1): a P-token prompt, then N
single-token steps fed a fixed token sequence, so every engine does the same work; PyTorch uses
``GPT.new_kv_cache`` and ONNX Runtime the ``export_onnx.py --kv-cache`` graph. The table gives the
median milliseconds per decoded token (the prompt excluded) and agreement on the last step's logits.

With random weights (no RUN given) the logits are small and nearly flat, full of near-ties, so the
int8 top-1 agreement says little about a trained model's; give a run for figures worth quoting.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling export_onnx.py

import export_onnx  # noqa: E402

from train.checkpoint import CheckpointError, load_model  # noqa: E402
from train.config import ConfigError, load_config  # noqa: E402
from train.model import GPT  # noqa: E402

DEFAULT_SHAPES = "1x128,4x256"
DEFAULT_DECODE = "128+64"


def parse_shapes(text: str) -> list[tuple[int, int]]:
    shapes = []
    for part in text.split(","):
        try:
            b, t = (int(x) for x in part.lower().split("x"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad shape {part!r}; write BATCHxSEQ, e.g. 1x128,4x256") from None
        if b < 1 or t < 1:
            raise argparse.ArgumentTypeError(f"bad shape {part!r}; batch and seq must be positive")
        shapes.append((b, t))
    return shapes


def build_model(args) -> tuple[GPT, str]:
    """The model to benchmark and a line describing it."""
    if args.run:
        try:
            model, cfg, _ = load_model(args.run, device="cpu")
        except CheckpointError as e:
            raise SystemExit(f"error: {e}") from None
        source = f"{args.run}"
    else:
        try:
            cfg = load_config(args.config).model
        except ConfigError as e:
            raise SystemExit(f"error: {e}") from None
        cfg.vocab_size = args.vocab_size
        torch.manual_seed(args.seed)
        model = GPT(cfg)
        source = f"preset {args.config!r}, random init weights, vocab {cfg.vocab_size:,}"
    c = model.cfg
    options = [k for k in ("rope", "swiglu", "rmsnorm") if getattr(c, k)] or ["default architecture"]
    desc = (f"{source}: {model.num_params() / 1e6:.1f}M params, n_layers {c.n_layers}, d_model {c.d_model}, "
            f"n_heads {c.n_heads}, seq_len {c.seq_len}, {'+'.join(options)}")
    return model.float().eval(), desc


def parse_decode(text: str) -> tuple[int, int]:
    try:
        prompt, steps = (int(x) for x in text.split("+"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad --decode {text!r}; write PROMPT+STEPS, e.g. 128+64") from None
    if prompt < 1 or steps < 1:
        raise argparse.ArgumentTypeError(f"bad --decode {text!r}; both parts must be positive")
    return prompt, steps


def decode_runners(model: GPT, sessions: dict, ids: np.ndarray, prompt: int) -> dict:
    """Per engine, a function that runs the prompt then one token at a time through its KV cache and
    returns (seconds spent on the single-token steps, the last step's logits)."""
    steps = ids.shape[1] - prompt
    ids_t = torch.from_numpy(ids)

    def torch_decode():
        with torch.inference_mode():
            cache = model.new_kv_cache(1, ids.shape[1], dtype=torch.float32)
            model(ids_t[:, :prompt], kv_cache=cache, start_pos=0)
            t0 = time.perf_counter()
            for i in range(prompt, prompt + steps):
                logits = model(ids_t[:, i:i + 1], kv_cache=cache, start_pos=i)[0]
            return time.perf_counter() - t0, logits.numpy()

    def ort_decode(sess):
        past = export_onnx.empty_past(model.cfg, 1)
        _, pk, pv = sess.run(None, {"input_ids": ids[:, :prompt], "past_keys": past, "past_values": past})
        t0 = time.perf_counter()
        for i in range(prompt, prompt + steps):
            logits, pk, pv = sess.run(None, {"input_ids": ids[:, i:i + 1], "past_keys": pk, "past_values": pv})
        return time.perf_counter() - t0, logits

    return {"PyTorch fp32": torch_decode, **{name: (lambda s=sess: ort_decode(s)) for name, sess in sessions.items()}}


def time_decode(runners: dict, warmup: int, repeats: int) -> tuple[dict, dict]:
    """Median decode seconds per engine (engines taking turns) and each engine's last logits."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    times, last = {name: [] for name in names}, {}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            seconds, last[name] = runners[name]()
            times[name].append(seconds)
    return {name: statistics.median(ts) for name, ts in times.items()}, last


def time_round_robin(fns: dict, warmup: int, repeats: int) -> dict[str, float]:
    """Median wall-clock seconds per function over ``repeats`` rounds; each round calls every function
    once, in an order that rotates, so load from other processes falls on all of them alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[: r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python tools/bench_onnx.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", nargs="?", metavar="RUN_OR_CHECKPOINT",
                   help="a trained run or checkpoint directory (default: a random-weight model, see --config)")
    p.add_argument("--config", default="small", help="preset for the random-weight model (default: small)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary of the random-weight model (8192)")
    p.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES),
                   help=f"comma-separated BATCHxSEQ input shapes (default {DEFAULT_SHAPES})")
    p.add_argument("--decode", type=parse_decode, default=parse_decode(DEFAULT_DECODE), metavar="P+N",
                   help=f"generation through the KV caches: a P-token prompt, then N single tokens (default "
                        f"{DEFAULT_DECODE})")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per engine and shape (2)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per engine and shape; the median is shown (5)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads(),
                   help=f"threads for PyTorch and ONNX Runtime alike (default: {torch.get_num_threads()})")
    p.add_argument("--per-channel", action="store_true", help="int8 scales per output channel")
    p.add_argument("--seed", type=int, default=0, help="seed for weights and input tokens (0)")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        p.error("--repeats and --threads must be at least 1, --warmup at least 0")

    torch.set_num_threads(args.threads)
    model, desc = build_model(args)
    too_long = [f"{b}x{t}" for b, t in args.shapes if t > model.cfg.seq_len]
    if too_long:
        p.error(f"shapes {', '.join(too_long)} exceed the model's seq_len {model.cfg.seq_len}")
    if sum(args.decode) > model.cfg.seq_len:
        p.error(f"--decode {args.decode[0]}+{args.decode[1]} exceeds the model's seq_len {model.cfg.seq_len}")
    import onnxruntime as ort

    print(f"model   {desc}")
    print(f"host    {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} "
          f"thread{'s' if args.threads > 1 else ''}; torch {torch.__version__}, onnxruntime {ort.__version__}")
    busy = os.getloadavg()[0]
    if busy > (os.cpu_count() or 1) - args.threads + 0.5:
        print(f"warning: load average {busy:.1f} on {os.cpu_count()} CPUs: other processes compete for them, so "
              f"timings are noisy, multi-threaded ones most (threads wait for each other at every op)")

    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_path = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        t0 = time.perf_counter()
        export_onnx.export_fp32(model, fp32_path)
        export_onnx.quantize_int8(fp32_path, int8_path, per_channel=args.per_channel)
        print(f"export  {time.perf_counter() - t0:.1f} s; fp32 {fp32_path.stat().st_size / 1e6:.1f} MB, "
              f"int8 {int8_path.stat().st_size / 1e6:.1f} MB{' (per-channel)' if args.per_channel else ''}")
        # no busy-waiting ORT threads: engines run back to back and must not slow each other down
        sessions = {"ORT fp32": export_onnx.session(fp32_path, args.threads, spin=False),
                    "ORT int8": export_onnx.session(int8_path, args.threads, spin=False)}

        rng = np.random.default_rng(args.seed)
        rows = []
        for b, t in args.shapes:
            ids = rng.integers(0, model.cfg.vocab_size, size=(b, t), dtype=np.int64)
            ids_t = torch.from_numpy(ids)

            def torch_forward(ids_t=ids_t):
                with torch.inference_mode():
                    return model(ids_t)[0].numpy()

            fns = {"PyTorch fp32": torch_forward}
            for name, sess in sessions.items():
                fns[name] = lambda sess=sess, ids=ids: sess.run(["logits"], {"input_ids": ids})[0]
            reference = torch_forward()
            agree = {name: export_onnx.agreement(reference, fn()) for name, fn in fns.items() if name in sessions}
            seconds = time_round_robin(fns, args.warmup, args.repeats)
            base = seconds["PyTorch fp32"]
            for name in fns:
                rows.append(((b, t), name, seconds[name], base / seconds[name], agree.get(name)))

        # generation: the --kv-cache graphs against PyTorch's own cache
        dec32, dec8 = Path(tmp) / "decoder.onnx", Path(tmp) / "decoder.int8.onnx"
        export_onnx.export_fp32(model, dec32, kv_cache=True)
        export_onnx.quantize_int8(dec32, dec8, per_channel=args.per_channel)
        prompt, steps = args.decode
        ids = rng.integers(0, model.cfg.vocab_size, size=(1, prompt + steps), dtype=np.int64)
        runners = decode_runners(model, {"ORT fp32": export_onnx.session(dec32, args.threads, spin=False),
                                         "ORT int8": export_onnx.session(dec8, args.threads, spin=False)}, ids, prompt)
        decode_s, last = time_decode(runners, max(1, args.warmup // 2), args.repeats)

    print(f"\nmedian of {args.repeats} forwards after {args.warmup} warm-up, engines interleaved; load average "
          f"{os.getloadavg()[0]:.1f} at the end; agreement vs PyTorch fp32 logits on the same inputs")
    header = f"{'B x T':>8}  {'engine':<12} {'ms':>9} {'tokens/s':>10} {'speed-up':>8} {'max|dlogit|':>11} {'top-1':>7}"
    print(header)
    print("-" * len(header))
    for (b, t), name, seconds, speedup, agree in rows:
        diff = f"{agree['max_abs_diff']:.2e}" if agree else "-"
        top1 = f"{agree['top1_agreement']:.1%}" if agree else "-"
        print(f"{f'{b}x{t}':>8}  {name:<12} {seconds * 1e3:9.1f} {b * t / seconds:10,.0f} {speedup:7.2f}x "
              f"{diff:>11} {top1:>7}")
    print(f"\ngeneration through the KV caches: {prompt}-token prompt, then {steps} single tokens (batch 1); "
          f"median of {args.repeats}; agreement on the last step's logits")
    header = f"{'engine':<12} {'ms/token':>9} {'tokens/s':>9} {'speed-up':>8} {'max|dlogit|':>11}"
    print(header)
    print("-" * len(header))
    for name, seconds in decode_s.items():
        per_token = seconds / steps
        diff = "-" if name == "PyTorch fp32" else f"{np.abs(last[name] - last['PyTorch fp32']).max():.2e}"
        print(f"{name:<12} {per_token * 1e3:9.2f} {1 / per_token:9,.0f} {decode_s['PyTorch fp32'] / seconds:7.2f}x "
              f"{diff:>11}")
    if not args.run:
        print("\n(random weights: nearly flat logits, so int8 top-1 agreement here says little about a trained model)")


if __name__ == "__main__":
    main()
