"""Downstream tasks: multiple-choice accuracy and LAMBADA's last-word accuracy, scored on the device as
lm-evaluation-harness scores them, so the numbers are the ones the field reports.

Task files are read in their own published formats, one JSON object per line:

* ``hellaswag``: rowanz/hellaswag's data files (``hellaswag_val.jsonl``): ``activity_label``, ``ctx_a``,
  ``ctx_b``, ``endings`` (4), ``label``. Prepared as lm-eval's ``hellaswag`` task does: the context is
  ``"ACTIVITY_LABEL: CTX_A Ctx_b"`` (``ctx_b`` through ``str.capitalize``), the context and each ending
  cleaned of WikiHow's artifacts (" [title]" becomes ". ", any other "[...]" is dropped, double spaces
  become one, ends stripped).
* ``arc``: the AI2 ARC release (``ARC-Easy-Test.jsonl``, ``ARC-Challenge-Test.jsonl``): ``question``
  {``stem``, ``choices`` [{``text``, ``label``}]} and ``answerKey``. The context is
  ``"Question: STEM\\nAnswer:"``, the choices are the texts, gold the choice whose label is ``answerKey``.
* ``mc``: anything else as multiple choice: ``context`` (text), ``choices`` (texts), ``gold`` (index).
* ``lambada``: OpenAI's LAMBADA file (``lambada_test.jsonl``): ``text``. Split on single spaces, the
  last word is what the model must predict: context all the words before it, continuation " WORD".

Scoring, per choice (lm-eval's ``loglikelihood``, zero-shot): the continuation " CHOICE" (one space,
lm-eval's ``target_delimiter``) after the context; trailing spaces of the context move to the
continuation; context + continuation are encoded together and the continuation's tokens are those past
the context's own encoding; the separator ``<|endoftext|>`` goes in front, where every document of the
training data begins (lm-eval on our export: ``add_bos_token=True``); when the whole is longer than
``seq_len + 1`` tokens it is cut from the left. The log-likelihood is the sum of the continuation's
token log-probabilities. ``acc``: the choice with the highest log-likelihood is gold; ``acc_norm``: the
same with each log-likelihood divided by its choice's length in characters (lm-eval's ``acc_norm``:
``len(choice)``, without the delimiter). Ties go to the first choice (``np.argmax``). LAMBADA's
``acc``: every continuation token is the argmax of its position (lm-eval's ``is_greedy``); its
``ppl`` is exp(-mean log-likelihood), lm-eval's ``perplexity``.

A task spec (``training.eval_tasks``, ``python -m train.evaluate --tasks``) is ``[KIND:]PATH``, KIND
one of hellaswag, arc, mc, lambada; without it the kind is read off the first line's keys. The task's
name is the file's stem (``data/eval/hellaswag.jsonl`` -> ``hellaswag``).

Python API::

    tasks = load_tasks(["data/eval/hellaswag.jsonl", "arc:data/eval/arc_easy.jsonl"])
    scores = score_tasks(model, tasks, tokenizer, device)  # {"hellaswag": {"acc", "acc_norm", "items", "seconds"}, ...}
"""
from __future__ import annotations

import contextlib
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tokenizers import Tokenizer

import shards
import tokenizer as tk
from train.model import GPT

KINDS = ("hellaswag", "arc", "mc", "lambada")
TARGET_DELIMITER = " "  # between the context and a choice, as lm-eval's default target_delimiter
FETCH_HINT = "python tools/fetch_eval_data.py"


class TaskError(shards.PipelineError):
    """A task spec or file that cannot be read; the message names the file and line and what to do."""


@dataclass(frozen=True)
class Item:
    """One question: the context, the choices as written (acc_norm divides by their length in
    characters) and the index of the right one. A LAMBADA item has one choice, the last word."""
    context: str
    choices: tuple[str, ...]
    gold: int


@dataclass
class Task:
    name: str                 # the file's stem: the key of its scores
    kind: str                 # one of KINDS
    path: Path
    items: list[Item]
    _encoded: dict = field(default_factory=dict, repr=False)  # tokenizer fingerprint -> requests per item


# ---------------------------------------------------------------------------------------------------
# reading task files

