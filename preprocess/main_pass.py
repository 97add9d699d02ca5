"""The books of the encoding pass: what each encoded batch adds to the shards and the counts.

:class:`MainPass` takes the batches in read order. It hands each one's documents to the split
writers, counts documents, tokens and skipped records per input, per split and per record source,
cuts a read at its token budget (or the build at --max-tokens, --in-order), saves the state at
verified points (where everything read so far has passed its checks), and rolls the books back to the
last one when an input turns out to be damaged.
"""
from __future__ import annotations

import numpy as np

import shards
from preprocess import readers
from preprocess.encode import Batch, Encoded
from preprocess.errors import BuildError
from preprocess.state import BuildState, Snapshot, save_state


class MainPass:
    """The books of the encoding pass: it hands each batch's documents to the shard writers, counts
    them, cuts a read at its token budget, saves the state at verified points, and rolls back to the
    last one when an input turns out to be damaged."""

    def __init__(self, b, plan, inputs, reads, state: BuildState, writers: dict):
        """``b``: the Builder, for its options, output, log, progress and the set of cut reads."""
        self.b, self.o, self.plan, self.inputs, self.reads = b, b.opts, plan, inputs, reads
        self.state, self.writers = state, writers
        self.items = state.position[1]  # items of the current read consumed
        self.text_bytes = 0
        self.owed = False               # shards finished since the state was last saved
        self.waiting: int | None = None  # a cut read whose member has not passed its check yet
        self.last_ok = self._snapshot()

    def _snapshot(self) -> Snapshot:
        k = self.state.position[0]
        return Snapshot.take(self.state, self.reads[k][0] if k < len(self.reads) else None, self.writers)

    def _verified(self) -> None:
        """Everything taken so far has passed its checks: remember this point, and save it when a
        shard was finished since the last save."""
        self.last_ok = self._snapshot()
        if self.owed:
            self.state.save_pending(self.b.out, self.writers)
            save_state(self.b.out, self.state)
            self.owed = False

    def take(self, batch: Batch, enc: Encoded) -> bool:
        """Account for one batch; True when the pass is over (--max-tokens reached, and checked)."""
        k = batch.read
        if batch.bad is not None:
            return self.fail(batch)
        if k in self.b.cut:  # read on past its cut only to check the member that holds it
            if batch.verified and k == self.waiting:
                self.waiting = None
                self._verified()
                return self.state.stopped
            return False
        i, budget = self.reads[k]
        stats = self.state.input_stats[i]
        stats["status"] = "reading"
        limit, cut = self._limit(enc, stats, budget)
        self.owed |= _add_documents(enc, limit, self.writers, self.state, stats)
        positions = self.items + enc.positions
        end = self.items + enc.items if limit == len(enc.lengths) else int(positions[limit - 1]) + 1
        for pos, item in enc.skipped:
            if self.items + pos < end:
                self.b._report_skip(self.inputs[i], item)
                stats["skipped"][item.reason] = stats["skipped"].get(item.reason, 0) + 1
                self.state.skipped[item.reason] = self.state.skipped.get(item.reason, 0) + 1
        _count_record_sources(enc, limit, self.state.record_sources)
        stats["records"] = end
        self.state.repaired += enc.repaired
        self.text_bytes += enc.text_bytes
        self.items = end
        self.state.position = (k, end)
        self.state.resume = [batch.byte_end, batch.line_end] if self.inputs[i].kind in readers.LINE_KINDS else None
        if cut or batch.done:
            if cut:
                self.b.cut.add(k)
                stats["status"] = ("partly read: its token budget is reached" if budget is not None
                                   else "partly read: --max-tokens reached")
                self.state.stopped = budget is None  # --in-order: the whole build is done
            else:
                stats["status"] = "ok"
            self.state.position, self.state.resume, self.items = (k + 1, 0), None, 0
            self.b.progress.input_done(k)
        self.b.progress.update(limit, int(enc.lengths[:limit].sum()) + limit, enc.text_bytes)
        if not batch.verified:
            if cut:
                self.waiting = k
            return False
        self._verified()
        return self.state.stopped

    def _limit(self, enc: Encoded, stats: dict, budget: int | None) -> tuple[int, bool]:
        """How many of the batch's documents to keep, and whether the read (or build) ends with them:
        a read with a budget ends after the document that brings its tokens to the budget; an in-order
        build after the one that brings the total to --max-tokens."""
        n = len(enc.lengths)
        if budget is not None:
            base, cap = stats["tokens"], budget
        elif self.plan.mode == "in_order":
            base, cap = self.state.total_tokens(), self.o.max_tokens
        else:
            return n, False
        if not n:
            return 0, False
        reached = base + np.cumsum(enc.lengths + 1)
        if reached[-1] < cap:
            return n, False
        return int(np.searchsorted(reached, cap, side="left")) + 1, True

    def fail(self, batch: Batch) -> bool:
        """The input of ``batch.read`` is damaged: roll back to the last verified point, record it as bad,
        and go on without it (--skip-bad-files) or stop with an error that says what to do."""
        k, e = batch.read, batch.bad
        i = self.reads[k][0]
        rolled = self.last_ok.restore(self.state, self.writers, self.b.out)
        assert self.state.position[0] == k, "a verified point falls at every input's end"
        self.items, self.waiting = self.state.position[1], None
        stats = self.state.input_stats[i]
        stats["status"] = f"bad: {e.problem}"
        dropped = (f"; the {rolled:,} documents read after its last verified point (inside a compressed member whose "
                   f"checksum was never reached or failed) are not kept" if rolled else "")
        if self.o.tokenizer is None and i in self.plan.sample_inputs():
            dropped += (". The tokenizer sample read the start of this file before its damage was known, so the "
                        "tokenizer may hold merges learned from it: for one trained on a repaired copy, replace the "
                        "file and rerun with --overwrite")
        if not self.o.skip_bad_files:
            self.state.save_pending(self.b.out, self.writers)
            save_state(self.b.out, self.state)
            raise BuildError(
                f"{e}\nEvery shard finished before it is valid on disk{dropped}. Rerun the same command with "
                f"--skip-bad-files to record the file as bad in the manifest, keep the {stats['documents']:,} "
                f"documents read from it before the damage and go on; or replace it with a complete copy of the "
                f"same file and rerun the same command to go on inside it")
        self.b.log(f"--skip-bad-files: {e.path}: {e.problem}; recorded as bad, going on without the rest of it"
                   f" ({stats['documents']:,} documents kept from it{dropped})")
        self.b.cut.add(k)
        self.state.position, self.state.resume, self.items = (k + 1, 0), None, 0
        self.b.progress.input_done(k)
        self._verified()
        return self.state.stopped


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
