"""Text generation from a trained run: one prompt, an interactive chat, or a file of prompts.

    python -m train.generate runs/demo --prompt "The built-in function" --max-new-tokens 60 --seed 0
    python -m train.generate runs/demo --chat
    python -m train.generate runs/demo --prompts prompts.txt --output out.jsonl --temperature 0
    python -m train.generate runs/demo/checkpoints/step_00000300 --prompt "x" --no-kv-cache

Every prompt starts with the separator ``<|endoftext|>`` (``eot_id``), which precedes each document in
the shards and so also marks where one begins. Generation stops at the next separator (the model's
end of document) or after ``--max-new-tokens``.

Context: positions are learned up to ``seq_len``, so when the context would grow past it, it is cut
to its last ``seq_len // 2`` tokens and re-read (the KV cache refilled). The same rule applies with and
without the cache, so greedy decoding gives identical tokens either way; with the cache each new token
costs one position's forward pass, plus one re-read every ``seq_len // 2`` tokens.

Python API::

    llm = LLMInference("runs/demo")                       # best checkpoint, the run's tokenizer
    llm.generate("Once upon a time", max_new_tokens=50, temperature=0.8, top_k=50)
    llm.batch_generate(["a", "b"], output_file="out.jsonl")
    llm.chat()                                            # reads stdin until EOF or /quit
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

import torch
from tokenizers import Tokenizer

import shards
import tokenizer as tk
from train.checkpoint import load_model
from train.model import GPT

STOP_EOT, STOP_LENGTH = "eot", "length"


# ---------------------------------------------------------------------------------------------------
# sampling: pure functions on logits (B, vocab_size)

def apply_repetition_penalty(logits: torch.Tensor, context: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty: every token present in ``context`` (B, T) has its logit divided by ``penalty``
    when positive and multiplied by it when negative, so > 1 makes repeats less likely."""
    if penalty == 1.0 or context.numel() == 0:
        return logits
    seen = logits.gather(1, context)  # (B, T)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(1, context, seen)


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the ``k`` largest logits of each row (ties at the k-th value kept too); the rest -inf."""
    if not k or k >= logits.size(-1):
        return logits
    kth = torch.topk(logits, k, dim=-1).values[:, -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float | None) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probability reaches ``p``
    (a token is kept when the mass of the tokens before it is below ``p``; the top one always is)."""
    if p is None or p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, repetition_penalty: float = 1.0, context: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The next token of each row of ``logits`` (B, vocab_size) -> (B,). ``temperature`` 0 is greedy.

    Order (as in HF transformers): repetition penalty, temperature, top-k, top-p, then a draw.
    """
    logits = logits.float()
    if context is not None:
        logits = apply_repetition_penalty(logits, context, repetition_penalty)
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = top_p_filter(top_k_filter(logits / temperature, top_k), top_p)
    return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)


# ---------------------------------------------------------------------------------------------------
# decoding loop

@torch.inference_mode()
def generate_ids(model: GPT, prompt: torch.Tensor, max_new_tokens: int, *, eot_id: int | None = None,
                 temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                 repetition_penalty: float = 1.0, use_kv_cache: bool = True,
                 generator: torch.Generator | None = None, min_new_tokens: int = 0,
                 on_token: Callable[[torch.Tensor], None] | None = None) -> tuple[list[list[int]], list[str]]:
    """Continue each row of ``prompt`` (B, T0) int64; returns (new ids per row, stop reason per row).

    A row stops at ``eot_id`` (not included in its ids) or after ``max_new_tokens``; ``eot_id`` None
    never stops early (benchmarks). ``eot_id`` cannot be chosen before ``min_new_tokens`` tokens.
    The repetition penalty looks at the tokens in context.
    ``on_token(next_ids)`` is called with each step's (B,) tokens, for streaming.
    """
    seq_len = model.cfg.seq_len
    keep = max(1, seq_len // 2)  # tokens kept when the context fills up (see the module docstring)
    B = prompt.size(0)
    ctx = prompt[:, -seq_len:]
    cache = model.new_kv_cache(B) if use_kv_cache else None
    cached = 0  # positions of ctx already in the cache
    out = [[] for _ in range(B)]
    done = torch.zeros(B, dtype=torch.bool, device=prompt.device)
    for step in range(max_new_tokens):
        if cache is not None:
            logits, _ = model(ctx[:, cached:], kv_cache=cache, start_pos=cached)
            cached = ctx.size(1)
        else:
            logits, _ = model(ctx)
        logits = logits[:, -1]  # (B, vocab_size)
        if eot_id is not None and step < min_new_tokens:
            logits = logits.clone()
            logits[:, eot_id] = float("-inf")
        nxt = sample_next(logits, temperature, top_k, top_p, repetition_penalty, ctx, generator)  # (B,)
        if eot_id is not None:
            nxt = nxt.masked_fill(done, eot_id)
            finished_now = (nxt == eot_id) & ~done
            done |= finished_now
        if on_token is not None:
            on_token(nxt)
        finished = done.tolist()
        for i, t in enumerate(nxt.tolist()):
            if not finished[i]:  # a row's eot_id and the padding after it are not part of its text
                out[i].append(t)
        if eot_id is not None and bool(done.all()):
            break
        ctx = torch.cat([ctx, nxt[:, None]], dim=1)
        if ctx.size(1) > seq_len:
            ctx, cached = ctx[:, -keep:], 0
    reasons = [STOP_EOT if eot_id is not None and bool(d) else STOP_LENGTH for d in done.tolist()]
    return out, reasons


class GenerationError(shards.PipelineError):
    """An option, prompt file or device that generation cannot use; the message says what to use instead."""


class TextStream:
    """Turns tokens into printable text as they come: byte-level pieces that end inside a UTF-8
    character are held back until the character is complete."""

    def __init__(self, tok: Tokenizer, out: TextIO):
        self.tok, self.out, self.ids, self.printed = tok, out, [], 0

    def __call__(self, next_ids: torch.Tensor) -> None:
        self.ids.append(int(next_ids[0]))
        self.flush(final=False)

    def flush(self, final: bool = True, drop_last: bool = False) -> None:
        """Write what is not written yet; ``final`` also writes an incomplete character (as U+FFFD),
        ``drop_last`` leaves out the last token (the end-of-text that stopped generation)."""
        text = self.tok.decode(self.ids[:-1] if drop_last else self.ids)
        if text.endswith("\ufffd") and not final:
            return
        self.out.write(text[self.printed:])
        self.out.flush()
        self.printed = len(text)


# ---------------------------------------------------------------------------------------------------
# the Python API

def pick_device(device: str | None) -> torch.device:
    """``auto`` (or None): the GPU when CUDA sees one, else the CPU; otherwise the named device, which must
    exist here (GenerationError saying what to use instead)."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        picked = torch.device(device)
    except (RuntimeError, ValueError):
        raise GenerationError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if picked.type == "cuda":
        if not torch.cuda.is_available():
            raise GenerationError(f"--device {device}: no CUDA GPU is visible to PyTorch here; use --device cpu "
                             f"(or auto)")
        if picked.index is not None and picked.index >= torch.cuda.device_count():
            raise GenerationError(f"--device {device}: there are {torch.cuda.device_count()} CUDA GPUs "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    return picked


class LLMInference:
    """A trained model and its tokenizer, ready to generate.

    ``checkpoint``: a run directory (its best checkpoint, else its latest) or a checkpoint directory.
    ``tokenizer``: None for the run's ``tokenizer.json``, a path, or a loaded ``tokenizers.Tokenizer``.
    """

    def __init__(self, checkpoint: str | Path, tokenizer: str | Path | Tokenizer | None = None,
                 device: str | None = "auto", use_kv_cache: bool = True, which: str = "best"):
        self.device = pick_device(device)
        self.model, self.model_config, tokenizer_path = load_model(checkpoint, device=self.device, which=which)
        if tokenizer is None:
            tokenizer = tokenizer_path
        try:
            self.tok = tokenizer if isinstance(tokenizer, Tokenizer) else tk.load(tokenizer)
        except tk.TokenizerError as e:
            raise GenerationError(str(e)) from None
        self.eot_id = tk.eot_id(self.tok)
        self.encoder = tk.Encoder(self.tok, "hf")  # text is encoded as the shards were: tk.EOT_TOKEN in it is text
        self.use_kv_cache = use_kv_cache

    @property
    def seq_len(self) -> int:
        return self.model_config.seq_len

    def encode_prompt(self, prompt: str) -> list[int]:
        """The separator ``eot_id`` (where a document begins) followed by the prompt's tokens."""
        return [self.eot_id] + self.encoder.encode(prompt)

    def _generator(self, seed: int | None) -> torch.Generator | None:
        if seed is None:
            return None
        return torch.Generator(device=self.device).manual_seed(seed)

    def generate_tokens(self, ids: list[int], max_new_tokens: int = 100, temperature: float = 0.8,
                        top_k: int | None = 50, top_p: float | None = None, repetition_penalty: float = 1.0,
                        seed: int | None = None, stream: TextIO | None = None,
                        generator: torch.Generator | None = None, min_new_tokens: int = 0) -> tuple[list[int], str]:
        """Continue the token ids ``ids``; returns (new ids, stop reason: "eot" or "length")."""
        prompt = torch.tensor([ids], dtype=torch.long, device=self.device)
        streamer = TextStream(self.tok, stream) if stream else None
        new, reasons = generate_ids(
            self.model, prompt, max_new_tokens, eot_id=self.eot_id, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, use_kv_cache=self.use_kv_cache,
            generator=generator or self._generator(seed), min_new_tokens=min_new_tokens, on_token=streamer)
        if streamer:
            streamer.flush(drop_last=reasons[0] == STOP_EOT)
        return new[0], reasons[0]

    def generate(self, prompt: str, max_new_tokens: int | None = None, temperature: float = 0.8,
                 top_k: int | None = 50, top_p: float | None = None, repetition_penalty: float = 1.0,
                 seed: int | None = None, stream: TextIO | None = None, min_new_tokens: int = 0, *,
                 max_length: int | None = None) -> str:
        """The continuation of ``prompt`` (without the prompt): at most ``max_new_tokens`` (default 100) new
        tokens, fewer when the model ends the document (not before ``min_new_tokens``). ``temperature`` 0
        is greedy; ``stream`` gets text as it comes.

        ``max_length`` is this method's former name for ``max_new_tokens``, kept so that existing calls
        do what they did: it counts new tokens only, not the prompt (unlike ``max_length`` in Hugging
        Face's ``generate``, which counts both). It is deprecated; pass ``max_new_tokens``."""
        if max_length is not None:
            if max_new_tokens is not None:
                raise TypeError("pass max_new_tokens or max_length (its former name), not both")
            warnings.warn("LLMInference.generate(max_length=N) is deprecated: it means max_new_tokens=N (new "
                          "tokens, not counting the prompt); pass max_new_tokens", DeprecationWarning, stacklevel=2)
            max_new_tokens = max_length
        ids, _ = self.generate_tokens(self.encode_prompt(prompt), 100 if max_new_tokens is None else max_new_tokens,
                                      temperature, top_k, top_p, repetition_penalty, seed, stream,
                                      min_new_tokens=min_new_tokens)
        return self.tok.decode(ids)

    def batch_generate(self, prompts: Iterable[str], output_file: str | Path | None = None,
                       seed: int | None = None, **sampling) -> list[dict]:
        """Generate for each prompt in turn (one seeded generator for the whole batch); returns one
        record per prompt and, with ``output_file``, writes them as JSON (.json) or JSON lines (.jsonl)."""
        if output_file is not None:
            output_suffix(output_file)
        generator = self._generator(seed)
        records = []
        for prompt in prompts:
            start = time.perf_counter()
            ids, reason = self.generate_tokens(self.encode_prompt(prompt), generator=generator, **sampling)
            records.append({"prompt": prompt, "completion": self.tok.decode(ids), "tokens": len(ids),
                            "stop_reason": reason, "seconds": round(time.perf_counter() - start, 4)})
        if output_file is not None:
            write_records(output_file, records)
        return records

    def chat(self, max_new_tokens: int = 200, input_stream: TextIO | None = None, output: TextIO | None = None,
             seed: int | None = None, **sampling) -> None:
        """An interactive loop: each line you type is added to the conversation and the model continues
        it, streaming its reply. The conversation stays in context, trimmed from the front so that it
        and the reply fit in ``seq_len``. ``/reset`` forgets it; ``/quit`` or end of input leaves."""
        inp, out = input_stream or sys.stdin, output or sys.stdout
        generator = self._generator(seed)
        history = [self.eot_id]
        budget = max(1, self.seq_len - max_new_tokens)  # context tokens that leave room for a whole reply
        out.write(f"chat with {self.model_config.n_layers}-layer model (context {self.seq_len} tokens); "
                  f"/reset forgets the conversation, /quit or Ctrl-D leaves\n")
        while True:
            out.write("> ")
            out.flush()
            line = inp.readline()
            if not line or line.strip() == "/quit":
                out.write("\n")
                return
            line = line.rstrip("\n")
            if line.strip() == "/reset":
                history = [self.eot_id]
                out.write("(conversation forgotten)\n")
                continue
            history += self.encoder.encode(line + "\n")
            history = history[-budget:]
            ids, reason = self.generate_tokens(history, max_new_tokens, generator=generator, stream=out, **sampling)
            history += ids + ([self.eot_id] if reason == STOP_EOT else [])
            out.write("\n" if reason == STOP_EOT or not self.tok.decode(ids).endswith("\n") else "")
            out.flush()


# ---------------------------------------------------------------------------------------------------
# files of prompts and results

def output_suffix(path: str | Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in (".json", ".jsonl"):
        raise GenerationError(f"--output {path}: name the file .json (one JSON list) or .jsonl (one object per line)")
    return suffix


def write_records(path: str | Path, records: list[dict]) -> None:
    path = Path(path)
    if output_suffix(path) == ".jsonl":
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    else:
        text = json.dumps(records, indent=2, ensure_ascii=False) + "\n"
    path.write_text(text, encoding="utf-8")


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: .jsonl (strings or objects with a "prompt" key, one per line), .json (a list
    of those), or plain text (one prompt per non-empty line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise GenerationError(f"cannot read prompts from {path}: {e}") from None
    suffix = path.suffix.lower()
    if suffix not in (".json", ".jsonl"):
        return [line for line in text.splitlines() if line.strip()]
    try:
        lines = [line for line in text.splitlines() if line.strip()]
        items = json.loads(text) if suffix == ".json" else [json.loads(line) for line in lines]
    except json.JSONDecodeError as e:
        raise GenerationError(f"{path} is not valid {suffix[1:].upper()}: {e}") from None
    prompts = []
    for n, item in enumerate(items, 1):
        if isinstance(item, dict) and isinstance(item.get("prompt"), str):
            prompts.append(item["prompt"])
        elif isinstance(item, str):
            prompts.append(item)
        else:
            raise GenerationError(f"{path}: item {n} is neither a string nor an object with a \"prompt\" string")
    return prompts


# ---------------------------------------------------------------------------------------------------
# command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train.generate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1].split("Python API")[0])
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                   help="a run directory (its best checkpoint, else latest) or a checkpoints/step_* directory")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prompt", help="text to continue (default: an empty prompt, i.e. a fresh document)")
    mode.add_argument("--chat", action="store_true", help="interactive: type lines, the model replies")
    mode.add_argument("--prompts", type=Path, metavar="FILE",
                      help="a file of prompts (.txt one per line, .json list, .jsonl) to generate for in turn")
    p.add_argument("--output", type=Path, metavar="FILE",
                   help="with --prompts: write results to FILE.json or FILE.jsonl")
    p.add_argument("--which", choices=("best", "latest"), default="best", help="checkpoint of a run (default: best)")
    p.add_argument("--max-new-tokens", type=int, default=100, help="tokens to generate at most (default: 100)")
    p.add_argument("--min-new-tokens", type=int, default=0,
                   help="do not end the document before this many tokens (default: 0)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: 0.8)")
    p.add_argument("--top-k", type=int, default=50, help="sample among the K most likely; 0 = all (default: 50)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass, e.g. 0.9 (default: off)")
    p.add_argument("--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (default: 1.0)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible samples")
    p.add_argument("--no-kv-cache", action="store_true", help="recompute the whole context per token (slow; "
                   "for checking that the cache changes nothing)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--json", action="store_true", help="single prompt: print one JSON object")
    return p


def check_args(args) -> None:
    if args.max_new_tokens < 1:
        raise GenerationError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if not 0 <= args.min_new_tokens <= args.max_new_tokens:
        raise GenerationError(f"--min-new-tokens must be between 0 and --max-new-tokens, got {args.min_new_tokens}")
    if not math.isfinite(args.temperature) or args.temperature < 0:
        raise GenerationError(f"--temperature must be a finite number >= 0 (0 = greedy), got {args.temperature}")
    if args.top_k < 0:
        raise GenerationError(f"--top-k must be >= 0, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise GenerationError(f"--top-p must be in (0, 1], got {args.top_p}")
    if not math.isfinite(args.repetition_penalty) or args.repetition_penalty <= 0:
        raise GenerationError(f"--repetition-penalty must be a finite number > 0, got {args.repetition_penalty}")
    if args.output and not args.prompts:
        raise GenerationError("--output goes with --prompts FILE")
    if args.output:
        output_suffix(args.output)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_args(args)
        prompts = read_prompts(args.prompts) if args.prompts else None
        llm = LLMInference(args.checkpoint, device=args.device, use_kv_cache=not args.no_kv_cache, which=args.which)
    except shards.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k or None,
                    top_p=args.top_p, repetition_penalty=args.repetition_penalty, min_new_tokens=args.min_new_tokens)
    try:
        return _run(args, llm, prompts, sampling)
    except KeyboardInterrupt:  # Ctrl-C in the middle of a reply or at the chat prompt
        print(file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        sys.stdout = open(os.devnull, "w")
        return 1


def _run(args, llm: LLMInference, prompts: list[str] | None, sampling: dict) -> int:
    if args.chat:
        llm.chat(seed=args.seed, **sampling)
        return 0
    if prompts is not None:
        records = llm.batch_generate(prompts, output_file=args.output, seed=args.seed, **sampling)
        if args.output:
            n = sum(r["tokens"] for r in records)
            print(f"{len(records)} completions ({n:,} tokens) written to {args.output}", file=sys.stderr)
        else:
            for r in records:
                print(json.dumps(r, ensure_ascii=False))
        return 0
    prompt = args.prompt or ""
    ids = llm.encode_prompt(prompt)
    if len(ids) > llm.seq_len:
        print(f"note: the prompt is {len(ids)} tokens; the model sees its last {llm.seq_len}", file=sys.stderr)
    start = time.perf_counter()
    if args.json:
        new, reason = llm.generate_tokens(ids, seed=args.seed, **sampling)
        print(json.dumps({"prompt": prompt, "completion": llm.tok.decode(new), "tokens": len(new),
                          "stop_reason": reason, "seconds": round(time.perf_counter() - start, 4)}, ensure_ascii=False))
        return 0
    sys.stdout.write(prompt)
    new, reason = llm.generate_tokens(ids, seed=args.seed, stream=sys.stdout, **sampling)
    seconds = time.perf_counter() - start
    stop = tk.EOT_TOKEN if reason == STOP_EOT else f"--max-new-tokens {args.max_new_tokens}"
    sys.stdout.write("\n")
    sys.stdout.flush()  # the text first, then the note on stderr, also when both go to one log
    print(f"[{len(new)} tokens in {seconds:.2f} s, {len(new) / seconds:.1f} tokens/s on {llm.device}, "
          f"stopped at {stop}]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