def _hellaswag_clean(text: str) -> str:
    """lm-eval's hellaswag ``preprocess``: WikiHow's bracketed artifacts out, spaces tidied."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _field(obj: dict, key: str, kind, where: str, what: str):
    value = obj.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        got = "missing" if key not in obj else f"{type(value).__name__} {json.dumps(value)[:40]}"
        raise TaskError(f"{where}: {key!r} must be {what}, got {got}")
    return value


def _texts(obj: dict, key: str, where: str) -> list[str]:
    values = _field(obj, key, list, where, "a list of strings")
    if not values or not all(isinstance(v, str) for v in values):
        raise TaskError(f"{where}: {key!r} must be a non-empty list of strings")
    return values


def hellaswag_item(obj: dict, where: str) -> Item:
    endings = _texts(obj, "endings", where)
    ctx = (_field(obj, "ctx_a", str, where, "a string") + " "
           + _field(obj, "ctx_b", str, where, "a string").capitalize())
    context = _hellaswag_clean(_field(obj, "activity_label", str, where, "a string") + ": " + ctx)
    label = obj.get("label")
    if label is None or label == "":
        raise TaskError(f"{where}: no 'label' (the HellaSwag test split is unlabeled); use hellaswag_val.jsonl")
    if isinstance(label, str) and label.isdigit():
        label = int(label)
    if not isinstance(label, int) or isinstance(label, bool) or not 0 <= label < len(endings):
        raise TaskError(f"{where}: 'label' must be an index into the {len(endings)} endings, got {label!r}")
    return Item(context, tuple(_hellaswag_clean(e) for e in endings), label)


def arc_item(obj: dict, where: str) -> Item:
    question = _field(obj, "question", dict, where, "an object with 'stem' and 'choices'")
    stem = _field(question, "stem", str, f"{where}: question", "a string")
    choices = _field(question, "choices", list, f"{where}: question", "a list of {\"text\", \"label\"}")
    if not choices or not all(isinstance(c, dict) and isinstance(c.get("text"), str)
                              and isinstance(c.get("label"), str) for c in choices):
        raise TaskError(f"{where}: question.choices must be a non-empty list of {{\"text\": str, \"label\": str}}")
    labels = [c["label"] for c in choices]
    key = obj.get("answerKey")
    if key not in labels:
        raise TaskError(f"{where}: answerKey {key!r} is not one of the choices' labels {labels}")
    return Item(f"Question: {stem}\nAnswer:", tuple(c["text"] for c in choices), labels.index(key))


def mc_item(obj: dict, where: str) -> Item:
    context = _field(obj, "context", str, where, "a string")
    choices = _texts(obj, "choices", where)
    gold = _field(obj, "gold", int, where, "an integer")
    if not 0 <= gold < len(choices):
        raise TaskError(f"{where}: 'gold' must be an index into the {len(choices)} choices, got {gold}")
    return Item(context, tuple(choices), gold)


def lambada_item(obj: dict, where: str) -> Item:
    words = _field(obj, "text", str, where, "a string").split(" ")
    if not words[-1]:
        raise TaskError(f"{where}: 'text' must end with the word to predict, not a space")
    return Item(" ".join(words[:-1]), (words[-1],), 0)


PARSERS = {"hellaswag": hellaswag_item, "arc": arc_item, "mc": mc_item, "lambada": lambada_item}


def detect_kind(obj: dict) -> str | None:
    """The format of a task file, from the keys of its first record."""
    if "ctx_a" in obj and "endings" in obj:
        return "hellaswag"
    if isinstance(obj.get("question"), dict) and "answerKey" in obj:
        return "arc"
    if {"context", "choices", "gold"} <= obj.keys():
        return "mc"
    if "text" in obj:
        return "lambada"
    return None


def read_task(path: str | Path, kind: str | None = None, limit: int | None = None) -> Task:
    """The task in ``path`` (its first ``limit`` items, all by default); ``kind`` None: detected."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise TaskError(f"task file {path} does not exist; the public task files are fetched with "
                        f"`{FETCH_HINT}`") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TaskError(f"cannot read task file {path}: {e}") from None
    items = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if limit is not None and len(items) == limit:
            break
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise TaskError(f"{where}: not valid JSON ({e}); a task file holds one JSON object per line") from None
        if not isinstance(obj, dict):
            raise TaskError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        if kind is None:
            kind = detect_kind(obj)
            if kind is None:
                raise TaskError(f"{where}: cannot tell the task format from the keys {sorted(obj)[:8]}; name it "
                                f"as KIND:{path} with KIND one of {', '.join(KINDS)}")
        items.append(PARSERS[kind](obj, where))
    if not items:
        raise TaskError(f"task file {path} holds no items")
    return Task(path.stem, kind, path, items)


