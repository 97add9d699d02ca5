"""The progress bar while a build runs, and the summary (with its per-source table) after it."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from tqdm import tqdm

import shards


class Progress:
    """A tqdm bar over the input bytes the build is expected to read when every input's size is known
    (the whole of each file read whole, the plan's estimate of each cut file's read), else over documents.

    The byte bar advances as the readers read each input's (compressed) bytes, so the ETA holds for
    one big file as for Dolma's ~2,400; inputs that do not report bytes (parquet, hf:) advance it
    when they end. Documents, tokens and text MB/s are shown beside it as they go.

    When stderr is not a terminal (a log file under nohup or a batch scheduler), a bar would fill the
    log with carriage returns: a plain line is printed every ``interval`` seconds instead.
    """

    def __init__(self, inputs, state, disable: bool = False, interval: float = 60.0, tty: bool | None = None,
                 expected: list[int | None] | None = None):
        # what each input is expected to be read of (a file cut at its budget: the plan's estimate of
        # where the cut lies; a whole file: its size), so that the share read and the ETA follow the
        # bytes the build reads, not the sizes of files it reads the start of
        sizes = [x.size if e is None else e for x, e in zip(inputs, expected or [None] * len(inputs), strict=True)]
        self.by_bytes = all(s is not None for s in sizes) and sum(sizes) > 0
        self.sizes = sizes
        self.counted: dict[int, int] = {}  # input index -> bytes already shown for it
        self.done_bytes = done = sum(sizes[i] for i in range(state.position[0])) if self.by_bytes else 0
        self.start_bytes = done
        self.docs = sum(t["documents"] for t in state.totals.values())
        self.tokens = self.start_tokens = state.total_tokens()
        self.text_bytes = 0
        self.inputs_done = state.position[0]
        self.t0 = self.last_line = time.perf_counter()
        self.plain = not disable and not (sys.stderr.isatty() if tty is None else tty)
        self.interval = interval
        self.bar = tqdm(total=sum(sizes) if self.by_bytes else None, initial=done if self.by_bytes else self.docs,
                        unit="B" if self.by_bytes else "doc", unit_scale=True,
                        unit_divisor=1024 if self.by_bytes else 1000,
                        desc="input" if self.by_bytes else "documents", disable=disable or self.plain,
                        file=sys.stderr, dynamic_ncols=True, mininterval=0.5, smoothing=0.05)

    def update(self, docs: int, tokens: int, text_bytes: int) -> None:
        self.docs += docs
        self.tokens += tokens
        self.text_bytes += text_bytes
        if not self.by_bytes:
            self.bar.update(docs)
        dt = max(time.perf_counter() - self.t0, 1e-9)
        self.bar.set_postfix_str(f"{self.docs:,} docs, {self.tokens / 1e6:,.1f}M tok, "
                                 f"{self.tokens / dt / 1e6:.2f}M tok/s, {self.text_bytes / dt / 1e6:.1f} MB text/s",
                                 refresh=False)
        if self.plain and time.perf_counter() - self.last_line >= self.interval:
            self.print_line()

    def read_bytes(self, index: int, n: int) -> None:
        if self.by_bytes:
            # a resumed input is re-read from its start; never count past its size
            n = min(n, self.sizes[index] - self.counted.get(index, 0))
            self.counted[index] = self.counted.get(index, 0) + n
            self.done_bytes += n
            self.bar.update(n)

    def input_done(self, index: int) -> None:
        self.inputs_done = index + 1
        if self.by_bytes:
            n = self.sizes[index] - self.counted.get(index, 0)
            self.counted[index] = self.sizes[index]
            self.done_bytes += n
            self.bar.update(n)

    def line(self) -> str:
        """One line of where the build is, for logs."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = (self.tokens - self.start_tokens) / dt
        where = f"input {min(self.inputs_done + 1, len(self.sizes)):,} of {len(self.sizes):,}"
        if self.by_bytes:
            total = sum(self.sizes)
            where = f"{self.done_bytes / total:.1%} of {_size(total)} read ({where})"
            speed = (self.done_bytes - self.start_bytes) / dt
            if speed > 0 and self.done_bytes < total:
                where += f", ETA {_duration((total - self.done_bytes) / speed)}"
        return (f"progress: {where}; {self.docs:,} documents, {self.tokens / 1e6:,.1f}M tokens, "
                f"{rate / 1e6:.2f}M tokens/s, {_duration(dt)} elapsed")

    def print_line(self) -> None:
        print(self.line(), file=sys.stderr, flush=True)
        self.last_line = time.perf_counter()

    def close(self) -> None:
        self.bar.close()


def _size(n: int) -> str:
    return f"{n / 1e9:,.2f} GB" if n >= 1e9 else f"{n / 1e6:,.1f} MB" if n >= 1e6 else f"{n / 1e3:,.1f} kB"


def cut_lines(manifest: dict) -> list[str]:
    """The files cut at their budget whose gzip checksum was not checked, for a person."""
    cut = manifest.get("unverified_cut_files") or []
    if not cut:
        return []
    shown = ", ".join(cut[:3]) + (f" and {len(cut) - 3} more" if len(cut) > 3 else "")
    return [f"  cut at their budget, so not checksum-verified ({len(cut)}): {shown} (--verify-cut-files reads "
            f"them to their ends)"]


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _size_on_disk(out: Path, manifest: dict) -> int:
    total = 0
    for e in manifest["shards"]:
        total += (out / e["file"]).stat().st_size + (out / shards.index_file_name(e["file"])).stat().st_size
    return total


