"""Encoding batches: in this process or in worker processes, always handed back in read order.

A batch is consecutive items of one input: whole JSONL lines for the worker to parse (``raw``, the
usual case: this process only decompresses and cuts), or items this process read itself (parquet,
txt, hf:). Either way the worker returns an :class:`Encoded`: how many items the batch held, each
document's position among them and its ids laid out per split with a separator before it, and the
skipped records, so the build keeps one set of books for every kind of input.
"""
from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

import tokenizer as tk
from preprocess import readers


class _Wait:
    def __repr__(self) -> str:
        return "WAIT"


# Given among the batches: encode nothing ahead of the batches given so far (hand them all back first).
# A reader close to where it may stop gives it before each batch, so that it reads no further ahead of
# the decision than one batch.
WAIT = _Wait()


@dataclass(frozen=True)
class Settings:
    """What every worker needs to parse and encode, set once per build."""
    encoder: tk.Encoder
    val_fraction: float
    np_dtype: np.dtype
    eot_id: int
    text_field: str


@dataclass
class Batch:
    """Consecutive items of read ``read`` (an index into the build's reads), and what ends the batch.

    ``raw``: whole JSONL lines (:func:`readers.line_chunks`), parsed by the worker, the first being
    line ``first_line + 1``; ``byte_end`` and ``line_end`` place the batch's end in the decompressed
    input, ``raw_end`` in its bytes on disk (those read when the batch was cut). ``items``: records
    and skips read in this process. ``verified``: everything of the input up to this batch's end has
    passed its checks (a gzip member's CRC), so it may be kept.
    """
    read: int
    raw: bytes | None = None
    first_line: int = 0
    items: list | None = None
    byte_end: int = 0
    line_end: int = 0
    raw_end: int = 0
    verified: bool = True
    done: bool = False        # the input was read to its end
    bad: Exception | None = None  # the input failed: BadInputFile (or DownloadFailed: the network)
    restart: bool = False     # with ``bad``: the URL changed on the server; the read starts again from byte 0
    drained: bool = False     # a cut input, read on to the end of the member holding the cut, which passed


@dataclass
class Encoded:
    """One encoded batch, laid out for the shard writers: per split, its documents in stream order,
    each one's separator then its ids (one buffer per split is much cheaper to hand between processes
    and to write than a thousand small ones)."""
    tokens: dict[str, np.ndarray]  # split -> separators and ids
    lengths: np.ndarray            # (n_docs,) ids per document, stream order
    is_val: np.ndarray             # (n_docs,) bool
    repaired: int
    text_bytes: int
    items: int                     # records and skips in the batch
    positions: np.ndarray          # (n_docs,) each document's item index in the batch
    skipped: list                  # [(item index in the batch, readers.Skipped)]
    source_ids: np.ndarray         # (n_docs,) index into source_names of the record's "source" field, -1: none
    source_names: list[str]