def parse_spec(spec: str) -> tuple[str | None, Path]:
    """``[KIND:]PATH`` -> (KIND or None, PATH)."""
    kind, sep, rest = spec.partition(":")
    if sep and kind in KINDS:
        return kind, Path(rest)
    return None, Path(spec)


def load_tasks(specs: list[str], limit: int | None = None) -> list[Task]:
    """The tasks named by ``specs`` (see the module docstring), each cut to its first ``limit`` items."""
    tasks = [read_task(path, kind, limit) for kind, path in map(parse_spec, specs)]
    names = [t.name for t in tasks]
    for name in names:
        if names.count(name) > 1:
            raise TaskError(f"two task files are named {name!r} (a task's name is its file's stem); rename one")
    return tasks


# ---------------------------------------------------------------------------------------------------
# encoding: lm-eval's context/continuation split, the separator in front

def encode_pair(encoder: tk.Encoder, eot_id: int, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) as lm-eval's ``loglikelihood`` makes them with ``add_bos_token``:
    the context's trailing spaces move to the continuation, context + continuation are encoded
    together and the continuation is what lies past the context's own encoding."""
    if not context:
        return [eot_id], encoder.encode(continuation)
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = [eot_id] + encoder.encode(context + continuation)
    ctx = [eot_id] + encoder.encode(context)
    return ctx, whole[len(ctx):]


def task_requests(task: Task, tok: Tokenizer) -> list[list[tuple[list[int], list[int]]]]:
    """Per item, per choice, (context ids, continuation ids); encoded once per tokenizer."""
    key = tk.fingerprint_text(tok.to_str())
    if key not in task._encoded:
        encoder, eot_id = tk.Encoder(tok, "hf"), tk.eot_id(tok)
        task._encoded = {key: [[encode_pair(encoder, eot_id, item.context, TARGET_DELIMITER + choice)
                                for choice in item.choices] for item in task.items]}
    return task._encoded[key]


# ---------------------------------------------------------------------------------------------------
# scoring

@torch.no_grad()
def loglikelihoods(model: GPT, requests: list[tuple[list[int], list[int]]], device: torch.device,
                   autocast=None, batch_size: int = 32) -> list[tuple[float, bool]]:
    """(sum of the continuation's token log-probabilities, whether every one is its position's argmax)
    for each (context ids, continuation ids), in order.

    The longest sequences go first, ``batch_size`` to a forward pass, padded on the right (a causal
    model's earlier positions do not see the padding). A sequence of more than ``seq_len + 1`` tokens
    is cut from the left, as lm-eval does."""
    seq_len = model.cfg.seq_len
    autocast = autocast or contextlib.nullcontext()
    rows = []  # (input ids, continuation ids)
    for ctx, cont in requests:
        if not 0 < len(cont) <= seq_len:
            raise TaskError(f"a continuation of {len(cont)} tokens cannot be scored with seq_len {seq_len}")
        rows.append(((ctx + cont)[-(seq_len + 1):-1], cont))
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
    out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        x = torch.zeros((len(chunk), len(rows[chunk[0]][0])), dtype=torch.long)
        where_b, where_t, targets, owner = [], [], [], []  # one entry per continuation token
        for b, i in enumerate(chunk):
            inp, cont = rows[i]
            x[b, :len(inp)] = torch.tensor(inp)
            # the continuation's tokens are predicted at the last len(cont) input positions
            where_b += [b] * len(cont)
            where_t += range(len(inp) - len(cont), len(inp))
            targets += cont
            owner += [b] * len(cont)
        with autocast:
            logits, _ = model(x.to(device))  # (B, T, vocab_size)
        at = (torch.tensor(where_b, device=logits.device), torch.tensor(where_t, device=logits.device))
        picked = F.log_softmax(logits[at].float(), dim=-1)  # (N, vocab_size)
        targets_t = torch.tensor(targets, device=picked.device)
        owner_t = torch.tensor(owner, device=picked.device)
        token_ll = picked.gather(1, targets_t[:, None]).squeeze(1)  # (N,)
        misses = (picked.argmax(-1) != targets_t).to(torch.float64)
        ll = torch.zeros(len(chunk), dtype=torch.float64, device=picked.device)
        ll.index_add_(0, owner_t, token_ll.double())  # per sequence: the sum over its continuation
        missed = torch.zeros(len(chunk), dtype=torch.float64, device=picked.device)
        missed.index_add_(0, owner_t, misses)
        for b, (value, miss) in enumerate(zip(ll.tolist(), missed.tolist(), strict=True)):
            out[chunk[b]] = (value, miss == 0)
    return out


