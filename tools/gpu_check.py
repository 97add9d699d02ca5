"""Check the trainer on a CUDA GPU in one command, offline: its speed against a bare loop of the same
model, MFU, peak memory, host syncs between log points, recompiles and graph breaks, and a resume, for
each 75M preset with bf16 and torch.compile.

    python tools/gpu_check.py            # a CUDA machine: 75m_dolma and 75m_dolma_modern, 100 steps each
    python tools/gpu_check.py --tiny     # CPU: the same parts on tiny models (the tests run this)

Run it from the repository checkout: it puts the checkout on the import path, so the project need not
be installed. It needs torch, numpy and safetensors (the trainer), and HF tokenizers for the dataset's
tokenizer (without it the dataset holds Zipf-distributed random ids, and the table says so); nothing is
downloaded. Carried wheels install offline with ``pip install --no-index --find-links WHEELS_DIR NAME``.

Parts, each under its own time limit and all under one budget (``--budget-s``, 8 minutes); a part that
fails or runs over is named in the table and the check goes on:

1. dataset: a 32,000-token BPE trained on synthetic text (60,000 made-up words with Zipf frequencies),
   and about 2.5M tokens of that text written with the project's shard writer: a dataset directory
   ``python -m train`` reads like any other. The token stream is the concatenation of the words'
   encodings, checked against encoding whole documents. ``--data DIR`` uses an existing one instead.
2. per preset, a run of ``--steps`` steps through ``train.trainer.train`` (bf16 and compile on CUDA):
   it logs every quarter of the steps, and evaluates and checkpoints at the half and at the end;
3. resume: the run's last checkpoint removed (as a run stopped after the half's checkpoint leaves it)
   and the same config trained again from the half; its logged losses against the uninterrupted run's;
4. bare loop (tools/bench_train.py): forward, backward, clip and optimizer step of the same model in
   the same process on one batch already on the device, and forward and backward alone.

The table (one row per preset):

* tok/s step: the trainer's tokens/s over the logged steps after the first quarter (the first holds the
  compilation), evaluation and checkpoint time left out; tok/s wall: tokens over wall-clock time across
  the same steps, the evaluation and the checkpoint at the half included;
* MFU: step tokens/s x the model's FLOPs per token over the GPU's dense bf16 peak (train/model.py);
* peak mem: ``torch.cuda.max_memory_allocated`` during the run;
* vs bare: step tokens/s over the bare loop's; opt share: the optimizer step's (and clip's) share of
  the bare loop's step time;
* syncs: host-device synchronisations (``torch.cuda.set_sync_debug_mode``) in the training loop
  between log points, outside the loop's log, evaluation and checkpoint steps, after the first log
  point (those before it are one-time starts; the targets line counts them apart, with the rest);
* graphs: graphs compiled for GPT.forward over all parts (2 expected: training and evaluation; more is
  a recompile), and graph breaks. Recompiles and graph breaks are logged on stderr with their reasons
  as they happen; the first evaluation's graph shows there as "Recompiling function forward ...
  GLOBAL_STATE changed: grad_mode", the expected second one;
* resume: the largest relative difference of a logged loss after the resumed step; exact on CPU.

Targets it prints against: trainer >= 0.97x the bare loop; MFU >= 40% on an H100 (or H200) for the 75M
presets, with what limits it when not; no syncs between log points; 2 graphs, no break; the resumed
losses those of the uninterrupted run. Exit status 0 when every part ran and every target that applies
to the device is met, else 1.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import importlib.util
import json
import math
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tools")]  # the checkout, installed or not, and bench_train beside this file

try:
    import numpy as np
    import safetensors  # noqa: F401  (the trainer's checkpoints: fail here, not after the first run)
    import torch
except ImportError as e:
    raise SystemExit(f"gpu_check: {e.name} is not installed; the trainer needs torch, numpy and safetensors. Install "
                     f"the wheels you brought: pip install --no-index --find-links WHEELS_DIR {e.name}") from None

from bench_train import bare_loop, step_tokens_per_s  # noqa: E402

import shards  # noqa: E402
from train.checkpoint import CHECKPOINT_DIR, step_name  # noqa: E402
from train.config import load_config  # noqa: E402
from train.model import GPT, gpu_key, peak_flops  # noqa: E402
from train.process import Dist, resolve_device, resolve_precision  # noqa: E402
from train.trainer import train  # noqa: E402

PRESETS = ("75m_dolma", "75m_dolma_modern")
BUDGET_S = 480  # the whole check, 8 minutes
# seconds per part at most: the compiles dominate (on an H100 host about a minute for a 75M model's
# training graph, less for its evaluation graph); 100 steps of 49k tokens take about 6 s
LIMITS_S = {"dataset": 60, "train": 180, "resume": 60, "bare": 60}
# --tiny: the tests' tiny model (tests/conftest.py TINY), so inductor's on-disk cache serves the graphs the
# compile tests built; on CPU, where compiling takes about ten times as long as on an H100's host
TINY = ["model.seq_len=32", "model.n_layers=2", "model.d_model=64", "model.n_heads=2", "training.batch_size=4",
        "training.grad_accum_steps=1", "training.eval_windows=10", "training.device=cpu", "training.precision=fp32"]
TINY_BUDGET_S, TINY_SLACK = 1200, 3.0
TARGET_RATIO = 0.97
TARGET_MFU = 0.40
MFU_TARGET_GPUS = ("h100", "h200")  # the 40% target is an H100's (an H200 has the same compute)
RESUME_TOLERANCE = 1e-3  # on CUDA: atomics in some backward kernels make reruns differ in the last bits


# ---------------------------------------------------------------------------------------------------
# the dataset

def made_up_words(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct lowercase words of 1-4 syllables, in random order (the order sets their frequency)."""
    syllables = np.array([c + v + e for c in "bcdfghjklmnprstvwz" for v in "aeiou" for e in ("", "n", "r")])
    lengths = rng.integers(1, 5, 3 * n)
    drawn = np.split(rng.choice(syllables, lengths.sum()), np.cumsum(lengths)[:-1])
    words = np.unique(["".join(s) for s in drawn])[:n]
    return words[rng.permutation(len(words))]