def split_is_val(key: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < val_fraction * 2.0 ** 64


def encode_items(s: Settings, items: list) -> Encoded:
    """Encode the records among ``items``: repair lone surrogates, pick each document's split, and lay
    the ids out per split with a separator before every document; note the skips and positions."""
    repaired = text_bytes = 0
    is_val, clean, positions, skipped, source_ids = [], [], [], [], []
    names: dict[str, int] = {}
    for k, item in enumerate(items):
        if type(item) is not readers.Record:
            skipped.append((k, item))
            continue
        text = item.text
        try:
            text_bytes += len(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates, the only str that is not UTF-8; rare, so checked last
            text, n = tk.repair_surrogates(text)
            repaired += n
            text_bytes += len(text.encode("utf-8"))
        clean.append(text)
        positions.append(k)
        is_val.append(s.val_fraction > 0 and split_is_val(item.id if item.id is not None else text, s.val_fraction))
        source_ids.append(-1 if item.source is None else names.setdefault(item.source, len(names)))
    encoded = s.encoder.encode_batch(clean, arrays=True)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if s.encoder.engine == "tiktoken" and encoded:  # uint32 arrays (lists where a text holds a special token)
        flat = np.concatenate(encoded, dtype=s.np_dtype, casting="unsafe")  # ids < vocab size fit np_dtype
    else:
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=s.np_dtype, count=int(lengths.sum()))
    # a separator before every document, then each split's documents, in stream order
    stream = np.insert(flat, np.cumsum(lengths) - lengths, s.np_dtype.type(s.eot_id))
    val = np.array(is_val, dtype=bool)
    in_val = np.repeat(val, lengths + 1)
    tokens = {"train": stream[~in_val], "val": stream[in_val]} if val.any() else {"train": stream,
                                                                                  "val": stream[:0]}
    return Encoded(tokens, lengths, val, repaired, text_bytes, len(items), np.array(positions, dtype=np.int64),
                   skipped, np.array(source_ids, dtype=np.int64), list(names))


def encode_batch(s: Settings, raw: bytes | None, first_line: int, items: list | None) -> Encoded:
    """Parse ``raw`` JSONL lines (as the readers do) or take ``items``, and encode them."""
    return encode_items(s, readers.parse_lines(raw, first_line, s.text_field) if raw is not None else items)


def _empty(s: Settings) -> Encoded:
    return encode_items(s, [])


# -- worker processes ------------------------------------------------------------------------------
# Processes, not threads: tiktoken releases the GIL only inside its BPE loop, and building the ids'
# Python ints holds it, so two threads reached 1.25x one thread where two processes reach 1.7x.

_SETTINGS: Settings | None = None  # a worker process's settings, set once when it starts


def _worker_init(settings: Settings) -> None:
    global _SETTINGS
    _SETTINGS = settings
    parent = os.getppid()

    def watch() -> None:  # a worker must not outlive a build killed with kill -9
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _in_worker(raw: bytes | None, first_line: int, items: list | None) -> Encoded:
    return encode_batch(_SETTINGS, raw, first_line, items)


def _work(b: Batch) -> tuple | None:
    """The arguments of the call that encodes ``b``; None when it holds nothing to encode."""
    if b.raw:
        return b.raw, b.first_line, None
    if b.items:
        return None, 0, b.items
    return None


def encode_in_order(batches: Iterable[Batch], settings: Settings, workers: int) -> Iterator[tuple[Batch, Encoded]]:
    """``(batch, encoded)`` in order. With one worker all in this process; with more, ``workers``
    processes parse and encode while this one reads and writes, up to 2*workers+1 batches in flight
    (fewer after a WAIT)."""
    if workers <= 1:
        for b in batches:
            if b is WAIT:
                continue
            work = _work(b)
            yield b, encode_batch(settings, *work) if work else _empty(settings)
        return
    # fork on Linux: workers start in milliseconds with the encoder already built (spawn costs ~0.35 s
    # of imports and tokenizer rebuilding per worker). HF tokenizers turns its own thread pool off in a
    # forked child, which is right here (the processes are the parallelism); the variable only keeps
    # it from warning about that.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    ex = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(settings,))
    try:
        inflight: deque = deque()
        for b in batches:
            if b is WAIT:
                while inflight:
                    item, fut = inflight.popleft()
                    yield item, fut.result() if fut is not None else _empty(settings)
                continue
            work = _work(b)
            inflight.append((b, ex.submit(_in_worker, *work) if work else None))  # no round trip without work
            if len(inflight) > 2 * workers:
                item, fut = inflight.popleft()
                yield item, fut.result() if fut is not None else _empty(settings)
        while inflight:
            item, fut = inflight.popleft()
            yield item, fut.result() if fut is not None else _empty(settings)
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


class EncoderCheck:
    """Runs ``verify()`` (the fast engine's equivalence check) in a thread; ``result()`` waits for it.

    HF encodes the sample with the GIL released, so the check costs the reading and encoding of the
    first batches little.
    """

    def __init__(self, verify):
        self._result = self._error = None
        self._thread = threading.Thread(target=self._run, args=(verify,), name="encoder-check", daemon=True)
        self._thread.start()

    def _run(self, verify) -> None:
        try:
            self._result = verify()
        except BaseException as e:  # re-raised in the caller's thread by result()
            self._error = e

    def result(self) -> tk.Encoder:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._result

