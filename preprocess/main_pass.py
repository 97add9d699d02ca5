"""The books of the encoding pass: what each piece the read path decided on adds to the shards and counts.

:class:`MainPass` takes the pieces of ``preprocess/read_path.py`` in read order. It hands each one's
kept documents to the split writers, counts documents, tokens, skipped records and bytes read per
input, per split and per record source, saves the state at verified points (where everything kept so
far has passed its checks, or was trusted without its check by a cut), and rolls the books back when
an input turns out damaged (to the last verified point) or changed on its server (to where the read
began). It decides what is kept and recorded; where a read stops is the read path's, and nothing
here reaches back into it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

import shards
from preprocess import readers
from preprocess.encode import Encoded
from preprocess.errors import BadInputFile, BuildError, DownloadFailed
from preprocess.read_path import Piece
from preprocess.state import BuildState, Snapshot, remove_unlisted_shards, save_state

MAX_REPORTED_SKIPS = 5
COMPRESSED = ("jsonl.gz", "jsonl.zst")


class MainPass:
    """The books of the encoding pass (see the module docstring).

    ``sampled``: the inputs the build's own tokenizer sample read (empty when --tokenizer was given),
    for the warning that a damaged one may have taught the tokenizer; ``log``: what the user must know.
    """

    def __init__(self, out: Path, plan, inputs, reads, state: BuildState, writers: dict, progress,
                 log: Callable[[str], None], skip_bad_files: bool, sampled: set[int]):
        self.out, self.plan, self.inputs, self.reads = Path(out), plan, inputs, reads
        self.state, self.writers, self.progress, self.log = state, writers, progress, log
        self.skip_bad_files, self.sampled = skip_bad_files, sampled
        self.items = state.position[1]  # items of the current read consumed
        self.text_bytes = 0
        self.reported_skips = 0
        self.owed = False               # shards finished since the state was last saved
        self.saved_through = state.position[0]  # reads before this one are done in the state on disk
        self.last_ok = self._snapshot()
        # where the current read began (None for a read resumed in the middle: its start is an earlier run's)
        self.read_start: Snapshot | None = self.last_ok if state.position[1] == 0 else None

    def _snapshot(self) -> Snapshot:
        k = self.state.position[0]
        return Snapshot.take(self.state, self.reads[k][0] if k < len(self.reads) else None, self.writers)

    def _save(self) -> None:
        self.state.save_pending(self.out, self.writers)
        save_state(self.out, self.state)
        self.saved_through = self.state.position[0]
        self.owed = False

    def _verified(self) -> None:
        """Everything taken so far has passed its checks (or is trusted without them): remember this
        point, and save it when a shard was finished since the last save."""
        self.last_ok = self._snapshot()
        if self.owed:
            self._save()

    def take(self, piece: Piece) -> bool:
        """Account for one piece; True when the pass is over (--max-tokens reached, and checked)."""
        batch, k = piece.batch, piece.batch.read
        if piece.end == "bad":
            return self.fail(piece)
        if piece.end == "restart":
            return self.restart(piece)
        i, budget = self.reads[k]
        stats = self.state.input_stats[i]
        if piece.end == "checked":  # the member holding a cut passed its check (--verify-cut-files)
            stats["checksum"] = "verified"
            self.state.stopped = self.state.stopped or piece.stop
            self._verified()
            self.read_start = self.last_ok
            return self.state.stopped
        enc = piece.enc
        stats["status"] = "reading"
        self.owed |= _add_documents(enc, piece.keep, self.writers, self.state, stats)
        positions = self.items + enc.positions
        end = self.items + enc.items if piece.keep == len(enc.lengths) else int(positions[piece.keep - 1]) + 1
        for pos, item in enc.skipped:
            if self.items + pos < end:
                self._report_skip(self.inputs[i], item)
                stats["skipped"][item.reason] = stats["skipped"].get(item.reason, 0) + 1
                self.state.skipped[item.reason] = self.state.skipped.get(item.reason, 0) + 1
        _count_record_sources(enc, piece.keep, self.state.record_sources)
        stats["records"] = end
        stats["read_bytes"] = batch.raw_end
        self.state.repaired += enc.repaired
        self.text_bytes += enc.text_bytes
        self.items = end
        self.state.position = (k, end)
        self.state.resume = [batch.byte_end, batch.line_end] if self.inputs[i].kind in readers.LINE_KINDS else None
        if piece.end == "done" and not stats["documents"]:
            return self.nothing_kept(k)
        if piece.end in ("cut", "done"):
            compressed = self.inputs[i].kind in COMPRESSED
            if piece.end == "cut":
                stats["status"] = ("partly read: its token budget is reached" if budget is not None
                                   else "partly read: --max-tokens reached")
                stats["checksum"] = ("verified" if batch.verified else "cut") if compressed else "none"
            else:
                stats["status"] = "ok"
                stats["checksum"] = "verified" if compressed else "none"
                size = self.inputs[i].size
                if size is not None and batch.raw_end and batch.raw_end != size:
                    self.log(f"{self.inputs[i].path}: the plan has it as {size:,} bytes (from HTTP HEAD), and "
                             f"{batch.raw_end:,} were read; the manifest records what was read")
            self.state.stopped = self.state.stopped or piece.stop
            self.state.position, self.state.resume, self.items = (k + 1, 0), None, 0
            self.progress.input_done(k)
        self.progress.update(piece.keep, int(enc.lengths[:piece.keep].sum()) + piece.keep, enc.text_bytes)
        if not (batch.verified or piece.trusted):
            return False
        self._verified()
        if piece.end in ("cut", "done"):
            self.read_start = self.last_ok
        return self.state.stopped

    def _report_skip(self, inp, item) -> None:
        if self.reported_skips < MAX_REPORTED_SKIPS:
            self.log(f"skipped {inp.path}:{item.line}: {item.reason} ({item.detail})")
        elif self.reported_skips == MAX_REPORTED_SKIPS:
            self.log("further skipped records are only counted (see the manifest's \"skipped\")")
        self.reported_skips += 1

    def restart(self, piece: Piece) -> bool:
        """The URL of ``piece``'s read changed on the server while it was read: roll the books back to
        where the read began, so that it is read again from its start, whole and from one version."""
        k, e = piece.batch.read, piece.batch.bad
        if self.read_start is None:
            self._save_at(self.last_ok)
            raise BuildError(f"{e.path}: {e.problem}, and an earlier run of this build kept documents of its "
                             f"earlier version. Rebuild with --overwrite, so that every document comes from the "
                             f"file as it is now")
        self._save_at(self.read_start)
        self.items = 0
        self.log(f"{e.path}: {e.problem}; reading it again from its start (none of its documents read so far "
                 f"is kept)")
        assert self.state.position[0] == k
        return False

    def _save_at(self, point: Snapshot) -> None:
        """Roll the state and the writers back to ``point`` and save that at once (the shards written
        after it are deleted once the state no longer lists them)."""
        point.restore(self.state, self.writers, self.out, unlink=False)
        self.last_ok = point
        self._save()
        remove_unlisted_shards(self.out, self.state)

    def nothing_kept(self, k: int) -> bool:
        """Read ``k`` came to its end without a document: a bad input (every record skipped, or none at
        all), never "ok" with nothing. Its counts stay (there is nothing to roll back)."""
        i = self.reads[k][0]
        stats = self.state.input_stats[i]
        e = _nothing_kept(self.inputs[i], stats)
        stats["status"] = f"bad: {e.problem}"
        if not self.skip_bad_files:
            self._save()
            raise BuildError(f"{e}\nEvery shard finished before it is valid on disk; {_go_on(e)}")
        self.log(f"--skip-bad-files: {e.path}: {e.problem}; recorded as bad")
        self.state.position, self.state.resume, self.items = (k + 1, 0), None, 0
        self.progress.input_done(k)
        self._verified()
        self.read_start = self.last_ok
        return self.state.stopped

    def fail(self, piece: Piece) -> bool:
        """The input of ``piece``'s read cannot be kept: roll back to the last verified point, record it
        as bad, and go on without it (--skip-bad-files) or stop with an error that says what to do. A
        URL that did not answer (DownloadFailed) always stops the build: the next run retries it."""
        k, e = piece.batch.read, piece.batch.bad
        i = self.reads[k][0]
        rolled = self.last_ok.restore(self.state, self.writers, self.out)
        assert self.state.position[0] == k, "a verified point falls at every input's end"
        self.items = self.state.position[1]
        stats = self.state.input_stats[i]
        if isinstance(e, DownloadFailed):
            self._save()
            raise BuildError(f"{e}. Every shard finished before it is valid on disk, and what was downloaded is "
                             f"kept in {self.out / shards.BUILD_DIR}")
        stats["status"] = f"bad: {e.problem}"
        dropped = (f"; the {rolled:,} documents read after its last verified point (inside a compressed member whose "
                   f"checksum was never reached or failed) are not kept" if rolled else "")
        if i in self.sampled and e.damaged:
            dropped += (". The tokenizer sample read the start of this file before its damage was known, so the "
                        "tokenizer may hold merges learned from it: for one trained on a repaired copy, replace the "
                        "file and rerun with --overwrite")
        if not self.skip_bad_files:
            self._save()
            if e.damaged:
                raise BuildError(
                    f"{e}\nEvery shard finished before it is valid on disk{dropped}. Rerun the same command with "
                    f"--skip-bad-files to record the file as bad in the manifest, keep the {stats['documents']:,} "
                    f"documents read from it before the damage and go on; or replace it with a complete copy of the "
                    f"same file and rerun the same command to go on inside it")
            raise BuildError(f"{e}\nEvery shard finished before it is valid on disk{dropped}; {_go_on(e)}")
        self.log(f"--skip-bad-files: {e.path}: {e.problem}; recorded as bad, going on without the rest of it"
                 f" ({stats['documents']:,} documents kept from it{dropped})")
        self.state.position, self.state.resume, self.items = (k + 1, 0), None, 0
        self.progress.input_done(k)
        self._verified()
        self.read_start = self.last_ok
        return self.state.stopped



def _go_on(e: BadInputFile) -> str:
    """What to do after a bad input that is not damaged data (so no copy of it would be better)."""
    skip = "" if "--skip-bad-files" in (e.remedy or "") else (", or with --skip-bad-files to record it as bad and "
                                                              "go on without it")
    return f"rerun the same command once the file is fixed, to go on from it{skip}"


def _nothing_kept(inp, stats: dict) -> BadInputFile:
    """The error for an input read to its end that gave no document."""
    if not stats["records"]:
        return BadInputFile(inp.path, "holds no records (only blank lines)", "check where it came from, or "
                            "pass --skip-bad-files to go on without it")
    reasons = ", ".join(f"{r} {n:,}" for r, n in sorted(stats["skipped"].items()))
    hint = "check that it holds JSON Lines text"
    if "missing_text" in stats["skipped"] or "non_string_text" in stats["skipped"]:
        hint = "is the text in another field than the one read? Pass --text-field NAME"
    elif "undecodable_bytes" in stats["skipped"]:
        hint = "it is not UTF-8 text as read (compressed once more, or in another encoding?)"
    return BadInputFile(inp.path, f"all its {stats['records']:,} records were skipped ({reasons})",
                        f"{hint}; or pass --skip-bad-files to go on without it")


def _add_documents(enc: Encoded, limit: int, writers: dict, state: BuildState, stats: dict) -> bool:
    """Hand the batch's first ``limit`` documents to the split writers and count them; True when a
    shard was written."""
    wrote = False
    for split in shards.SPLITS:
        lengths = enc.lengths[:limit][enc.is_val[:limit] == (split == "val")]
        if not len(lengths):
            continue
        n = int(lengths.sum()) + len(lengths)  # the first documents of a split are a prefix of its tokens
        entries = writers[split].add_block(enc.tokens[split][:n], lengths)
        state.shards += entries
        wrote = wrote or bool(entries)
        for counts in (stats, state.totals[split]):
            counts["documents"] += len(lengths)
            counts["tokens"] += n
    return wrote


def _count_record_sources(enc: Encoded, limit: int, counts: dict) -> None:
    """Add the first ``limit`` documents to ``counts`` by their records' own "source" field."""
    if not enc.source_names:
        return
    ids = enc.source_ids[:limit]
    has = ids >= 0
    docs = np.bincount(ids[has], minlength=len(enc.source_names))
    tokens = np.bincount(ids[has], weights=(enc.lengths[:limit] + 1)[has], minlength=len(enc.source_names))
    for j, name in enumerate(enc.source_names):
        if docs[j]:
            c = counts.setdefault(name, [0, 0])
            c[0] += int(docs[j])
            c[1] += int(tokens[j])
