"""Export a trained model as a Hugging Face ``transformers`` model directory.

    python tools/export_hf.py runs/demo --out exports/demo-hf
    python tools/export_hf.py runs/demo/checkpoints/step_00000300 --out exports/demo-hf --which latest

The directory holds ``model.safetensors``, ``config.json``, ``generation_config.json`` and the
tokenizer (``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``), so
``AutoModelForCausalLM.from_pretrained(DIR)`` and ``AutoTokenizer.from_pretrained(DIR)`` load it
with no hub access, and lm-evaluation-harness takes it as ``--model hf --model_args pretrained=DIR``.

Which architecture, by the run's ``model`` config (how each maps, and the inverse that
``python -m train --init-from`` uses, in ``train/hf.py``):

* default (learned positions, GELU MLP, LayerNorm)  -> ``GPT2LMHeadModel``;
* ``rope`` + ``swiglu`` + ``rmsnorm``  -> ``LlamaForCausalLM``, tied embeddings (unless ``untied_head``);
* ``rope`` + ``rmsnorm`` + ``qk_norm`` + ``embed_norm`` with a plain MLP (``relu2`` or GELU) and no
  biases, the modern recipe (``demo_modern``, ``75m_dolma_modern``) -> ``NanoChatForCausalLM``, with
  ``logit_softcap`` as its ``final_logit_softcapping`` and our norms' weights folded into its layers;
* any other combination is refused, naming the options that no standard ``transformers`` class
  computes and why (``zero_init`` and ``untied_head`` export with any of the three).

After writing, the tool loads the directory back with ``transformers`` and compares its logits with
ours on random tokens (fp32, CPU); it fails when the largest difference exceeds ``--tolerance``.

The exported tokenizer encodes text as ours does; it does not add ``<|endoftext|>`` in front by itself.
Our models saw ``<|endoftext|>`` before every document, so give evaluation code a leading
``<|endoftext|>`` (lm-evaluation-harness: ``--model_args pretrained=DIR,add_bos_token=True``). As in
GPT-2, a literal "<|endoftext|>" in text is read as the special token by ``transformers``, whereas
``python -m preprocess`` encodes it as ordinary text.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import shards  # noqa: E402
import tokenizer as tk  # noqa: E402
from train.checkpoint import CheckpointError, find_checkpoint, load_model  # noqa: E402
from train.hf import (  # noqa: E402
    CHECK_TOKENS,
    DEFAULT_TOLERANCE,
    architecture,
    max_logit_diff,
    require_transformers,
    to_transformers,
)


class ExportError(shards.PipelineError):
    """A model or directory that cannot be exported; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------
# tokenizer

def write_tokenizer(tokenizer_path: Path, out: Path, seq_len: int) -> list[str]:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, eos = bos = unk = <|endoftext|>."""
    from transformers import PreTrainedTokenizerFast

    tk.load(tokenizer_path)  # fails with an actionable message when the file lacks the separator
    eot = tk.EOT_TOKEN
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_path), bos_token=eot, eos_token=eot,
                                     unk_token=eot, model_max_length=seq_len, clean_up_tokenization_spaces=False)
    written = [Path(p).name for p in hf_tok.save_pretrained(str(out))]
    special_map = out / "special_tokens_map.json"
    if not special_map.exists():  # transformers 5 folds it into tokenizer_config.json; older readers want it
        special_map.write_text(json.dumps({"bos_token": eot, "eos_token": eot, "unk_token": eot}, indent=2) + "\n",
                               encoding="utf-8")
        written.append(special_map.name)
    return sorted(set(written))


# ---------------------------------------------------------------------------------------------------
# export and check

def export(path: str | Path, out: str | Path, which: str = "best", tolerance: float = DEFAULT_TOLERANCE) -> dict:
    """Write the transformers directory for a run or checkpoint directory; returns what was done."""
    transformers = require_transformers()
    transformers.utils.logging.disable_progress_bar()  # one line per step below says what happened
    out = Path(out)
    try:
        ckpt = find_checkpoint(path, which)
        model, cfg, tokenizer_path = load_model(ckpt, device="cpu")
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    model = model.float().eval()
    architecture(cfg)  # refuses, before anything is written, a model neither layout can hold
    eot_id = tk.eot_id(tk.load(tokenizer_path), source=tokenizer_path)
    if out.exists() and any(out.iterdir()):
        if not (out / "config.json").exists():
            raise ExportError(f"{out} exists and is not an exported model directory; choose an empty or new --out")
    out.mkdir(parents=True, exist_ok=True)

    hf = to_transformers(model, eot_id)
    hf.generation_config = transformers.GenerationConfig(bos_token_id=eot_id, eos_token_id=eot_id,
                                                         pad_token_id=eot_id)
    hf.save_pretrained(str(out))
    files = write_tokenizer(tokenizer_path, out, cfg.seq_len)

    reloaded = getattr(transformers, hf.__class__.__name__).from_pretrained(str(out), dtype=torch.float32).eval()
    diff = max_logit_diff(model, reloaded)
    if not diff < tolerance:
        raise ExportError(f"the exported model's logits differ from ours by up to {diff:.3g} (tolerance "
                          f"{tolerance:g}); the export is wrong, please report it with the run's config.json")
    return {"checkpoint": str(ckpt), "out": str(out), "architecture": hf.__class__.__name__,
            "files": sorted(p.name for p in out.iterdir()), "tokenizer_files": files,
            "max_abs_logit_diff": diff, "check_shape": [2, min(CHECK_TOKENS, cfg.seq_len)]}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python tools/export_hf.py", description=__doc__.split("\n\n")[0],
        epilog="Load it: AutoModelForCausalLM.from_pretrained(DIR), AutoTokenizer.from_pretrained(DIR).\n"
               "Evaluate: lm_eval --model hf --model_args pretrained=DIR,add_bos_token=True --tasks hellaswag",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN_OR_CHECKPOINT", help="a run directory or one of its checkpoints/step_* dirs")
    p.add_argument("--out", required=True, help="directory to write (created; an earlier export there is replaced)")
    p.add_argument("--which", choices=("best", "latest"), default="best",
                   help="the run's checkpoint to export (default: best, i.e. lowest val loss, else latest)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"max abs logit difference allowed in the check after export (default {DEFAULT_TOLERANCE:g})")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    try:
        summary = export(args.run, args.out, args.which, args.tolerance)
    except (shards.PipelineError, tk.TokenizerError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"exported {summary['checkpoint']}")
    print(f"      as {summary['architecture']} -> {summary['out']}")
    print(f"   files {', '.join(summary['files'])}")
    b, t = summary["check_shape"]
    print(f"   check max |logit difference| vs ours = {summary['max_abs_logit_diff']:.2e} "
          f"on {b}x{t} random tokens (fp32, tolerance {args.tolerance:g})")


if __name__ == "__main__":
    main()
