"""Evaluate a trained run: bits per byte, loss, perplexity, task accuracy, generation quality, inference speed.

    python -m train.evaluate runs/demo --data data/demo
    python -m train.evaluate runs/demo --data data/demo --tasks data/eval/hellaswag.jsonl --tasks arc:arc.jsonl
    python -m train.evaluate runs/demo --tasks mc:my_questions.jsonl --task-limit 500 --no-speed
    python -m train.evaluate runs/demo --data data/demo --prompts prompts.txt --json > report.json

Loss is measured on the val split, cut into the training loader's windows (``seq_len + 1`` tokens
every ``seq_len``), so every val token but a shard's first is predicted once; ``--max-windows`` takes
that many evenly spread windows instead of all. Bits per byte, the headline, is the loss in bits over
the UTF-8 bytes the predicted tokens stand for (the separator left out of both; see ``val_metrics``):
unlike the loss per token it compares across tokenizers and with published models. The dataset must
have been encoded with the run's tokenizer (same fingerprint); any other is refused.

``--tasks`` scores downstream tasks (HellaSwag, ARC, LAMBADA, or any multiple choice) as
lm-evaluation-harness does (train/tasks.py; ``python tools/fetch_eval_data.py`` fetches the public
files). Generation quality is measured on ``--prompts`` (default: the opening tokens of a few val
documents, else a built-in set); inference speed with random token ids.

Python API::

    model, model_config, tokenizer_path = train.checkpoint.load_model("runs/demo")
    ev = LLMEvaluator(model, tokenizer_path)
    ev.calculate_perplexity("data/demo")                      # bits per byte, loss, perplexity, top-1/top-5
    ev.score_tasks(["data/eval/hellaswag.jsonl"])             # acc, acc_norm per task
    ev.evaluate_generation_quality(["Once upon", "The"])      # distinct-1/2, repetition rate, mean length
    ev.comprehensive_evaluation("data/demo")                  # all of it, one JSON-able dict

For the training loop (every rank calls the first two under DDP)::

    val_metrics(model, val, batch_size, device, autocast, rank, world_size, byte_lengths)  # val_loss/ppl/bpb
    train.tasks.score_tasks(model, tasks, tokenizer, device, autocast, rank, world_size)   # task accuracy
    complete_prompts(model, tokenizer, DEFAULT_PROMPTS, max_new_tokens=32)                 # samples (rank 0)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

import shards
import tokenizer as tk
from train.checkpoint import STATE_NAME, find_checkpoint, load_model, read_index
from train.generate import STOP_EOT, generate_ids, pick_device, read_prompts
from train.loader import IGNORE_TARGET, ValWindows
from train.model import GPT
from train.tasks import load_tasks, score_tasks


class EvaluationError(shards.PipelineError):
    """A dataset or option the evaluation cannot use; the message says what to do."""


# Prompts completed at every evaluation when the config names none: general knowledge and a little
# reasoning, so a reader sees the model go from noise to grammar to (sometimes) the right answer.
DEFAULT_PROMPTS = (
    "The capital of France is",
    "The chemical symbol of gold is",
    "If yesterday was Friday, then tomorrow will be",
    "The opposite of hot is",
    "The planets of the solar system are:",
    "def fibonacci(n):",
)


# ---------------------------------------------------------------------------------------------------
# loss and bits per byte on the val windows

def byte_length_table(tok: Tokenizer, device: torch.device | str = "cpu") -> torch.Tensor:
    """(vocab_size,) int64 on ``device``: the UTF-8 bytes each token id stands for (0 for the separator);
    see :func:`tokenizer.token_byte_lengths`. An EvaluationError for a tokenizer that is not byte-level."""
    try:
        return torch.tensor(tk.token_byte_lengths(tok), dtype=torch.int64, device=device)
    except tk.TokenizerError as e:
        raise EvaluationError(str(e)) from None


@torch.no_grad()
def window_sums(model, batches, byte_lengths: torch.Tensor | None, autocast=None,
                accuracy: bool = False) -> torch.Tensor:
    """Sums over the targets of ``batches`` ((x, y) pairs, each (B, T)), float64 on the batches' device:
    [nats of every target, targets, nats of the targets that stand for text, their UTF-8 bytes,
    top-1 hits, top-5 hits] (the last two zero unless ``accuracy``; the bytes zero without ``byte_lengths``).

    A target that stands for no text (the separator ``<|endoftext|>``, 0 bytes in ``byte_lengths``)
    counts in the loss but in neither sum of bits per byte; see :func:`val_metrics`. Targets equal to
    ``IGNORE_TARGET`` (the rows that pad a batch to its fixed shape) count nowhere."""
    autocast = autocast or contextlib.nullcontext()
    total = None
    for x, y in batches:
        with autocast:
            logits, _ = model(x)  # (B, T, vocab_size)
        real = (y != IGNORE_TARGET).flatten()  # (B*T,)
        nats = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none",
                               ignore_index=IGNORE_TARGET).double()  # (B*T,), 0 where ignored
        row = torch.zeros(6, dtype=torch.float64, device=y.device)
        row[0], row[1] = nats.sum(), real.sum()
        if byte_lengths is not None:
            nbytes = byte_lengths[y.flatten().clamp(min=0)] * real  # (B*T,)
            row[2], row[3] = (nats * (nbytes > 0)).sum(), nbytes.sum()
        if accuracy:
            top = logits.topk(min(5, logits.size(-1)), dim=-1).indices  # (B, T, 5)
            row[4], row[5] = (top[..., 0] == y).sum(), (top == y[..., None]).any(-1).sum()
        total = row if total is None else total + row
    return total if total is not None else torch.zeros(6, dtype=torch.float64)


def metrics_from_sums(sums: list[float]) -> dict:
    """val_loss (nats per target, every target), val_ppl = exp(val_loss), val_bpb (None without bytes)."""
    nats, n, text_nats, nbytes = sums[:4]
    loss = nats / n
    return {"val_loss": loss, "val_ppl": math.exp(min(loss, 700)),
            "val_bpb": text_nats / math.log(2) / nbytes if nbytes else None,
            "tokens": int(n), "bytes": int(nbytes)}


@torch.no_grad()
def val_metrics(model, val: ValWindows, batch_size: int, device: torch.device, autocast=None, rank: int = 0,
                world_size: int = 1, byte_lengths: torch.Tensor | None = None, pad: bool = False) -> dict:
    """Loss, perplexity and bits per byte over the fixed validation windows, in one pass, all ranks together.

    Returns {"val_loss", "val_ppl", "val_bpb", "tokens", "bytes"}. ``val_loss``: mean nats per target
    over every target, the separator included (the trainer's val loss as it always was). ``val_bpb``:
    sum(nats) / ln 2 / sum(UTF-8 bytes) over the targets that stand for text: a target separator
    (``<|endoftext|>``, the end of a document) stands for no byte, and its loss is left out of both
    sums, as nanochat's ``evaluate_bpb`` and lm-eval's ``bits_per_byte`` (which never predicts a
    document's end) do, so the figure compares with theirs and with any tokenizer's. ``byte_lengths``:
    :func:`byte_length_table` on ``device``; None leaves val_bpb None.

    Under DDP (``world_size`` > 1) every rank must call it: rank r reads windows r, r + world_size, ...,
    and the float64 sums are all-reduced, so any number of processes gives one process's figures.
    ``model`` may be wrapped (DDP, compiled); its train/eval mode is restored. ``pad``: every batch has
    ``batch_size`` rows (the last one padded with ignored targets), so a compiled model sees one shape
    and compiles its evaluation graph once (what the trainer asks for)."""
    was_training = model.training
    model.eval()
    try:
        sums = window_sums(model, val.batches(batch_size, device, rank, world_size, pad=pad), byte_lengths,
                           autocast)
    finally:
        model.train(was_training)
    sums = sums.to(device)
    if world_size > 1:
        torch.distributed.all_reduce(sums)
    if sums[1] == 0:
        raise EvaluationError("there are no validation windows to evaluate; build the dataset with more val documents")
    return metrics_from_sums(sums.tolist())


# ---------------------------------------------------------------------------------------------------
# samples

@torch.no_grad()
def complete_prompts(model: GPT, tok: Tokenizer, prompts: list[str] | tuple[str, ...] = DEFAULT_PROMPTS,
                     max_new_tokens: int = 32, device: torch.device | None = None, autocast=None,
                     temperature: float = 0.0, top_k: int | None = None, seed: int = 0) -> list[dict]:
    """Each prompt continued by ``model``: [{"prompt", "completion", "tokens", "stop_reason"}], in order.

    Greedy by default (``temperature`` 0); otherwise sampled from a generator seeded with ``seed``, the
    same for every call, so the samples of two evaluations differ only by what the model learned. The
    global RNG is not touched, so a run resumed from a checkpoint continues exactly. The prompt follows
    the separator (where a document begins); generation stops at the model's next separator or after
    ``max_new_tokens``, with the KV cache (:func:`train.generate.generate_ids`). ``model``: the plain
    model; its train/eval mode is restored."""
    device = device or model.tok_emb.weight.device
    autocast = autocast or contextlib.nullcontext()
    encoder, eot_id = tk.Encoder(tok, "hf"), tk.eot_id(tok)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()
    out = []
    try:
        for prompt in prompts:
            ids = torch.tensor([[eot_id] + encoder.encode(prompt)], dtype=torch.long, device=device)
            with autocast:
                new, reasons = generate_ids(model, ids, max_new_tokens, eot_id=eot_id, temperature=temperature,
                                            top_k=top_k, generator=generator)
            out.append({"prompt": prompt, "completion": tok.decode(new[0]), "tokens": len(new[0]),
                        "stop_reason": reasons[0]})
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------------
# generation quality: pure functions of token id sequences

def ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


def distinct_n(seqs: list[list[int]], n: int) -> float | None:
    """distinct-n (Li et al., 2016): distinct n-grams over all n-grams, pooled over every sequence."""
    grams = [g for s in seqs for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition_rate(seqs: list[list[int]], n: int = 4) -> float | None:
    """Share of n-grams that repeat an n-gram seen earlier in the same sequence (rep-n of Welleck et
    al., 2019, pooled): 0 for text that never repeats itself, near 1 for a loop."""
    total = repeated = 0
    for s in seqs:
        grams = ngrams(s, n)
        total += len(grams)
        repeated += len(grams) - len(set(grams))
    return repeated / total if total else None


# ---------------------------------------------------------------------------------------------------
# speed

def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def measure_decode(model: GPT, batch_size: int, prompt_len: int, new_tokens: int, use_kv_cache: bool,
                   seed: int = 0) -> dict:
    """Time greedy decoding of ``new_tokens`` after a random prompt of ``prompt_len`` tokens (the context
    decoding starts from; ``prompt_len + new_tokens`` must fit in the model's ``seq_len``).

    Returns prefill seconds (the context's one forward pass; cached path only) and decode seconds
    (the ``new_tokens`` steps: one position each with the cache, the whole growing context without).
    """
    if prompt_len + new_tokens > model.cfg.seq_len:
        raise EvaluationError(f"context {prompt_len} + {new_tokens} new tokens exceeds seq_len {model.cfg.seq_len}")
    device = model.tok_emb.weight.device
    g = torch.Generator().manual_seed(seed)
    ctx = torch.randint(0, model.cfg.vocab_size, (batch_size, prompt_len), generator=g).to(device)
    prefill = None
    _sync(device)
    if use_kv_cache:
        cache = model.new_kv_cache(batch_size, prompt_len + new_tokens)
        start = time.perf_counter()
        logits, _ = model(ctx, kv_cache=cache, start_pos=0)
        _sync(device)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(new_tokens):
            nxt = logits[:, -1].argmax(-1, keepdim=True)  # (B, 1)
            logits, _ = model(nxt, kv_cache=cache, start_pos=prompt_len + i)
    else:
        start = time.perf_counter()
        for _ in range(new_tokens):
            logits, _ = model(ctx)
            ctx = torch.cat([ctx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    _sync(device)
    return {"prefill_s": prefill, "decode_s": time.perf_counter() - start}


def best_of(repeats: int, **kwargs) -> dict:
    """The fastest of ``repeats`` runs of :func:`measure_decode` (least disturbed by other work)."""
    runs = [measure_decode(**kwargs) for _ in range(repeats)]
    return {key: min(r[key] for r in runs) if runs[0][key] is not None else None for key in runs[0]}


def speed_table(model: GPT, batch_sizes=(1, 4), prompt_lens=None, new_tokens: int = 16,
                repeats: int = 3) -> list[dict]:
    """Prefill and decode tokens/s, with and without the KV cache, for each batch size and prompt length
    (a row's "context"; best of ``repeats``)."""
    seq_len = model.cfg.seq_len
    new_tokens = min(new_tokens, seq_len // 2)
    if prompt_lens is None:
        prompt_lens = sorted({max(1, seq_len // 8), seq_len - new_tokens})
    measure_decode(model, 1, min(8, seq_len - new_tokens), 2, True)  # warm-up: first calls allocate
    rows = []
    for b in batch_sizes:
        for t in prompt_lens:
            shape = dict(model=model, batch_size=b, prompt_len=t, new_tokens=new_tokens)
            cached = best_of(repeats, use_kv_cache=True, **shape)
            plain = best_of(repeats, use_kv_cache=False, **shape)
            rows.append({
                "batch_size": b, "context": t, "new_tokens": new_tokens,
                "prefill_tokens_per_s": b * t / cached["prefill_s"],
                "decode_tokens_per_s_kv_cache": b * new_tokens / cached["decode_s"],
                "decode_tokens_per_s_no_cache": b * new_tokens / plain["decode_s"],
                "kv_cache_speedup": plain["decode_s"] / cached["decode_s"],
            })
    return rows


# ---------------------------------------------------------------------------------------------------
# the evaluator

class LLMEvaluator:
    """Evaluations of one model. ``tokenizer``: a ``tokenizers.Tokenizer`` or a tokenizer.json path."""

    def __init__(self, model: GPT, tokenizer: Tokenizer | str | Path, device: str | torch.device | None = None):
        try:
            self.tok = tokenizer if isinstance(tokenizer, Tokenizer) else tk.load(tokenizer)
        except tk.TokenizerError as e:
            raise EvaluationError(str(e)) from None
        self.tokenizer_sha256 = tk.fingerprint_text(self.tok.to_str())
        self.eot_id = tk.eot_id(self.tok)
        self.device = torch.device(device) if device else model.tok_emb.weight.device
        self.model = model.to(self.device).eval()
        try:
            self.byte_lengths, self.no_bpb_reason = byte_length_table(self.tok, self.device), None
        except EvaluationError as e:  # bits per byte cannot be counted; everything else still can
            self.byte_lengths, self.no_bpb_reason = None, str(e)

    def check_dataset(self, data_dir: str | Path) -> dict:
        """The dataset's manifest, if its tokenizer is this model's; otherwise an EvaluationError."""
        manifest = shards.load_manifest(data_dir)
        if manifest["tokenizer_sha256"] != self.tokenizer_sha256:
            raise EvaluationError(
                f"{data_dir} was encoded with tokenizer {manifest['tokenizer_sha256'][:16]}…, but the model's "
                f"tokenizer is {self.tokenizer_sha256[:16]}…; token ids would mean different things. Evaluate "
                f"on a dataset built with the run's tokenizer.json "
                f"(python -m preprocess --tokenizer RUN/tokenizer.json)")
        return manifest

    @torch.inference_mode()
    def calculate_perplexity(self, data_dir: str | Path, max_windows: int | None = None, batch_size: int = 8) -> dict:
        """Over the val windows (all of them, or ``max_windows`` evenly spread): bits per byte (see
        :func:`val_metrics`), mean next-token loss (nats), perplexity = exp(loss), and top-1/top-5 accuracy."""
        manifest = self.check_dataset(data_dir)
        seq_len = self.model.cfg.seq_len
        windows = ValWindows(data_dir, manifest, seq_len, max_windows or sys.maxsize)
        if len(windows) == 0:
            raise EvaluationError(f"the val split of {data_dir} has no window of seq_len + 1 = {seq_len + 1} "
                                  f"tokens; build the dataset with more val documents")
        sums = window_sums(self.model, windows.batches(batch_size, self.device), self.byte_lengths,
                           accuracy=True).tolist()
        m = metrics_from_sums(sums)
        n = m["tokens"]
        return {"bits_per_byte": m["val_bpb"], "loss": m["val_loss"], "perplexity": m["val_ppl"],
                "top1_accuracy": sums[4] / n, "top5_accuracy": sums[5] / n, "tokens": n, "bytes": m["bytes"],
                "windows": len(windows), "seq_len": seq_len}

    def evaluate_generation_quality(self, prompts: list[str], max_new_tokens: int = 64, temperature: float = 0.8,
                                    top_k: int | None = 50, top_p: float | None = None,
                                    repetition_penalty: float = 1.0, seed: int = 0) -> dict:
        """Sample a completion per prompt and measure it on token ids: distinct-1/2, rep-4
        repetition rate, mean length, and how often the model ended the document itself."""
        if not prompts:
            raise EvaluationError("no prompts to evaluate generation on")
        encoder = tk.Encoder(self.tok, "hf")
        g = torch.Generator(device=self.device).manual_seed(seed)
        seqs, stopped = [], 0
        for p in prompts:
            ids = torch.tensor([[self.eot_id] + encoder.encode(p)], device=self.device)
            new, reasons = generate_ids(self.model, ids, max_new_tokens, eot_id=self.eot_id, temperature=temperature,
                                        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, generator=g)
            seqs.append(new[0])
            stopped += reasons[0] == STOP_EOT
        return {"prompts": len(prompts), "distinct_1": distinct_n(seqs, 1), "distinct_2": distinct_n(seqs, 2),
                "repetition_rate": repetition_rate(seqs, 4), "mean_length": sum(map(len, seqs)) / len(seqs),
                "ended_document_share": stopped / len(seqs),
                "settings": {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_k": top_k,
                             "top_p": top_p, "repetition_penalty": repetition_penalty, "seed": seed},
                "samples": [{"prompt": p, "completion": self.tok.decode(s)}
                            for p, s in zip(prompts[:3], seqs, strict=False)]}

    def default_prompts(self, data_dir: str | Path, n: int = 8, prompt_tokens: int = 8) -> list[str]:
        """The first ``prompt_tokens`` tokens of ``n`` val documents, as text."""
        manifest = shards.load_manifest(data_dir)
        prompts = []
        for entry in shards.split_shards(manifest, "val"):
            for doc in shards.iter_documents(data_dir, entry, manifest["dtype"]):
                if len(prompts) == n:
                    return prompts
                if len(doc) > prompt_tokens:
                    prompts.append(self.tok.decode(doc[:prompt_tokens].tolist()))
        return prompts

    def score_tasks(self, specs: list[str], limit: int | None = None, batch_size: int = 32) -> dict:
        """Accuracy on the tasks named by ``specs`` (``[KIND:]PATH``, see train/tasks.py), each cut to its
        first ``limit`` items: {name: {"acc", "acc_norm", "items", "seconds", "kind", "path"}}."""
        tasks = load_tasks(specs, limit)
        scores = score_tasks(self.model, tasks, self.tok, self.device, batch_size=batch_size)
        return {t.name: {**scores[t.name], "kind": t.kind, "path": str(t.path)} for t in tasks}

    def comprehensive_evaluation(self, data_dir: str | Path | None, prompts: list[str] | None = None,
                                 max_windows: int | None = None, batch_size: int = 8, max_new_tokens: int = 64,
                                 speed: bool = True, seed: int = 0, tasks: list[str] | None = None,
                                 task_limit: int | None = None, task_batch_size: int = 32) -> dict:
        """Everything in one JSON-able report: the val split of ``data_dir`` (when given), the ``tasks``
        (when given), generation on ``prompts`` (default: the openings of val documents, else
        DEFAULT_PROMPTS), speed."""
        report = {"dataset": None if data_dir is None else str(data_dir), "tokenizer_sha256": self.tokenizer_sha256,
                  "device": str(self.device), "parameters": self.model.num_params(), "seq_len": self.model.cfg.seq_len}
        if data_dir is not None:
            report["perplexity"] = self.calculate_perplexity(data_dir, max_windows, batch_size)
            if self.no_bpb_reason:
                report["perplexity"]["bits_per_byte_note"] = self.no_bpb_reason
        if tasks:
            report["tasks"] = self.score_tasks(tasks, task_limit, task_batch_size)
        if prompts is None:
            prompts = self.default_prompts(data_dir) if data_dir is not None else list(DEFAULT_PROMPTS)
        report["generation"] = self.evaluate_generation_quality(prompts, max_new_tokens, seed=seed)
        if speed:
            report["speed"] = speed_table(self.model)
        return report


# ---------------------------------------------------------------------------------------------------
# command line

def print_report(r: dict) -> None:
    g = r["generation"]
    print(f"checkpoint {r['checkpoint']} (step {r.get('step', '?')}){' on ' + r['dataset'] if r['dataset'] else ''} · "
          f"{r['device']} · {r['parameters']:,} parameters")
    if "perplexity" in r:
        p = r["perplexity"]
        bpb = "n/a" if p["bits_per_byte"] is None else f"{p['bits_per_byte']:.4f}"
        print(f"  val bits per byte {bpb} · val loss {p['loss']:.4f} nats/token · perplexity {p['perplexity']:.2f} · "
              f"top-1 {p['top1_accuracy']:.2%} · top-5 {p['top5_accuracy']:.2%}  ({p['tokens']:,} tokens, "
              f"{p['bytes']:,} bytes in {p['windows']:,} windows of {p['seq_len']})")
        if p.get("bits_per_byte_note"):
            print(f"  (no bits per byte: {p['bits_per_byte_note']})")
    if "tasks" in r:
        print(f"  {'task':<24} {'kind':<10} {'items':>7} {'acc':>8} {'acc_norm':>9} {'seconds':>8}")
        for name, t in r["tasks"].items():
            norm = "–" if t["acc_norm"] is None else f"{t['acc_norm']:.2%}"
            print(f"  {name:<24} {t['kind']:<10} {t['items']:>7,} {t['acc']:>8.2%} {norm:>9} {t['seconds']:>8.1f}")
    fmt = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    print(f"  generation on {g['prompts']} prompts: distinct-1 {fmt(g['distinct_1'])} · distinct-2 "
          f"{fmt(g['distinct_2'])} · repetition (rep-4) {fmt(g['repetition_rate'])} · mean length "
          f"{g['mean_length']:.1f} tokens · ended the document {g['ended_document_share']:.0%}")
    for s in g["samples"]:
        print(f"    {s['prompt']!r} → {s['completion'][:100]!r}")
    if "speed" in r:
        print(f"  {'batch':>5} {'context':>7} {'prefill tok/s':>14} {'decode tok/s (cache)':>21} "
              f"{'(no cache)':>11} {'speedup':>8}")
        for row in r["speed"]:
            print(f"  {row['batch_size']:>5} {row['context']:>7} {row['prefill_tokens_per_s']:>14,.0f} "
                  f"{row['decode_tokens_per_s_kv_cache']:>21,.1f} {row['decode_tokens_per_s_no_cache']:>11,.1f} "
                  f"{row['kv_cache_speedup']:>7.1f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1].split("Python API")[0])
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT", help="a run directory or a checkpoints/step_* directory")
    p.add_argument("--data", type=Path, metavar="DIR", help="dataset directory (its val split is used)")
    p.add_argument("--tasks", action="append", default=[], metavar="[KIND:]FILE",
                   help="a task file to score (repeatable): hellaswag, arc, mc or lambada jsonl, its kind read off "
                        "the file unless given (python tools/fetch_eval_data.py fetches the public ones)")
    p.add_argument("--task-limit", type=int, default=None, metavar="N", help="score the first N items of each task")
    p.add_argument("--task-batch-size", type=int, default=32, help="sequences per forward pass on tasks (default: 32)")
    p.add_argument("--prompts", type=Path, metavar="FILE", help="prompts for generation quality (.txt, .json, .jsonl)")
    p.add_argument("--which", choices=("best", "latest"), default="best", help="checkpoint of a run (default: best)")
    p.add_argument("--max-windows", type=int, default=None, help="evaluate this many val windows (default: all)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per prompt (default: 64)")
    p.add_argument("--no-speed", action="store_true", help="skip the inference speed measurements")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ... (default: auto)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--output", type=Path, metavar="FILE.json", help="also write the JSON report to this file")
    args = p.parse_args(argv)
    try:
        if args.data is None and not args.tasks:
            raise EvaluationError("nothing to evaluate on: give --data DIR (a dataset's val split), --tasks FILE, "
                                  "or both")
        for name in ("max_windows", "batch_size", "max_new_tokens", "task_limit", "task_batch_size"):
            value = getattr(args, name)
            if value is not None and value < 1:
                raise EvaluationError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
        prompts = read_prompts(args.prompts) if args.prompts else None
        device = pick_device(args.device)
        ckpt = find_checkpoint(args.checkpoint, args.which)
        model, _, tokenizer_path = load_model(ckpt, device=device)
        evaluator = LLMEvaluator(model, tokenizer_path)
        report = {"checkpoint": str(ckpt), "step": read_index(ckpt)["step"] if (ckpt / STATE_NAME).exists()
                  else None}
        report.update(evaluator.comprehensive_evaluation(args.data, prompts, args.max_windows, args.batch_size,
                                                         args.max_new_tokens, speed=not args.no_speed, seed=args.seed,
                                                         tasks=args.tasks, task_limit=args.task_limit,
                                                         task_batch_size=args.task_batch_size))
    except shards.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
        if args.output:
            print(f"  report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