def synthesize_dataset(out: Path, vocab_size: int, train_tokens: int, val_tokens: int, n_words: int,
                       shard_tokens: int = 1 << 20, seed: int = 0) -> str:
    """Write a dataset directory at ``out`` of Zipf-distributed made-up words; returns what it holds, in words.

    Documents are 200 words and a full stop, each with the separator before it. With HF tokenizers a BPE of
    ``vocab_size`` ids is trained on a sample of the text, and every word is encoded once (with its leading
    space: the GPT-2 split makes each " word" a piece of its own), so the stream is the concatenation of
    those encodings; a few whole documents are encoded to check that. Without it the words are random ids."""
    rng = np.random.default_rng(seed)
    words = made_up_words(rng, n_words)
    zipf = 1.0 / np.arange(1, len(words) + 1)
    zipf /= zipf.sum()
    words_per_doc = 200
    out.mkdir(parents=True, exist_ok=True)
    if importlib.util.find_spec("tokenizers"):
        import tokenizer as tk
        sample = rng.choice(len(words), size=(max(100, min(7500, 3 * vocab_size // 10)), words_per_doc), p=zipf)
        tok = tk.train_bpe((" " + " ".join(words[row]) + "." for row in sample), vocab_size=vocab_size)
        tokenizer_sha = tk.save(tok, out / shards.TOKENIZER_NAME)
        eot = tk.eot_id(tok)
        pieces = [e.ids for e in tok.encode_batch([" " + w for w in words] + ["."], add_special_tokens=False)]
        vocab, what = tok.get_vocab_size(), f"a {tok.get_vocab_size():,}-token BPE trained on it"
    else:
        tok, eot, vocab = None, 0, vocab_size
        pieces = [rng.integers(1, vocab_size, rng.integers(1, 4)).tolist() for _ in range(len(words) + 1)]
        tokenizer_sha = "none: HF tokenizers is not installed; the ids are random"
        (out / shards.TOKENIZER_NAME).write_text("{}\n", encoding="utf-8")  # a placeholder: not a tokenizer
        what = "random ids for its words (HF tokenizers is not installed: the tokenizer.json is a placeholder)"
    # the piece table: word i -> pieces[i], then the full stop, then the separator
    pieces.append([eot])
    lengths = np.array([len(p) for p in pieces])
    flat = np.concatenate([np.asarray(p, dtype=np.int64) for p in pieces])
    starts = np.cumsum(lengths) - lengths
    full_stop, separator = len(words), len(words) + 1
    dtype = shards.choose_dtype(vocab, "uint16" if vocab <= shards.UINT16_LIMIT else "uint32")
    mean_doc = 2 + float(zipf @ lengths[:len(words)]) * words_per_doc

    def documents(n_docs: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(tokens, separator offsets, the piece ids) of ``n_docs`` new documents."""
        ids = rng.choice(len(words), size=(n_docs, words_per_doc), p=zipf)
        seq = np.concatenate([np.full((n_docs, 1), separator), ids, np.full((n_docs, 1), full_stop)], axis=1).ravel()
        n = lengths[seq]
        begin = np.cumsum(n) - n  # where each piece lands in the stream
        tokens = flat[np.repeat(starts[seq] - begin, n) + np.arange(n.sum())]
        return tokens.astype(shards.numpy_dtype(dtype)), begin[seq == separator], ids

    entries = []
    for split, total in (("train", train_tokens), ("val", val_tokens)):
        n_docs, per_shard = max(1, round(total / mean_doc)), max(1, round(shard_tokens / mean_doc))
        for index, first in enumerate(range(0, n_docs, per_shard)):
            tokens, offsets, ids = documents(min(per_shard, n_docs - first))
            if tok is not None and index == 0:
                for doc in range(min(3, len(ids))):
                    text = " " + " ".join(words[ids[doc]]) + "."
                    end = offsets[doc + 1] if doc + 1 < len(offsets) else len(tokens)
                    if tok.encode(text, add_special_tokens=False).ids != tokens[offsets[doc] + 1:end].tolist():
                        raise RuntimeError("the synthetic token stream differs from encoding its text whole")
            entries.append(shards.write_shard(out, split, index, tokens, offsets))
    totals = {s: {"tokens": sum(e["tokens"] for e in entries if e["split"] == s),
                  "documents": sum(e["documents"] for e in entries if e["split"] == s)} for s in shards.SPLITS}
    shards.write_manifest(out, {
        "format_version": shards.FORMAT_VERSION, "dtype": dtype, "vocab_size": vocab, "eot_id": eot,
        "tokenizer_sha256": tokenizer_sha, "shards": entries, "totals": totals, "inputs": [], "skipped": {},
        "options": {"synthetic": "tools/gpu_check.py", "words": len(words), "seed": seed}})
    return (f"{totals['train']['tokens']:,} train and {totals['val']['tokens']:,} val tokens of {len(words):,} "
            f"made-up words, {what}")


# ---------------------------------------------------------------------------------------------------
# measuring instruments

class PartTimeout(BaseException):
    """A part ran past its limit (SIGALRM). A BaseException: torch.compile catches Exception while it
    compiles, and must not swallow this."""


@contextlib.contextmanager
def time_limit(seconds: float):
    if not hasattr(signal, "SIGALRM"):  # not on Windows: no limit there
        yield
        return

    def expire(signum, frame):
        raise PartTimeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Budget:
    """Runs the parts, each under min(its limit, what is left of the whole budget)."""

    def __init__(self, total_s: float, slack: float):
        self.deadline, self.slack = time.monotonic() + total_s, slack

    def run(self, name: str, fn):
        """(fn's result, None) or (None, why it has none)."""
        left = self.deadline - time.monotonic()
        if left < 1:
            return None, "skipped: the time budget is spent"
        limit = min(LIMITS_S[name.split()[0]] * self.slack, left)
        start = time.monotonic()
        print(f"gpu_check: {name} (at most {limit:.0f} s)", file=sys.stderr, flush=True)
        try:
            with time_limit(limit):
                return fn(), None
        except PartTimeout:
            return None, f"{name}: timed out after {limit:.0f} s"
        except shards.PipelineError as e:
            return None, f"{name}: {e}"
        except Exception as e:  # reported in the table; the traceback goes to stderr for whoever debugs it
            traceback.print_exc()
            return None, f"{name}: failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            print(f"gpu_check: {name} took {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)


SYNC_WARNING = "called a synchronizing CUDA operation"
# train/trainer.py's steps that read the device on purpose, at log, evaluation and checkpoint steps
LOG_POINTS = frozenset({"read_back", "log_train", "run_eval", "evaluate", "save", "summarize"})
COMPILING = ("torch/_dynamo/convert_frame.py", "torch/_inductor/compile_fx.py")


class SyncCounter:
    """Counts host-device synchronisations (``torch.cuda.set_sync_debug_mode("warn")`` makes each one a
    warning) by where they happen: in the training loop between log points (the target is none), at log
    points, while compiling, outside the loop (setup, resume, the end), or in another thread (the loader
    waits there on purpose, off the training thread). Syncs in the loop before its first log point are
    counted apart, as "first interval" (one-time starts, such as the loader's); a sync that recurs every
    step shows between later log points too. ``places`` names where the between-log-point ones are."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.counts: collections.Counter = collections.Counter()
        self.places: collections.Counter = collections.Counter()
        self.logged = False  # a sync at a log point has been seen: the loop is past its first interval

    def __enter__(self):
        if self.enabled:
            self._warnings = warnings.catch_warnings()  # restores the filters and showwarning on exit
            self._warnings.__enter__()
            warnings.filterwarnings("always", message=SYNC_WARNING)
            self._show = warnings.showwarning
            warnings.showwarning = self._seen
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("warn")
        return self

    def __exit__(self, *exc):
        if self.enabled:
            if torch.cuda.is_available():
                torch.cuda.set_sync_debug_mode("default")
            self._warnings.__exit__(*exc)

    def _seen(self, message, category, filename, lineno, file=None, line=None):
        if SYNC_WARNING not in str(message):
            return self._show(message, category, filename, lineno, file, line)
        stack = [(f.filename.replace("\\", "/"), f.name, f.lineno) for f in traceback.extract_stack()[:-1]]
        where = self.classify(stack, threading.current_thread() is threading.main_thread())
        self.logged = self.logged or where == "at log points"
        if where == "between log points" and not self.logged:
            where = "first interval"
        self.counts[where] += 1
        if where == "between log points":
            mine = [f for f in stack if f"{ROOT.as_posix()}/" in f[0]] or stack
            path, name, lineno = mine[-1]
            self.places[f"{Path(path).relative_to(ROOT) if path.startswith(ROOT.as_posix()) else path}:"
                        f"{lineno} ({name})"] += 1

    @staticmethod
    def classify(stack: list[tuple[str, str, int]], main_thread: bool) -> str:
        if not main_thread:
            return "other threads"
        if any(path.endswith(c) for path, _, _ in stack for c in COMPILING):
            return "compiling"
        if not any(name == "fit" and path.endswith("train/trainer.py") for path, name, _ in stack):
            return "outside the loop"
        if any(name in LOG_POINTS and "/train/" in path for path, name, _ in stack):
            return "at log points"
        return "between log points"


def model_graphs() -> int | None:
    """Graphs torch.compile holds for GPT.forward (one per grad mode, train/eval mode and input layout it
    met), or None where this torch has no way to list them."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list
        return len(_debug_get_cache_entry_list(GPT.forward.__code__))
    except (ImportError, AttributeError):
        return None


def graph_breaks() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


def read_records(run: Path) -> list[dict]:
    """RUN/metrics.jsonl's records, skipping any line that is not a JSON object."""
    records = []
    path = run / "metrics.jsonl"
    for line in path.read_text(encoding="utf-8").splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict):
                records.append(record)
    return records


def train_losses(records: list[dict]) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in records if r.get("type") == "train" and "loss" in r and "step" in r}


def wall_tokens_per_s(records: list[dict], after_step: int) -> float:
    """Tokens over wall-clock seconds between the train records at ``after_step`` and the last one."""
    timed = [r for r in records if r.get("type") == "train" and r.get("step", -1) >= after_step
             and "tokens" in r and "elapsed_s" in r]
    if len(timed) < 2 or timed[-1]["elapsed_s"] <= timed[0]["elapsed_s"]:
        return math.nan
    return (timed[-1]["tokens"] - timed[0]["tokens"]) / (timed[-1]["elapsed_s"] - timed[0]["elapsed_s"])


# ---------------------------------------------------------------------------------------------------
# one preset

@dataclass
class Row:
    preset: str
    step_tok_s: float = math.nan
    wall_tok_s: float = math.nan
    mfu: float | None = None
    peak_gib: float | None = None
    bare_tok_s: float = math.nan
    bare_mfu: float | None = None
    opt_share: float = math.nan
    syncs: SyncCounter | None = None
    graphs: int | None = None
    breaks: int | None = None
    resume_delta: float | None = None
    resumed_from: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.step_tok_s / self.bare_tok_s


def overrides_for(args, steps: int) -> list[str]:
    quarter, half = max(1, steps // 4), max(1, steps // 2)
    common = [f"training.max_steps={steps}", f"training.log_interval={quarter}", f"training.eval_interval={half}",
              f"training.checkpoint_interval={half}", f"training.warmup_steps={max(1, steps // 5)}",
              "training.compile=true"]
    device = TINY if args.tiny else ["training.device=cuda", "training.precision=bf16"]
    return common + device + args.overrides


@contextlib.contextmanager
def trainer_output(log: Path, verbose: bool):
    """The trainer's printed output appended to ``log``, or shown with ``verbose``."""
    with open(log, "a", encoding="utf-8") as out, contextlib.redirect_stdout(sys.stdout if verbose else out):
        yield


def check_preset(preset: str, args, data: Path, work: Path, budget: Budget) -> Row:
    row = Row(preset)
    steps = args.steps
    overrides = overrides_for(args, steps)
    cfg = load_config(preset, overrides)
    cfg.model.vocab_size = shards.load_manifest(data)["vocab_size"]
    device = resolve_device(cfg.training.device, Dist())
    precision = resolve_precision(cfg.training.precision, device)
    cuda = device.type == "cuda"
    peak = peak_flops(device, {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32))
    flops = GPT(cfg.model).estimate_flops_per_token()
    run = work / preset
    log = work / f"{preset}.log"
    torch._dynamo.reset()
    from torch._dynamo.utils import counters
    counters.clear()

    def trainer_run():
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        with SyncCounter(cuda) as syncs, trainer_output(log, args.verbose):
            summary = train(load_config(preset, overrides), data, run)
        return summary, syncs

    done, problem = budget.run(f"train {preset}", trainer_run)
    if problem:
        row.problems.append(problem)
        return row
    summary, row.syncs = done
    records = read_records(run)
    quarter = max(1, steps // 4)
    row.step_tok_s = step_tokens_per_s(records, quarter)
    row.wall_tok_s = wall_tokens_per_s(records, quarter)
    row.mfu = flops * row.step_tok_s / peak if peak else None
    row.peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    if isinstance(summary, dict) and summary.get("steps") not in (None, steps):
        row.problems.append(f"train {preset}: stopped after {summary.get('steps')} of {steps} steps "
                            f"({summary.get('stop_reason')})")

    straight = train_losses(records)
    half = max(1, steps // 2)

    def resume_run():
        shutil.rmtree(run / CHECKPOINT_DIR / step_name(steps))
        with trainer_output(log, args.verbose):
            train(load_config(preset, overrides), data, run)
        return train_losses(read_records(run))

    resumed, problem = budget.run(f"resume {preset}", resume_run)
    if problem:
        row.problems.append(problem)
    else:
        after = [s for s in straight if s > half]
        if not after or any(s not in resumed for s in after):
            row.problems.append(f"resume {preset}: the resumed run logged steps {sorted(resumed)}, the "
                                f"uninterrupted one {sorted(straight)}")
        else:
            row.resumed_from = half
            row.resume_delta = max(abs(resumed[s] - straight[s]) / abs(straight[s]) for s in after)
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()

    def bare_runs():
        timed = max(20, steps // 2)
        whole = bare_loop(cfg, device, precision, warmup=5, steps=timed)
        forward_backward = bare_loop(cfg, device, precision, warmup=5, steps=timed, optimizer_step=False)
        return whole, forward_backward

    bare, problem = budget.run(f"bare {preset}", bare_runs)
    if problem:
        row.problems.append(problem)
    else:
        row.bare_tok_s, forward_backward = bare
        row.opt_share = 1 - row.bare_tok_s / forward_backward
        row.bare_mfu = flops * row.bare_tok_s / peak if peak else None
    row.graphs, row.breaks = model_graphs(), graph_breaks()
    return row


# ---------------------------------------------------------------------------------------------------
# the report

def fmt(value, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:{spec}}{suffix}"


def report(rows: list[Row], device: torch.device, data_note: str) -> bool:
    """Print the table and the targets; returns whether every target that applies here is met."""
    cuda = device.type == "cuda"
    name = torch.cuda.get_device_name(device) if cuda else "CPU"
    print(f"\ngpu_check: {name}, torch {torch.__version__}"
          f"{', CUDA ' + str(torch.version.cuda) if cuda else ''}; dataset: {data_note}")
    head = ("preset", "tok/s step", "tok/s wall", "MFU", "peak mem", "vs bare", "opt share", "syncs", "graphs",
            "breaks", "resume")
    widths = (18, 12, 12, 7, 10, 9, 10, 7, 7, 7, 10)
    print("".join(f"{h:>{w}}" if i else f"{h:<{w}}" for i, (h, w) in enumerate(zip(head, widths, strict=True))))
    for r in rows:
        syncs = r.syncs.counts["between log points"] if r.syncs and r.syncs.enabled else None
        cells = (r.preset, fmt(r.step_tok_s, ",.0f"), fmt(r.wall_tok_s, ",.0f"), fmt(r.mfu and 100 * r.mfu, ".1f", "%"),
                 fmt(r.peak_gib, ".2f", " GiB"), fmt(r.ratio, ".3f", "x"), fmt(100 * r.opt_share, ".1f", "%"),
                 fmt(syncs, "d"), fmt(r.graphs, "d"), fmt(r.breaks, "d"), fmt(r.resume_delta, ".1e"))
        print("".join(f"{c:>{w}}" if i else f"{c:<{w}}" for i, (c, w) in enumerate(zip(cells, widths, strict=True))))

    results = []  # (met, applies, line)

    def target(line: str, met: bool | None) -> None:
        results.append(met)
        print(f"  [{'n/a' if met is None else 'ok' if met else 'MISS'}] {line}")

    print("targets:")
    mfu_applies = cuda and gpu_key(name).split()[0] in MFU_TARGET_GPUS
    for r in rows:
        p = r.preset
        target(f"{p}: trainer >= {TARGET_RATIO}x the bare loop: {fmt(r.ratio, '.3f', 'x')}"
               f" ({fmt(r.step_tok_s, ',.0f')} vs {fmt(r.bare_tok_s, ',.0f')} tok/s)"
               + ("" if cuda else "; a GPU figure: CPU cores are shared with the loader thread"),
               (r.ratio >= TARGET_RATIO) if cuda and math.isfinite(r.ratio) else None if not cuda else False)
        if mfu_applies:
            met = r.mfu is not None and r.mfu >= TARGET_MFU
            why = "" if met else f"; {mfu_limit(r)}"
            target(f"{p}: MFU >= {100 * TARGET_MFU:.0f}%: {fmt(r.mfu and 100 * r.mfu, '.1f', '%')}{why}", met)
        else:
            target(f"{p}: MFU >= {100 * TARGET_MFU:.0f}% on an H100: "
                   f"{'not an H100 or H200' if cuda else 'no GPU'} here", None)
        if r.syncs is not None and r.syncs.enabled:
            bad = r.syncs.counts["between log points"]
            places = ", ".join(f"{n} at {where}" for where, n in r.syncs.places.most_common(3))
            others = ", ".join(f"{n} {k}" for k, n in sorted(r.syncs.counts.items()) if k != "between log points")
            target(f"{p}: no host sync between log points: {bad}{' (' + places + ')' if places else ''}"
                   f"{'; elsewhere: ' + others if others else ''}", bad == 0)
        else:
            target(f"{p}: no host sync between log points: {'no run' if cuda else 'CUDA only'}",
                   False if cuda else None)
        target(f"{p}: 2 graphs for GPT.forward (training, evaluation), no graph break: "
               f"{fmt(r.graphs, 'd')} graphs, {fmt(r.breaks, 'd')} breaks", r.graphs == 2 and r.breaks == 0)
        tolerance = RESUME_TOLERANCE if cuda else 0.0
        target(f"{p}: resumed at step {fmt(r.resumed_from, 'd')}, losses as the uninterrupted run's "
               f"({'exactly' if not cuda else f'rel. difference <= {tolerance:.0e}'}): "
               f"{fmt(r.resume_delta, '.1e')}", r.resume_delta is not None and r.resume_delta <= tolerance)
        for problem in r.problems:
            target(problem, False)
    return all(met is not False for met in results)


def mfu_limit(r: Row) -> str:
    """What holds MFU below the target, from the bare loop of the same model."""
    if r.bare_mfu is None:
        return "no bare-loop figure to compare"
    opt = f"the optimizer step takes {fmt(100 * r.opt_share, '.0f', '%')} of the bare step"
    if r.bare_mfu < TARGET_MFU:
        return (f"the bare loop reaches {100 * r.bare_mfu:.1f}% too: the model's own kernels at this size (d_model "
                f"640: small matmuls, attention, the vocabulary's head and loss) bound it; {opt}")
    return f"the bare loop reaches {100 * r.bare_mfu:.1f}%: the trainer loses the difference; {opt}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU, tiny models and dataset: the code paths, in minutes")
    p.add_argument("--presets", default=",".join(PRESETS), help="comma-separated (default: %(default)s)")
    p.add_argument("--steps", type=int, default=None, help="steps per run (default 100; 20 with --tiny)")
    p.add_argument("--data", type=Path, help="an existing dataset directory instead of the synthetic one")
    p.add_argument("--vocab-size", type=int, default=None, help="of the synthetic dataset (32000; 1000 with --tiny)")
    p.add_argument("--work", type=Path, help="keep the dataset, runs and logs here (default: a temporary directory)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                   help="config override for every preset")
    p.add_argument("--budget-s", type=float, help=f"time for the whole check (default {BUDGET_S}; {TINY_BUDGET_S} "
                                                  f"with --tiny)")
    p.add_argument("--slack", type=float, help=f"multiply each part's time limit, for a slower machine (default 1; "
                                               f"{TINY_SLACK} with --tiny)")
    p.add_argument("--verbose", action="store_true", help="show the trainer's own output (default: PRESET.log)")
    args = p.parse_args(argv)
    args.steps = args.steps or (20 if args.tiny else 100)
    if args.steps < 4:
        p.error("--steps must be at least 4 (a log every quarter, a checkpoint at the half)")
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU is visible; this check is for a GPU. Run with --tiny to check its code paths "
              "on CPU", file=sys.stderr)
        return 1
    torch._logging.set_logs(recompiles=True, graph_breaks=True)  # their reasons, on stderr, as they happen
    budget = Budget(args.budget_s or (TINY_BUDGET_S if args.tiny else BUDGET_S),
                    args.slack or (TINY_SLACK if args.tiny else 1.0))
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        work.mkdir(parents=True, exist_ok=True)
        data, data_note = args.data, f"{args.data}"
        if data is None:
            data = work / "data"
            shutil.rmtree(data, ignore_errors=True)
            sizes = (200_000, 20_000, 3_000) if args.tiny else (2_500_000, 300_000, 60_000)
            vocab = args.vocab_size or (1000 if args.tiny else 32000)
            data_note, problem = budget.run("dataset", lambda: synthesize_dataset(data, vocab, *sizes))
            if problem:
                print(f"gpu_check: {problem}", file=sys.stderr)
                return 1
        rows = [check_preset(preset, args, data, work, budget) for preset in args.presets.split(",") if preset]
        device = torch.device("cuda" if not args.tiny else "cpu")
        met = report(rows, device, data_note)
        if args.work:
            print(f"runs and logs: {work}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