def source_rows(plan, read_inputs: set[int], input_stats: list[dict], total_tokens: int) -> list[dict]:
    """Per source of ``plan``: its files planned (to be read by this build) / opened / finished (read
    to their end or their budget), documents, tokens, and the share of the output achieved against
    the share planned (the target of a sampled plan, else the source's share of the input)."""
    rows = []
    for s in plan.sources:
        stats = [input_stats[i] for i in s.files]
        status = [str(x["status"]) for x in stats]
        tokens = sum(x["tokens"] for x in stats)
        rows.append({
            "source": s.name, "files": len(s.files), "files_planned": sum(i in read_inputs for i in s.files),
            "files_opened": sum(1 for x in status if x != "pending" and not x.startswith("not ")),
            "files_finished": sum(1 for x in status if x == "ok" or x.startswith("partly read: its token budget")),
            "files_bad": sum(1 for x in status if x.startswith("bad: ")),
            "documents": sum(x["documents"] for x in stats), "tokens": tokens,
            "quota": s.quota, "share_planned": s.target if plan.sampled else s.share,
            "share": tokens / total_tokens if total_tokens else 0.0,
        })
    return rows


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Table rows as lines: the first column left-aligned, the others right-aligned, two spaces apart."""
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    return ["  " + "  ".join(v.ljust(w) if c == 0 else v.rjust(w) for c, (v, w) in enumerate(zip(row, widths,
                                                                                            strict=True)))
            for row in rows]


def source_table(rows: list[dict]) -> list[str]:
    """The per-source rows of a manifest as aligned lines."""
    head = ("source", "files planned/opened/finished", "documents", "tokens", "share", "planned")
    table = [head] + [(r["source"], f"{r['files_planned']:,} / {r['files_opened']:,} / {r['files_finished']:,}"
                       + (f" ({r['files_bad']} bad)" if r.get("files_bad") else ""),
                       f"{r['documents']:,}", f"{r['tokens']:,}", f"{100 * r['share']:.1f}%",
                       "-" if r["share_planned"] is None else f"{100 * r['share_planned']:.1f}%") for r in rows]
    return aligned(table)


def print_summary(out: Path, manifest: dict, elapsed: float, run_tokens: int, text_bytes: int,
                  total_elapsed: float, file=None, downloaded: int | None = None) -> None:
    """The table printed after a build: what went where, what was skipped, how fast; ``downloaded``:
    the bytes this run received over HTTP, against what the plan expected."""
    file = file or sys.stdout
    t = manifest["totals"]
    tokens = sum(v["tokens"] for v in t.values())
    rows = [("split", "documents", "tokens", "shards")]
    for split in shards.SPLITS:
        n_shards = sum(1 for e in manifest["shards"] if e["split"] == split)
        rows.append((split, f"{t[split]['documents']:,}", f"{t[split]['tokens']:,}", str(n_shards)))
    lines = [f"dataset {out}"] + aligned(rows)
    plan = manifest.get("plan") or {}
    if manifest.get("sources"):
        target = (f", --max-tokens {plan['max_tokens']:,}: {tokens / plan['max_tokens']:.1%} of it"
                  if plan.get("max_tokens") else "")
        lines.append(f"  sources ({plan.get('mode', 'whole')} plan{target}):")
        lines += ["  " + line for line in source_table(manifest["sources"])]
    if manifest.get("record_sources"):
        rs = sorted(manifest["record_sources"].items(), key=lambda kv: -kv[1]["tokens"])
        shown = ", ".join(f"{k} {v['tokens'] / max(tokens, 1):.1%}" for k, v in rs[:8])
        lines.append(f"  records' own \"source\" field, share of tokens: {shown}" + (" ..." if len(rs) > 8 else ""))
    skipped = manifest["skipped"]
    lines.append("  skipped: " + (", ".join(f"{k} {v:,}" for k, v in skipped.items()) if skipped else "none"))
    bad = [x["path"] for x in manifest["inputs"] if x["status"].startswith("bad")]
    if bad:
        lines.append(f"  bad input files (skipped the rest of): {', '.join(bad)}")
    lines += cut_lines(manifest)
    d = manifest.get("download")
    if downloaded and d:
        lines.append(f"  downloaded: {_size(downloaded)} over HTTP in this run, against {_size(d['expected_bytes'])} "
                     f"expected by the plan ({_size(d['read_bytes'])} of the files read)")
    if manifest["repaired"]["lone_surrogates"]:
        lines.append(f"  lone surrogates repaired: {manifest['repaired']['lone_surrogates']:,}")
    lines.append(f"  encoder: {manifest['encoder']['engine']} ({manifest['encoder']['reason']})")
    lines.append(f"  dtype {manifest['dtype']}, vocab {manifest['vocab_size']:,}, "
                 f"{_size_on_disk(out, manifest) / 1e6:,.1f} MB on disk")
    elapsed = max(elapsed, 1e-9)
    resumed = run_tokens != tokens
    lines.append(f"  encoding: {run_tokens:,} tokens in {elapsed:,.2f} s, {run_tokens / elapsed / 1e6:,.2f}M tokens/s, "
                 f"{text_bytes / elapsed / 1e6:,.1f} MB/s of text" + (" (this run, resumed)" if resumed else ""))
    lines.append(f"  elapsed: {total_elapsed:,.1f} s in all (reading the inputs, tokenizer, encoding, writing)")
    print("\n".join(lines), file=file)
