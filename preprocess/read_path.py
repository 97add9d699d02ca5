"""The main pass's read path: what each read yields, in which batches, and where each read stops.

:class:`ReadPath` owns both ends of reading. :meth:`ReadPath.batches` reads the build's reads in
order and cuts them into batches (JSON Lines: raw line chunks that the workers parse; parquet, txt
and hf: records read here). :meth:`ReadPath.pieces` takes those batches back encoded, in the same
order, and decides how much of each is kept: a read with a token budget ends at the document that
brings its tokens to the budget, an --in-order build at the document that brings the total to
--max-tokens. Once it has decided that a read is over, ``batches`` stops reading it at the next batch
it makes, and the batches of it already in flight (at most 2 x workers + 1, ``preprocess/encode.py``)
are dropped here. The books (``preprocess/main_pass.py``) take the :class:`Piece` objects and keep
what they say; nothing they do reaches back into a reader.

Cuts. Near a read's expected cut (its budget over its source's measured tokens per byte on disk)
batches are made small (SMALL_CHUNK) and the decompressor is fed small pieces (SMALL_PIECE), so that
what is read past the cut before the cut is known is little; the fetcher is told to expect the read to
go to NEAR of that point (ranges straight there, then small ones), and a read to its end, the whole
file. Where the batches are small (below WAIT_BELOW: from NEAR, within about 85 KB of the expected cut),
each is preceded by ``WAIT``: the workers hand back what they hold before the next batch is read, so no
more than one batch is read ahead of the decision. Past that band batches grow again and the workers
run ahead as usual (an estimate off by a fifth must not make a fifth of a 2 GB file wait batch by
batch): what they read past a cut lying out there is the batches in flight, at most 2 x workers + 1
of them. By default a cut read
stops there: the gzip member holding the cut is not read to its end, so its CRC is not checked, and
the books record the file as not checksum-verified (over HTTPS, TLS has authenticated every byte and
the inflater rejects a malformed stream; the CRC is what is left unchecked). With --verify-cut-files
the read goes on to the end of that member, and what the cut kept is trusted only once the member
passes.

Faults. A read whose input turns out damaged ends with a ``bad`` piece, and the books roll back to
their last verified point. A URL that changed on the server while it was read gives a ``restart``
piece and is read again from its first byte (once: a second change is a bad input). A URL that does
not answer within the network patience gives a ``bad`` piece whose error is ``DownloadFailed``, and
the books stop the build.

Everything here is a function of the data and the plan, never of timing: chunk sizes depend on where
the stream stands, not on how far the encoding lags, so the batches, and the bytes recorded as read,
are the same for any --workers and after a resume.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from preprocess import readers
from preprocess.encode import WAIT, Batch, Encoded
from preprocess.errors import BadInputFile, ChangedInput, DownloadFailed

CHUNK_BYTES = 1 << 20   # JSONL per batch, parsed by the worker that encodes it
SMALL_CHUNK = 4 << 10   # JSONL per batch next to a read's expected cut
PIECE = 64 << 10        # bytes on disk the decompressor is fed at a time
SMALL_PIECE = 4 << 10   # ... from NEAR of a read's expected cut on
NEAR = 0.8              # of the expected cut: estimates of tokens per byte are good to about 10-20%
WAIT_BELOW = 64 << 10   # batches smaller than this (near a cut) wait for the decisions on those before
BATCH_CHARS = 1 << 20   # text per batch of records read here: large enough to amortise hand-offs
BATCH_DOCS = 4096
# decompressed bytes per byte on disk assumed when sizing batches near a cut (gzip and zstd of
# Dolma-style JSON: about 3)
EXPANSION = {"jsonl": 1.0, "jsonl.gz": 3.0, "jsonl.zst": 3.0}


@dataclass
class Piece:
    """What the read path decided about one encoded batch, for the books.

    ``keep``: the batch's first ``keep`` documents are kept. ``end``: None (the read goes on),
    ``done`` (read to its end), ``cut`` (its budget reached with these documents), ``checked`` (a cut
    read's gzip member passed its check, --verify-cut-files), ``bad`` (``batch.bad`` says why) or
    ``restart`` (read it again from its start). ``stop``: the build is over after this piece
    (--in-order reached --max-tokens). ``trusted``: the point after this piece may be kept for good
    even though its gzip member was not checked (a cut read that is not read on).
    """
    batch: Batch
    enc: Encoded | None = None
    keep: int = 0
    end: str | None = None
    stop: bool = False
    trusted: bool = False


class ReadPath:
    """The reads of one main pass, from ``start`` = (read index, items of it consumed); ``resume`` =
    [decompressed bytes, lines] where those items end in a JSONL input. ``kept``: tokens already kept
    from the read ``start`` names; ``total``: tokens already kept in all. ``fetch``: the build's
    Fetcher; ``on_bytes(k, n)``: n bytes on disk of read k were read."""

    def __init__(self, plan, inputs, reads: list[list], start: tuple[int, int], resume: list | None, kept: int,
                 total: int, text_field: str, txt_blocks: bool, verify_cut_files: bool, fetch,
                 on_bytes: Callable[[int, int], None] | None = None, stopped: bool = False):
        self.plan, self.inputs, self.reads = plan, inputs, reads
        self.start, self.resume = start, resume
        self.text_field, self.txt_blocks, self.verify = text_field, txt_blocks, verify_cut_files
        self.fetch, self.on_bytes = fetch, on_bytes
        rates = {i: s.tokens_per_byte for s in plan.sources for i in s.files}
        # where each read with a budget is expected to be cut, in bytes on disk from its start
        self.expected_cut = {k: budget / rates[i] for k, (i, budget) in enumerate(reads)
                             if budget is not None and rates.get(i)}
        # decisions, made by pieces() and read by batches(): one object, both ends of reading
        self._over: set[int] = set()      # reads that ended (cut, bad): batches() stops reading them
        self._checking: set[int] = set()  # cut reads read on to their gzip member's end (--verify-cut-files)
        self._stopped = stopped           # the whole build is over
        self._tokens = {start[0]: kept}   # tokens kept per read
        self._total = self._total_verified = total
        self._total_at_start: dict[int, int] = {}

    # -- the producer ------------------------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        """The batches of every read from ``start`` on, in order."""
        first, skip = self.start
        for k in range(first, len(self.reads)):
            if self._stopped:
                return
            restarted = False
            while True:
                again = yield from self._read(k, skip if k == first and not restarted else 0,
                                              self.resume if k == first and not restarted else None, restarted)
                if not again or k in self._over:
                    break
                restarted = True

    def _read(self, k: int, skip: int, resume: list | None, restarted: bool) -> Iterator[Batch]:
        """The batches of read ``k``; returns True when it must be read again from its start (its URL
        changed on the server, the first time)."""
        inp = self.inputs[self.reads[k][0]]
        try:
            if inp.kind in readers.LINE_KINDS:
                yield from self._chunk_batches(k, inp, *(resume or (0, 0)))
            else:
                yield from self._item_batches(k, inp, skip)
        except ChangedInput as e:
            yield Batch(k, bad=e, restart=not restarted, verified=False)
            return not restarted
        except (BadInputFile, DownloadFailed) as e:
            yield Batch(k, bad=e, verified=False)
        return False

    def _sizes(self, k: int, inp, position: readers.Position) -> tuple[Callable, Callable, int | None]:
        """For read ``k``: its batch sizes (CHUNK_BYTES, shrinking to SMALL_CHUNK near its expected cut),
        the pieces its decompressor is fed (PIECE, then SMALL_PIECE from NEAR of the cut on), and how far
        the fetcher should expect it to read (its size, or NEAR of its cut). All follow from the plan and
        where the stream stands, so the batches are the same in every run."""
        expected = self.expected_cut.get(k)
        if expected is None:
            whole = self.reads[k][1] is None and self.plan.mode != "in_order"
            return (lambda: CHUNK_BYTES), (lambda: PIECE), inp.size if whole else None
        factor = EXPANSION.get(inp.kind, 1.0) / 4  # a quarter of the distance: several batches to the cut
        near = int(NEAR * expected)
        return (lambda: int(min(CHUNK_BYTES, max(SMALL_CHUNK, abs(expected - position.raw) * factor))),
                lambda: PIECE if position.raw + PIECE <= near else SMALL_PIECE, near)

    def _chunk_batches(self, k: int, inp, byte_start: int, line_start: int) -> Iterator[Batch]:
        """A JSONL input as raw line chunks. Once the read is over, its chunks are no longer made: with
        --verify-cut-files it is read on to the end of the member holding the cut, then a ``drained``
        batch says that member passed."""
        position = readers.Position()
        on_bytes = (lambda n: self.on_bytes(k, n)) if self.on_bytes else None
        byte_end, line_end = byte_start, line_start
        size, piece, hint = self._sizes(k, inp, position)
        near = hint if k in self.expected_cut else None

        def close_to_cut() -> bool:
            return near is not None and position.raw >= near and size() < WAIT_BELOW
        chunks = readers.line_chunks(inp, size, byte_start, line_start, fetch=self.fetch, on_bytes=on_bytes,
                                     position=position, piece=piece, hint=hint)
        try:
            for chunk, newlines, verified in chunks:
                if close_to_cut() and k not in self._over:
                    yield WAIT  # the decision on what is in flight comes before this batch is made
                if k in self._over:
                    if k not in self._checking:
                        return
                    if verified:
                        yield Batch(k, drained=True, raw_end=position.raw)
                        return
                    continue
                byte_end += len(chunk)
                yield Batch(k, raw=chunk, first_line=line_end, byte_end=byte_end, line_end=line_end + newlines,
                            raw_end=position.raw, verified=verified)
                line_end += newlines
        except (BadInputFile, DownloadFailed) as e:
            if isinstance(e, ChangedInput):
                raise
            yield Batch(k, bad=e, byte_end=byte_end, line_end=line_end, raw_end=position.raw, verified=False)
            return
        finally:
            chunks.close()
        if k not in self._over:
            yield Batch(k, done=True, byte_end=byte_end, line_end=line_end, raw_end=position.raw)

    def _item_batches(self, k: int, inp, skip: int) -> Iterator[Batch]:
        """Parquet, txt and hf: inputs: records read here, in batches of about BATCH_CHARS of text."""
        read = [0]

        def on_bytes(n: int) -> None:
            read[0] += n
            if self.on_bytes:
                self.on_bytes(k, n)
        batch, chars, n = Batch(k, items=[]), 0, 0
        items = readers.read_records(inp, self.text_field, self.txt_blocks, fetch=self.fetch, on_bytes=on_bytes)
        try:
            for item in items:
                n += 1
                if n <= skip:
                    continue
                batch.items.append(item)
                if type(item) is readers.Record:
                    chars += len(item.text)
                    if chars >= BATCH_CHARS or len(batch.items) >= BATCH_DOCS:
                        batch.raw_end = read[0]
                        yield batch
                        if k in self._over:
                            return
                        batch, chars = Batch(k, items=[]), 0
        except (BadInputFile, DownloadFailed) as e:
            if isinstance(e, ChangedInput):
                raise
            if batch.items:
                batch.raw_end = read[0]
                yield batch  # the records before the damage: parquet and txt are trusted as read
            yield Batch(k, bad=e, verified=False, raw_end=read[0])
            return
        finally:
            items.close()
        batch.raw_end = read[0] or (inp.size or 0)  # parquet reports no bytes: it was read whole
        yield batch
        if k not in self._over:
            yield Batch(k, done=True, raw_end=batch.raw_end)

    def first_texts(self, max_reads: int) -> Iterator[str]:
        """The texts of the first documents of the first ``max_reads`` reads, from their starts whichever
        read a resumed build is in, each read only as far as the main pass is expected to read it (to
        NEAR of a cut), so that taking them fetches nothing the build would not."""
        for k in range(min(max_reads, len(self.reads))):
            inp = self.inputs[self.reads[k][0]]
            if inp.kind in readers.LINE_KINDS:
                position = readers.Position()
                _, piece, hint = self._sizes(k, inp, position)
                near = hint if k in self.expected_cut else None  # a whole file: growing ranges, not one
                items = self._lines(inp, position, piece, near, near)
            else:
                items = readers.read_records(inp, self.text_field, self.txt_blocks, fetch=self.fetch, come_back=True)
            try:
                for item in items:
                    if type(item) is readers.Record:
                        yield item.text
            except BadInputFile:
                pass  # the main pass meets it and says what to do
            finally:
                items.close()

    def _lines(self, inp, position, piece, hint, near) -> Iterator:
        """The records of a JSONL input up to ``near`` bytes on disk (all of them when None)."""
        line = 0
        chunks = readers.line_chunks(inp, SMALL_CHUNK << 2, fetch=self.fetch, come_back=True, position=position,
                                     piece=piece, hint=hint)
        try:
            for chunk, newlines, _ in chunks:
                yield from readers.parse_lines(chunk, line, self.text_field)
                line += newlines
                if near is not None and position.raw >= near:
                    return
        finally:
            chunks.close()

    # -- the decisions ---------------------------------------------------------------------------------

    def pieces(self, encoded: Iterable[tuple[Batch, Encoded]]) -> Iterator[Piece]:
        """Decide, for each encoded batch in order, what of it is kept and whether its read (or the
        build) ends with it; drop what was read of a read after it ended."""
        for batch, enc in encoded:
            if self._stopped:  # read ahead of the end of an --in-order build
                continue
            k = batch.read
            if k not in self._total_at_start:
                self._total_at_start[k] = self._total - self._tokens.get(k, 0)
            if k in self._over:
                piece = self._after_cut(batch)
                if piece is not None:
                    yield piece
                continue
            if batch.bad is not None:
                if batch.restart:  # read again from its start: its documents so far are not kept
                    self._total = self._total_at_start[k]
                    self._tokens[k] = 0
                    yield Piece(batch, end="restart")
                    continue
                self._over.add(k)
                self._total = self._total_verified
                yield Piece(batch, end="bad")
                continue
            keep, cut = self._limit(enc, k)
            added = int(enc.lengths[:keep].sum()) + keep
            self._tokens[k] = self._tokens.get(k, 0) + added
            self._total += added
            if cut:
                self._over.add(k)
                read_on = self.verify and not batch.verified
                if read_on:
                    self._checking.add(k)
                else:
                    self._total_verified = self._total
                stop = self.reads[k][1] is None and not read_on  # --in-order: the build ends here
                self._stopped = self._stopped or stop
                yield Piece(batch, enc, keep, "cut", stop=stop, trusted=not read_on)
                continue
            if batch.verified:
                self._total_verified = self._total
            yield Piece(batch, enc, keep, "done" if batch.done else None)

    def _after_cut(self, batch: Batch) -> Piece | None:
        """A batch of a read that already ended: dropped, unless it settles a cut read's check."""
        k = batch.read
        if k not in self._checking:
            return None
        if batch.bad is not None:
            self._checking.discard(k)
            self._total = self._total_verified  # the books roll back to before the cut's documents
            return Piece(batch, end="bad")
        if batch.verified and not batch.restart:
            self._checking.discard(k)
            self._total_verified = self._total
            stop = self.reads[k][1] is None
            self._stopped = self._stopped or stop
            return Piece(batch, end="checked", stop=stop)
        return None

    def _limit(self, enc: Encoded, k: int) -> tuple[int, bool]:
        """How many of the batch's documents to keep, and whether the read (or build) ends with them:
        a read with a budget ends after the document that brings its tokens to the budget; an in-order
        build after the one that brings the total to --max-tokens."""
        n = len(enc.lengths)
        budget = self.reads[k][1]
        if budget is not None:
            base, cap = self._tokens.get(k, 0), budget
        elif self.plan.mode == "in_order":
            base, cap = self._total, self.plan.max_tokens
        else:
            return n, False
        if not n:
            return 0, False
        reached = base + np.cumsum(enc.lengths + 1)
        if reached[-1] < cap:
            return n, False
        return int(np.searchsorted(reached, cap, side="left")) + 1, True