@dataclass
class ItemScore:
    lls: list[float]          # log-likelihood of each choice's continuation
    greedy: list[bool]        # whether each continuation is the model's greedy continuation
    pred: int                 # argmax of lls
    pred_norm: int            # argmax of lls / len(choice)
    acc: bool                 # multiple choice: pred == gold; lambada: greedy[0]
    acc_norm: bool | None     # pred_norm == gold; None for lambada


def judge(task: Task, item: Item, results: list[tuple[float, bool]]) -> ItemScore:
    lls = [r[0] for r in results]
    greedy = [r[1] for r in results]
    with np.errstate(divide="ignore", invalid="ignore"):
        pred = int(np.argmax(lls))
        pred_norm = int(np.argmax(np.array(lls) / np.array([float(len(c)) for c in item.choices])))
    if task.kind == "lambada":
        return ItemScore(lls, greedy, pred, pred_norm, greedy[0], None)
    return ItemScore(lls, greedy, pred, pred_norm, pred == item.gold, pred_norm == item.gold)


def score_items(model: GPT, task: Task, tok: Tokenizer, device: torch.device, autocast=None,
                batch_size: int = 32, indices: list[int] | None = None) -> list[ItemScore]:
    """The scores of ``task``'s items (those at ``indices``, all by default), in order."""
    indices = list(range(len(task.items))) if indices is None else indices
    requests = task_requests(task, tok)
    flat = [r for i in indices for r in requests[i]]
    results = loglikelihoods(model, flat, device, autocast, batch_size)
    scores, at = [], 0
    for i in indices:
        n = len(task.items[i].choices)
        scores.append(judge(task, task.items[i], results[at:at + n]))
        at += n
    return scores


def score_tasks(model: GPT, tasks: list[Task], tok: Tokenizer, device: torch.device, autocast=None,
                rank: int = 0, world_size: int = 1, batch_size: int = 32) -> dict[str, dict]:
    """Accuracy on each task: {name: {"acc", "acc_norm", "items", "seconds"}} (LAMBADA: "acc_norm" None,
    plus "ppl"). Under DDP every rank must call it: rank r scores items r, r + world_size, ...; the
    counts are summed over the ranks, so any number of processes gives one process's numbers.
    ``seconds``: the slowest rank's. ``model``: the plain model (not DDP or compiled: item batches
    vary in length); its train/eval mode is restored."""
    was_training = model.training
    model.eval()
    sums = torch.zeros((len(tasks), 4), dtype=torch.float64)  # acc, acc_norm, items, log-likelihood
    seconds = torch.zeros(len(tasks), dtype=torch.float64)
    try:
        for k, task in enumerate(tasks):
            start = time.perf_counter()
            mine = list(range(rank, len(task.items), world_size))
            for s in score_items(model, task, tok, device, autocast, batch_size, mine):
                sums[k] += torch.tensor([float(s.acc), float(bool(s.acc_norm)), 1.0, s.lls[0]], dtype=torch.float64)
            seconds[k] = time.perf_counter() - start
    finally:
        model.train(was_training)
    if world_size > 1:
        sums, seconds = sums.to(device), seconds.to(device)
        dist.all_reduce(sums)
        dist.all_reduce(seconds, op=dist.ReduceOp.MAX)
    out = {}
    for task, (acc, acc_norm, n, ll), s in zip(tasks, sums.tolist(), seconds.tolist(), strict=True):
        record = {"acc": acc / n, "acc_norm": acc_norm / n, "items": int(n), "seconds": s}
        if task.kind == "lambada":
            record["acc_norm"] = None
            record["ppl"] = math.exp(min(-ll / n, 700))
        out[task.name] = record
    return out
