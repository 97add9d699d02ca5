"""The plan: what a build reads, decided once, before any document is read.

Resolve the inputs -> **plan** -> read -> encode -> write. The plan is computed deterministically from
the input files (their names and sizes) and the options, saved as ``OUT/plan.json``, and read by
everything that needs to know what to read: the tokenizer sample, the main pass, ``--part I/N``,
resume, the manifest and the summary.

* **Sources.** An input's source is its file name without the extension and the trailing shard
  number (``cc_en_head-0123.json.gz`` -> ``cc_en_head``); a name that is only a number takes its
  folder's name (``CC-MAIN-2024-10/000_00000.parquet`` -> ``CC-MAIN-2024-10``). ``--source-pattern``
  (a regular expression with one group, searched in the path or URL) overrides the rule.
* **Sizes** come from the file system or an HTTP ``HEAD``: no body is fetched to plan.
* **Modes.** Without ``--max-tokens`` (or with ``--in-order``) every input is read in the order given,
  as a plain build always has (``--in-order`` stops at ``--max-tokens``; so does a single source of
  unknown size, such as one ``hf:`` dataset). With ``--max-tokens`` each
  source gets a quota in tokens: its share of the whole input (``proportional``) or the share ``--mix``
  gives it (``mix``). Within a source, files are taken in a seeded order; whole files while the
  source's estimated tokens stay within its quota, then one file with a token budget (the rest of
  the quota), read until the document that reaches the budget. The estimates are the files' sizes
  times the source's tokens per byte, measured with the build's tokenizer on the first
  ``MEASURE_BYTES`` of each source. Because every budget follows from sizes and that measurement
  only, each ``--part I/N`` (a stride of the same read list) reads exactly what a one-machine build
  reads.
* **The tokenizer sample** is drawn across the sources in their shares (by estimated tokens, or the
  mix), from the first files of each source in its seeded order: as many as its quota needs by the
  sizes alone (those the main pass reads first), at most ``SAMPLE_FILES``.

``--mix``: ``SOURCE=W`` pairs, each ``W`` the share of ``--max-tokens`` that source gets. The shares
must add up to at most 1; what they leave (``1 - sum``) goes to the unnamed sources in proportion to
their size, as in the proportional plan, and when every source is named the shares are scaled to add
up to 1. ``SOURCE=0`` leaves a source out. A source smaller than its quota is read whole, and the
build then ends with fewer tokens than ``--max-tokens`` (the plan says so).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from preprocess import http, readers
from preprocess.errors import BadInputFile, CorruptStream, DownloadFailed
from preprocess.progress import aligned
from shards import PipelineError

PLAN_NAME = "plan.json"
PLAN_VERSION = 1
# Bytes on disk of each source read to measure its tokens per byte: MEASURE_SHARE of the source,
# at least MEASURE_MIN and at most MEASURE_BYTES (4 MB of a Dolma source: a few seconds in all).
MEASURE_BYTES = 4 << 20
MEASURE_MIN = 16 << 10
MEASURE_SHARE = 0.01
SAMPLE_FILES = 8  # files of each source the tokenizer sample is spread over at most (more when they are short)
# Bytes of document text per byte on disk assumed to estimate what the tokenizer sample reads (gzip and
# zstd shrink Dolma-style JSON about 3x; JSON Lines carry ~15% of fields besides the text).
TEXT_PER_DISK_BYTE = {"jsonl": 0.87, "jsonl.gz": 3.0, "jsonl.zst": 3.2, "parquet": 2.5, "txt": 1.0}
# The share of a file's expected sample bytes on disk the sample's first range asks for: a little less
# than expected, since a range longer than what is read is fetched all the same, and past it the ranges
# grow again from 16 KiB.
SAMPLE_HINT_SHARE = 0.8
# What a cut file is expected to be read past its cut, in bytes on disk: the last range request (they
# double from 16 KiB past 80% of the expected cut, preprocess/fetch.py and read_path.py) and the one
# batch read ahead of the decision; an allowance of 16 KiB plus a tenth of the cut's bytes.
READ_AHEAD = 16 << 10
READ_AHEAD_SHARE = 0.1
# Tokens per byte on disk assumed before a source is measured (a 32k byte-level BPE on English web text:
# about 4.2 bytes of text per token; Dolma-style JSON adds ~15%; gzip and zstd shrink it about 3.5x).
PRIOR_TOKENS_PER_BYTE = {"jsonl": 0.21, "jsonl.gz": 0.72, "jsonl.zst": 0.76, "parquet": 0.6, "txt": 0.24}

_SHARD_NUMBER = re.compile(r"[-_.]?\d+$")


class PlanError(PipelineError):
    """Options or inputs that cannot be planned; the message says what to do."""


def _file_name(path: str) -> tuple[str, str]:
    """(the name without extension, its folder's name) of a path or URL."""
    if readers.is_url(path):
        path = path.split("?", 1)[0].split("#", 1)[0]
    parts = path.replace("\\", "/").rstrip("/").split("/")
    name, folder = parts[-1], (parts[-2] if len(parts) > 1 else "")
    lower = name.lower()
    for suffix in readers.KNOWN_SUFFIXES:
        if lower.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name, folder


def source_of(path: str, pattern: re.Pattern | None = None) -> str:
    """The source an input belongs to: its file name without the extension and the shard number
    (``cc_en_head-0123.json.gz`` -> ``cc_en_head``), or its folder's name when the name is only a number;
    with ``pattern`` (``--source-pattern``) the first group of its match in the path."""
    if path.startswith(readers.HF_PREFIX):
        return path
    if pattern is not None:
        m = pattern.search(path)
        if m is None or not m.group(1):
            raise PlanError(f"--source-pattern {pattern.pattern!r} does not match {path} (or its group is empty); "
                            f"every input must match it")
        return m.group(1)
    name, folder = _file_name(path)
    stem = _SHARD_NUMBER.sub("", name)
    if not stem.strip("-_.0123456789"):
        return folder or name
    return stem


def compile_source_pattern(text: str | None) -> re.Pattern | None:
    if text is None:
        return None
    try:
        pattern = re.compile(text)
    except re.error as e:
        raise PlanError(f"--source-pattern {text!r} is not a regular expression ({e})") from None
    if pattern.groups != 1:
        raise PlanError(f"--source-pattern {text!r} needs exactly one group, the source's name, e.g. "
                        f"'([a-z_]+)-\\d+\\.json\\.gz$'; it has {pattern.groups}")
    return pattern


def parse_mix(text: str | None) -> dict[str, float] | None:
    """``cc_en_head=0.5,c4=0.2`` -> {"cc_en_head": 0.5, "c4": 0.2}."""
    if text is None:
        return None
    mix: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        name, eq, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not eq or not name.strip() or not weight >= 0 or weight == float("inf"):
            raise PlanError(f"--mix {text!r}: {item.strip()!r} is not SOURCE=SHARE with a share >= 0, "
                            f"e.g. --mix cc_en_head=0.5,c4=0.2")
        if name.strip() in mix:
            raise PlanError(f"--mix {text!r} names {name.strip()!r} twice")
        mix[name.strip()] = weight
    if not mix:
        raise PlanError(f"--mix {text!r} names no source; write SOURCE=SHARE pairs, e.g. cc_en_head=0.5,c4=0.2")
    if sum(mix.values()) > 1 + 1e-9:
        raise PlanError(f"--mix shares add up to {sum(mix.values()):g}; they are shares of --max-tokens, so at "
                        f"most 1 (what they leave goes to the unnamed sources)")
    return mix


# ---------------------------------------------------------------------------------------------------
# sizes

def with_sizes(inputs: list[readers.InputFile], required: bool, skip_bad: bool,
               log: Callable[[str], None], retry: http.Retry | None = None,
               ) -> tuple[list[readers.InputFile], dict[int, str]]:
    """The inputs with the size of every URL (HEAD requests, many at once) filled in, and the URLs the
    server refused (404, 403...: index -> error) when ``skip_bad`` (else the first such error is raised).
    A URL that did not answer within the network patience is never passed over: its DownloadFailed is
    raised, and the next run asks again.

    ``required``: a URL that opens but whose size the server does not say is an error (a sampled
    plan needs every size); otherwise its size stays None."""
    urls = [i for i, x in enumerate(inputs) if readers.is_url(x.path) and x.size is None]
    if not urls:
        return inputs, {}
    sizes = http.head_sizes([inputs[i].path for i in urls], retry=retry)
    failed = [r for r in sizes if isinstance(r, DownloadFailed)]
    if failed:
        raise DownloadFailed(failed[0].path, failed[0].problem + (f" ({len(failed) - 1} more URLs failed so)"
                                                                  if len(failed) > 1 else ""),
                             "the plan needs every file's size: run the same command again when the server "
                             "answers (--network-patience waits longer)")
    out, bad = list(inputs), {}
    for i, result in zip(urls, sizes, strict=True):
        if isinstance(result, BadInputFile):
            if not skip_bad:
                raise result
            bad[i] = result.problem
            log(f"--skip-bad-files: {inputs[i].path}: {result.problem}; recorded as bad, not planned")
            continue
        if result is None and required:
            raise PlanError(f"{inputs[i].path}: the server does not say how large the file is (no Content-Length), "
                            f"so a sampled build cannot plan it; download the files and pass the local paths, "
                            f"or use --in-order")
        out[i] = readers.InputFile(inputs[i].path, inputs[i].kind, result)
    return out, bad


# ---------------------------------------------------------------------------------------------------
# the plan

@dataclass
class Source:
    name: str
    files: list[int]                  # input indices, in the seeded order the source is read in
    bytes: int | None                 # on disk, all files (None when a size is unknown)
    tokens_per_byte: float | None = None   # measured (None until measured; the prior is used before)
    measured_bytes: int = 0
    est_tokens: int | None = None     # bytes * tokens per byte
    share: float | None = None        # of the whole input's estimated tokens
    target: float | None = None       # share of the output the plan aims at
    quota: int | None = None          # tokens this source contributes (None: all it has)


@dataclass
class Plan:
    mode: str                         # whole, in_order, proportional or mix (see the module docstring)
    seed: int
    max_tokens: int | None
    sample_bytes: int
    inputs: list[list]                # [path, kind, size] of every resolved input, in the order given
    sources: list[Source]
    mix: dict[str, float] | None = None
    source_pattern: str | None = None
    bad: dict[int, str] = field(default_factory=dict)  # inputs that could not be sized: index -> error
    sample: list[list] = field(default_factory=list)   # [source, bytes of text, files] of the tokenizer sample
    reads: list[list] | None = None   # [input index, token budget or None], in read order; None until measured
    version: int = PLAN_VERSION

    # -- building ------------------------------------------------------------------------------------

    @classmethod
    def make(cls, inputs: list[readers.InputFile], *, max_tokens: int | None, in_order: bool = False,
             mix: dict[str, float] | None = None, source_pattern: str | None = None, seed: int = 0,
             sample_bytes: int, bad: dict[int, str] | None = None) -> Plan:
        """The plan's fixed part: sources, their seeded file orders, the mode (and, for a plain or
        in-order build, the reads). Quotas wait for :meth:`set_rates`."""
        if mix is not None and max_tokens is None:
            raise PlanError("--mix needs --max-tokens: the shares are shares of it")
        if mix is not None and in_order:
            raise PlanError("--mix and --in-order exclude each other: --in-order reads the inputs in the order given")
        mode = "whole" if max_tokens is None else "in_order" if in_order else "mix" if mix else "proportional"
        pattern = compile_source_pattern(source_pattern)
        bad = dict(bad or {})
        by_name: dict[str, list[int]] = {}
        for i, x in enumerate(inputs):
            if i not in bad:
                by_name.setdefault(source_of(x.path, pattern), []).append(i)
        sources = []
        for name, files in by_name.items():
            order = list(files)
            # seeded with bytes: a file name that is not UTF-8 (its undecodable bytes kept as surrogates by
            # the file system layer) seeds as its bytes, and every other name exactly as its str would
            random.Random(f"{seed}:{name}".encode("utf-8", "surrogateescape")).shuffle(order)
            sizes = [inputs[i].size for i in files]
            sources.append(Source(name, order, None if None in sizes else sum(sizes)))
        if mix is not None:
            unknown = sorted(set(mix) - set(by_name))
            if unknown:
                raise PlanError(f"--mix names {', '.join(unknown)}, which is not a source of these inputs; the "
                                f"sources are: {', '.join(by_name)}")
        plan = cls(mode, seed, max_tokens, sample_bytes, [[x.path, x.kind, x.size] for x in inputs], sources,
                   mix, source_pattern, bad)
        if mode == "proportional" and len(sources) == 1 and sources[0].bytes is None:
            # one source of unknown size (an hf: dataset): its share is all of it, read in order
            mode = plan.mode = "in_order"
        if mode in ("proportional", "mix"):
            unsized = [inputs[i].path for s in sources if s.bytes is None for i in s.files
                       if inputs[i].size is None]
            if unsized:
                raise PlanError(f"a sampled build (--max-tokens) plans by file sizes, and {unsized[0]} has none "
                                f"(hf: datasets have none); use --in-order to read the inputs in order until "
                                f"--max-tokens")
        else:
            plan.reads = [[i, None] for i in range(len(inputs)) if i not in bad]
        plan._estimate({})
        plan.sample = plan._sample()
        return plan

    @property
    def sampled(self) -> bool:
        return self.mode in ("proportional", "mix")

    def _size(self, i: int) -> int | None:
        return self.inputs[i][2]

    def _rate(self, s: Source) -> float | None:
        """Measured tokens per byte, else the prior of its files' kind."""
        if s.tokens_per_byte is not None:
            return s.tokens_per_byte
        return PRIOR_TOKENS_PER_BYTE.get(self.inputs[s.files[0]][1])

    def _estimate(self, rates: dict[str, tuple[float, int]]) -> None:
        """Estimated tokens, shares, targets and quotas from ``rates`` (source -> (tokens per byte,
        bytes measured)); sources not in it keep the prior."""
        for s in self.sources:
            if s.name in rates:
                s.tokens_per_byte, s.measured_bytes = rates[s.name]
            rate = self._rate(s)
            s.est_tokens = None if s.bytes is None or rate is None else round(s.bytes * rate)
        known = [s for s in self.sources if s.est_tokens is not None]
        total = sum(s.est_tokens for s in known)
        for s in self.sources:
            s.share = s.est_tokens / total if s.est_tokens is not None and total else None
            s.target, s.quota = s.share, None
        if self.mode == "mix":
            named = sum(self.mix.values())
            rest = [s for s in self.sources if s.name not in self.mix]
            rest_share = sum(s.share or 0.0 for s in rest)
            scale = 1.0 / named if not rest and named > 0 else 1.0
            for s in self.sources:
                if s.name in self.mix:
                    s.target = self.mix[s.name] * scale
                else:
                    s.target = (1.0 - named) * (s.share or 0.0) / rest_share if rest_share else 0.0
        if self.sampled and total:
            for s in self.sources:
                s.quota = min(s.est_tokens, round(self.max_tokens * s.target))

    def set_rates(self, rates: dict[str, tuple[float, int]]) -> None:
        """Set the measured tokens per byte of every source; the quotas and the reads follow."""
        self._estimate(rates)
        if self.sampled:
            self.reads = self._choose_reads()

    def _choose_reads(self) -> list[list]:
        """A sampled plan's reads by the current estimates (measured rates, or before the measurement the
        priors: what the plan expects to read before any body is fetched)."""
        chosen = []  # (position key, source rank, input index, budget)
        for rank, s in enumerate(self.sources):
            rate, used, quota = self._rate(s), 0.0, s.quota or 0
            for i in s.files:
                if used >= quota:
                    break
                est = self._size(i) * rate
                budget = None if used + est <= quota else max(1, round(quota - used))
                # order the reads by how far into its source's quota each lies: the sources are
                # interleaved through the build (and through every --part), not read one after another
                key = (used + min(est, quota - used) / 2) / max(quota, 1)
                chosen.append((key, rank, i, budget))
                used += est
        chosen.sort()
        return [[i, budget] for _, _, i, budget in chosen]

    # -- reading the plan ------------------------------------------------------------------------------

    def part_reads(self, part: tuple[int, int] | None) -> list[list]:
        """The reads of ``--part I/N``: every N-th read from the I-th (all of them without a part)."""
        if part is None:
            return list(self.reads)
        i, n = part
        return self.reads[i - 1::n]

    def source_of_input(self) -> dict[int, str]:
        return {i: s.name for s in self.sources for i in s.files}

    # -- the download --------------------------------------------------------------------------------

    def expected_reads(self, part: tuple[int, int] | None = None) -> dict[int, int]:
        """Input -> the bytes on disk the main pass is expected to read of it: a whole file's size, a
        cut file's budget over its source's tokens per byte (measured, or the prior before that)."""
        if self.reads is not None:
            reads = self.part_reads(part)
        elif self.sampled:
            chosen = self._choose_reads()
            reads = chosen if part is None else chosen[part[0] - 1::part[1]]
        else:
            return {}
        rate = {i: self._rate(s) for s in self.sources for i in s.files}
        out, tokens = {}, 0.0
        for i, budget in reads:
            size = self._size(i)
            if size is None or rate.get(i) is None:
                continue
            if self.mode == "in_order":  # every input in order until --max-tokens in all
                if tokens >= self.max_tokens:
                    break
                out[i] = min(size, math.ceil((self.max_tokens - tokens) / rate[i]))
                tokens += size * rate[i]
            else:
                out[i] = size if budget is None else min(size, math.ceil(budget / rate[i]))
        return out

    def expected_download(self, sample: bool, part: tuple[int, int] | None = None) -> dict:
        """What a build of this plan is expected to fetch of its URLs, in bytes on disk, before any body
        is fetched: ``kept`` (what the main pass reads: whole files, and each cut file up to its budget),
        ``overhead`` (what the tokenizer sample, when ``sample``, and the measurement read beyond that,
        plus the allowance READ_AHEAD + READ_AHEAD_SHARE of each cut's bytes for what is read past it), and
        ``verify_cut_files`` (the rest of each cut compressed file, read with --verify-cut-files to check
        its gzip member's CRC; local files included: that is bytes read, not downloaded) over
        ``cut_files`` files."""
        main = self.expected_reads(part)
        early: dict[int, int] = {}  # input -> bytes the sample and the measurement read of its start

        def note(i: int, n: float) -> None:
            early[i] = max(early.get(i, 0), int(min(self._size(i) or 0, n)))
        if sample:
            for s, budget, spread in self.sample_budgets():
                for i in s.files[:spread]:  # an equal part of the source's text from each of its first files
                    note(i, budget / spread / TEXT_PER_DISK_BYTE.get(self.inputs[i][1], 1.0))
        if self.sampled:
            for s in self.sources:
                used, limit = 0, measure_limit(s)
                for i in s.files:
                    if used >= limit:
                        break
                    note(i, limit - used)
                    used += min(self._size(i) or 0, limit - used)
        is_url = {i: readers.is_url(p) for i, (p, _, _) in enumerate(self.inputs)}
        kept = sum(n for i, n in main.items() if is_url[i])
        overhead = sum(max(0, n - main.get(i, 0)) for i, n in early.items() if is_url[i])
        cut = [i for i, n in main.items() if n < (self._size(i) or 0)]
        overhead += sum(min(READ_AHEAD + int(READ_AHEAD_SHARE * main[i]), self._size(i) - main[i])
                        for i in cut if is_url[i])
        checked = [i for i in cut if self.inputs[i][1] in ("jsonl.gz", "jsonl.zst")]
        return {"kept": kept, "overhead": overhead, "verify_cut_files": sum(self._size(i) - main[i] for i in checked),
                "cut_files": len(checked), "urls": any(is_url.values())}

    def _sample(self) -> list[list]:
        """[source, bytes of text, files to spread them over] of the tokenizer sample: the sample size
        split by the sources' targets (their shares of the output, or of the input for a plain build),
        each over the files its quota needs by the sizes alone (at most SAMPLE_FILES)."""
        weights = [(s, s.target if s.target is not None else 0.0) for s in self.sources]
        if not any(w for _, w in weights):  # sizes unknown: equal shares
            weights = [(s, 1.0) for s in self.sources]
        total = sum(w for _, w in weights)
        out = []
        for s, w in weights:
            if w <= 0:
                continue
            n = SAMPLE_FILES
            if self.sampled and s.quota is not None:
                rate, used, n = self._rate(s), 0.0, 0
                while n < len(s.files) and used < s.quota:
                    used += self._size(s.files[n]) * rate
                    n += 1
            out.append([s.name, int(self.sample_bytes * w / total), max(1, min(n, SAMPLE_FILES))])
        return out

    def sample_inputs(self) -> set[int]:
        """The inputs the tokenizer sample reads first (it goes further in a source whose files are short)."""
        return {i for s, _, n in self.sample_budgets() for i in s.files[:n]}

    def sample_budgets(self) -> list[tuple[Source, int, int]]:
        """(source, bytes of text, files to spread them over) of the tokenizer sample."""
        by_name = {s.name: s for s in self.sources}
        return [(by_name[name], budget, n) for name, budget, n in self.sample]

    # -- saving --------------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        d = asdict(self)
        d["bad"] = {str(k): v for k, v in self.bad.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        d = dict(d)
        if d.get("version") != PLAN_VERSION:
            raise PlanError(f"{PLAN_NAME} was written by another version of the builder; use --overwrite to "
                            f"start the build over")
        d["sources"] = [Source(**s) for s in d["sources"]]
        d["bad"] = {int(k): v for k, v in d["bad"].items()}
        return cls(**d)

    def fixed(self) -> dict:
        """What the plan is computed from and decides before any document is read (mode, inputs with
        their sizes, sources and their file orders): a resumed build must find the same."""
        return {"mode": self.mode, "seed": self.seed, "max_tokens": self.max_tokens, "mix": self.mix,
                "source_pattern": self.source_pattern, "inputs": self.inputs, "sample_bytes": self.sample_bytes,
                "sources": [[s.name, s.files] for s in self.sources], "bad": sorted(self.bad)}

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: Plan) -> list[str]:
        """How ``other`` (computed now) differs from this plan's fixed part, for a person."""
        a, b = self.fixed(), other.fixed()
        for d in (a, b):  # data/x and /home/me/data/x are one file
            d["inputs"] = [[same_file(p), k, s] for p, k, s in d["inputs"]]
        out = []
        then = {(p, k, s) for p, k, s in a["inputs"]}
        now = {(p, k, s) for p, k, s in b["inputs"]}
        if then != now:
            # a URL that could not be sized has no size (None): order by path, then size
            example = min(then ^ now, key=lambda x: (x[0], x[1], -1 if x[2] is None else x[2]))
            out.append(f"the input files differ ({len(now - then)} new or changed, {len(then - now)} gone or "
                       f"changed, e.g. {example[0]} " + (f"of {example[2]} bytes)" if example[2] is not None
                                                         else "(not sized: it could not be opened then)"))
        elif a["inputs"] != b["inputs"]:
            out.append("the input files are the same but in another order")
        for key in ("mode", "seed", "max_tokens", "mix", "source_pattern"):
            if a[key] != b[key]:
                out.append(f"{key} {a[key]!r} then, {b[key]!r} now")
        if not out and a != b:
            out.append("the sources or their files differ")
        return out


def same_file(path: str) -> str:
    """A local path made absolute; URLs and hf: specs as they are."""
    return path if readers.is_url(path) or path.startswith(readers.HF_PREFIX) else os.path.realpath(path)


def save(out: Path, plan: Plan) -> None:
    import shards

    shards.write_json_atomic(Path(out) / PLAN_NAME, plan.to_dict())


def load(out: Path) -> Plan | None:
    path = Path(out) / PLAN_NAME
    if not path.exists():
        return None
    try:
        return Plan.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise PlanError(f"{path} is unreadable ({e}); use --overwrite to start the build over") from None


# ---------------------------------------------------------------------------------------------------
# reading what the plan says: the tokenizer sample and the measurement

def sample_texts(plan: Plan, inputs: list[readers.InputFile], text_field: str, txt_blocks: bool,
                 repair: Callable[[str], str], fetch=None) -> Iterator[str]:
    """The tokenizer sample: each source's share of ``plan.sample_bytes`` of document text (UTF-8
    bytes, repaired), spread over the first files of its seeded order that the plan names (what a
    short file cannot give passes on to the next one), sources in plan order, the last document of
    each cut. A bad file gives what it gave and the sample goes on: the main pass reports it. A URL
    that does not answer stops the sample (DownloadFailed): a tokenizer trained on less would differ.
    ``fetch``: the build's Fetcher, whose spool the main pass continues."""
    for source, budget, spread in plan.sample_budgets():
        files = source.files
        taken = 0
        for n, i in enumerate(files):
            if taken >= budget:
                break
            # an equal part of what is left for each of the files still to come (at least one more)
            share = (budget - taken) // max(1, spread - n) if n < spread else budget - taken
            got = 0
            # how far on disk the share is expected to lie: the ranges go straight to a little before it
            # (the fetcher's hint), so that the sample does not ask for up to twice what it reads
            hint = int(SAMPLE_HINT_SHARE * share / TEXT_PER_DISK_BYTE.get(inputs[i].kind, 1.0))
            try:
                for item in readers.read_records(inputs[i], text_field, txt_blocks, fetch=fetch, come_back=True,
                                                 hint=hint):
                    if type(item) is not readers.Record:
                        continue
                    text = repair(item.text)
                    size = len(text.encode("utf-8"))
                    if got + size >= share:
                        cut = text.encode("utf-8")[: share - got].decode("utf-8", "ignore")
                        if cut:
                            yield cut
                        got = share
                        break
                    got += size
                    yield text
            except BadInputFile:
                pass
            taken += got


def measure_limit(s: Source) -> int:
    """Bytes on disk of a source that its measurement reads: MEASURE_SHARE of it, within MEASURE_MIN
    and MEASURE_BYTES."""
    return min(MEASURE_BYTES, max(MEASURE_MIN, int(MEASURE_SHARE * (s.bytes or 0))))


def measure(plan: Plan, inputs: list[readers.InputFile], encode: Callable[[list[str]], list[int]],
            text_field: str, txt_blocks: bool, skipped: dict[int, str] | None = None, fetch=None,
            ) -> dict[str, tuple[float, int]]:
    """Tokens per byte on disk of every source, on its first bytes in its seeded order (whole files
    while they fit, then the start of one more; MEASURE_SHARE of the source, within MEASURE_MIN and
    MEASURE_BYTES): source -> (tokens per byte, bytes measured).

    ``encode(texts)`` gives each text's token count; a separator per document is counted, as the
    shards hold one. A file that cannot be read is passed over (and noted in ``skipped``); a URL that
    does not answer stops the measurement (DownloadFailed). ``fetch``: the build's Fetcher."""
    rates = {}
    for s in plan.sources:
        tokens = used = 0.0
        limit = measure_limit(s)
        for i in s.files:
            if used >= limit:
                break
            want = min(inputs[i].size, int(limit - used))
            try:
                t, b = _measure_file(inputs[i], want, encode, text_field, txt_blocks, fetch)
            except BadInputFile as e:
                if skipped is not None:
                    skipped[i] = e.problem
                continue
            tokens += t
            used += b
        if used > 0:
            rates[s.name] = (tokens / used, int(used))
    return rates


def _measure_file(inp: readers.InputFile, want: int, encode, text_field: str, txt_blocks: bool, fetch=None,
                  ) -> tuple[float, int]:
    """(estimated tokens, bytes) of the first ``want`` bytes of ``inp`` (all of it when ``want`` is its size)."""
    if want >= inp.size or inp.kind not in readers.LINE_KINDS:
        if inp.kind == "parquet" and want < inp.size:
            return _measure_parquet(inp, want, encode, text_field, fetch)
        texts = [x.text for x in readers.read_records(inp, text_field, txt_blocks, fetch=fetch, come_back=True)
                 if type(x) is readers.Record]
        return float(sum(encode(texts)) + len(texts)), inp.size
    # JSON Lines: decompress the first `want` bytes on disk, parse the complete lines and scale their
    # tokens by the decompressed bytes the part-line after them adds
    raw = readers.head_bytes(inp, want, fetch)
    out = bytearray()
    try:
        for piece in readers.decompressed(iter([raw]), inp.kind):
            out += piece
    except CorruptStream:
        pass  # the cut end of the stream: what came before it is all there is to measure
    cut = out.rfind(b"\n") + 1
    if cut == 0:  # not one whole line in `want` bytes: measure the file whole instead
        return _measure_file(inp, inp.size, encode, text_field, txt_blocks, fetch)
    items = readers.parse_lines(bytes(out[:cut]), 0, text_field)
    texts = [x.text for x in items if type(x) is readers.Record]
    tokens = sum(encode(texts)) + len(texts)
    return tokens * len(out) / cut, want


def _measure_parquet(inp, want: int, encode, text_field: str, fetch=None) -> tuple[float, int]:
    """Parquet: the tokens of its first rows, against the share of the file's bytes those rows are."""
    pf, _, _ = readers.open_parquet(inp, text_field, fetch)
    rows_total = max(pf.metadata.num_rows, 1)
    texts, rows = [], 0
    for item in readers.read_records(inp, text_field, fetch=fetch):
        rows += 1
        if type(item) is readers.Record:
            texts.append(item.text)
        if rows * inp.size >= want * rows_total:
            break
    return float(sum(encode(texts)) + len(texts)), max(1, inp.size * rows // rows_total)


# ---------------------------------------------------------------------------------------------------
# the table a person reads

def _count(n: float | None) -> str:
    if n is None:
        return "?"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return f"{n:.0f}"


def _bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for div, unit in ((1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if abs(n) >= div:
            return f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def describe(plan: Plan, part: tuple[int, int] | None = None, sample: bool = True) -> str:
    """The per-source table of a plan: files, bytes, estimated tokens, share of the input, the target
    share of the output, the quota and the files to read; then what it is expected to download
    (``sample``: the build trains its tokenizer, so the sample's reads count)."""
    reads = plan.reads
    to_read: dict[int, int] = {}
    if reads is not None:
        for i, _ in (plan.part_reads(part) if part else reads):
            to_read[i] = to_read.get(i, 0) + 1
    owner = plan.source_of_input()
    per_source = {s.name: 0 for s in plan.sources}
    for i in to_read:
        per_source[owner[i]] += 1
    head = {"whole": "every input, in the order given",
            "in_order": f"the inputs in the order given until {plan.max_tokens:,} tokens (--in-order)",
            "proportional": f"a sample of {_count(plan.max_tokens)} tokens, each source its share of the input",
            "mix": f"a sample of {_count(plan.max_tokens)} tokens in the shares of --mix"}[plan.mode]
    lines = [f"plan: {head}; {len(plan.inputs):,} input files in {len(plan.sources):,} sources, seed {plan.seed}"
             + (f", part {part[0]}/{part[1]}" if part else "")]
    rows = [("source", "files", "bytes", "est. tokens", "input share", "target", "quota", "to read")]
    for s in plan.sources:
        rows.append((s.name, f"{len(s.files):,}", _bytes(s.bytes),
                     ("" if s.tokens_per_byte is not None else "~") + _count(s.est_tokens), _pct(s.share),
                     _pct(s.target) if plan.sampled else "-", _count(s.quota) if plan.sampled else "all",
                     f"{per_source[s.name]:,}" if reads is not None else "?"))
    known = [s.est_tokens for s in plan.sources if s.est_tokens is not None]
    quota = sum(s.quota for s in plan.sources if s.quota is not None) if plan.sampled else None
    rows.append(("total", f"{sum(len(s.files) for s in plan.sources):,}",
                 _bytes(sum(s.bytes or 0 for s in plan.sources)), _count(sum(known) if known else None),
                 "100%", "100%" if plan.sampled else "-", _count(quota) if plan.sampled else "all",
                 f"{len(to_read):,}" if reads is not None else "?"))
    lines += aligned(rows)
    if any(s.tokens_per_byte is None and s.est_tokens is not None for s in plan.sources):
        priors = sorted({f"{PRIOR_TOKENS_PER_BYTE[x[1]]} for {x[1]}" for x in plan.inputs
                         if x[1] in PRIOR_TOKENS_PER_BYTE})
        lines.append(f"  ~ assumed tokens per byte on disk ({', '.join(priors)}); the build measures each source "
                     f"on its first bytes (up to {MEASURE_BYTES >> 20} MB) with its tokenizer and sets the quotas "
                     f"from that")
    short = [s for s in plan.sources if plan.sampled and s.quota is not None and s.est_tokens is not None
             and s.quota < round(plan.max_tokens * s.target)]
    for s in short:
        lines.append(f"  {s.name} holds about {_count(s.est_tokens)} tokens, less than its target of "
                     f"{_count(plan.max_tokens * s.target)}: it is read whole, and the build ends with fewer "
                     f"than --max-tokens")
    if plan.bad:
        lines.append(f"  {len(plan.bad)} input files could not be opened and are not planned "
                     f"(--skip-bad-files), e.g. {plan.inputs[min(plan.bad)][0]}: {plan.bad[min(plan.bad)]}")
    lines += download_lines(plan.expected_download(sample, part))
    return "\n".join(lines)


def download_lines(d: dict) -> list[str]:
    """What :meth:`Plan.expected_download` says, for a person."""
    lines = []
    if d["urls"]:
        lines.append(f"  download: about {_bytes(d['kept'] + d['overhead'])} expected from the URLs: "
                     f"{_bytes(d['kept'])} read for what is kept, {_bytes(d['overhead'])} more (the tokenizer "
                     f"sample and the measurement past that, and the read-ahead at each cut)")
    if d["cut_files"]:
        lines.append(f"  {d['cut_files']} compressed files are cut at their budget and read only that far, so their "
                     f"gzip checksums are not checked; --verify-cut-files reads them to their ends: "
                     f"{_bytes(d['verify_cut_files'])} more")
    return lines
