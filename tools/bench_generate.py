"""Measure what the KV cache buys: decode tokens/s with and without it, at a long context, in one run.

    python tools/bench_generate.py                        small preset, 512 tokens of context
    python tools/bench_generate.py --context 900 --new-tokens 32 --batch-size 4 --device cuda
    python tools/bench_generate.py --json

The model is the preset's architecture with random weights (speed does not depend on the weights).
Both modes decode the same ``--new-tokens`` greedy tokens after the same random context: with the
cache each step runs one position; without it each step re-runs the whole context. Each mode is timed
``--repeats`` times and the fastest run is kept. The target is a ratio of at least 5x.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import torch  # noqa: E402

import shards  # noqa: E402
from train.config import load_config  # noqa: E402
from train.evaluate import EvaluationError, best_of, measure_decode  # noqa: E402
from train.generate import pick_device  # noqa: E402
from train.model import GPT  # noqa: E402

TARGET_RATIO = 5.0


def bench(preset: str, vocab_size: int, context: int, new_tokens: int, batch_size: int, repeats: int,
          device: torch.device) -> dict:
    cfg = load_config(preset).model
    cfg.vocab_size = vocab_size
    torch.manual_seed(0)
    model = GPT(cfg).to(device).eval()
    shape = dict(model=model, batch_size=batch_size, prompt_len=context, new_tokens=new_tokens)
    measure_decode(model, batch_size, min(context, 16), 2, use_kv_cache=True)  # warm-up
    measure_decode(model, batch_size, min(context, 16), 2, use_kv_cache=False)
    cached = best_of(repeats, use_kv_cache=True, **shape)
    plain = best_of(repeats, use_kv_cache=False, **shape)
    rows = {}
    for mode, r in (("kv_cache", cached), ("no_cache", plain)):
        rows[mode] = {"decode_s": r["decode_s"], "ms_per_token": 1000 * r["decode_s"] / new_tokens,
                      "tokens_per_s": batch_size * new_tokens / r["decode_s"]}
    return {"preset": preset, "n_layers": cfg.n_layers, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
            "seq_len": cfg.seq_len, "vocab_size": vocab_size, "parameters": model.num_params(),
            "device": str(device), "threads": torch.get_num_threads(), "dtype": str(model.tok_emb.weight.dtype),
            "context": context, "new_tokens": new_tokens, "batch_size": batch_size, "repeats": repeats,
            "prefill_tokens_per_s": batch_size * context / cached["prefill_s"], **rows,
            "ratio": plain["decode_s"] / cached["decode_s"], "target_ratio": TARGET_RATIO}


def print_table(r: dict) -> None:
    print(f"{r['preset']} preset: {r['n_layers']} layers, d_model {r['d_model']}, {r['n_heads']} heads, vocab "
          f"{r['vocab_size']:,}, {r['parameters'] / 1e6:.1f}M parameters (random weights) · {r['device']}, "
          f"{r['dtype'].replace('torch.', '')}, {r['threads']} threads")
    print(f"decode {r['new_tokens']} tokens after {r['context']} tokens of context, batch {r['batch_size']}, "
          f"best of {r['repeats']}")
    print(f"  {'mode':<10} {'decode s':>9} {'ms/token':>9} {'tokens/s':>9}")
    for mode in ("kv_cache", "no_cache"):
        m = r[mode]
        print(f"  {mode.replace('_', ' '):<10} {m['decode_s']:>9.3f} {m['ms_per_token']:>9.2f} "
              f"{m['tokens_per_s']:>9.1f}")
    verdict = "meets" if r["ratio"] >= r["target_ratio"] else "MISSES"
    print(f"  KV cache speedup: {r['ratio']:.1f}x ({verdict} the {r['target_ratio']:.0f}x target)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench_generate.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--preset", default="small", help="model preset in train/configs (default: small)")
    p.add_argument("--vocab-size", type=int, default=8192, help="vocabulary size (default: 8192, the demo's)")
    p.add_argument("--context", type=int, default=512, help="tokens of context before decoding (default: 512)")
    p.add_argument("--new-tokens", type=int, default=16, help="tokens decoded and timed (default: 16)")
    p.add_argument("--batch-size", type=int, default=1, help="sequences decoded together (default: 1)")
    p.add_argument("--repeats", type=int, default=2, help="timed runs per mode; the fastest counts (default: 2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (default: auto)")
    p.add_argument("--json", action="store_true", help="print the measurements as JSON")
    args = p.parse_args(argv)
    try:
        for name in ("vocab_size", "context", "new_tokens", "batch_size", "repeats"):
            if getattr(args, name) < 1:
                raise EvaluationError(f"--{name.replace('_', '-')} must be at least 1")
        r = bench(args.preset, args.vocab_size, args.context, args.new_tokens, args.batch_size, args.repeats,
                  pick_device(args.device))
    except shards.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(r, indent=2)) if args.json else print_table(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
