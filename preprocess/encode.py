"""Encoding batches: in this process or in worker processes, always handed back in input order.

A batch is either records the build read itself (parquet, txt, hf:) or a chunk of raw JSONL lines
that the worker parses as the readers do. Each comes back as an :class:`Encoded`: its documents' ids
laid out per split with a separator before every document, ready for the shard writers.
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
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

import tokenizer as tk
from preprocess import readers


@dataclass
class Batch:
    """Consecutive items of one input, in order, plus what ends the batch. Either

    * records read here (parquet, txt, hf:): ``texts`` and ``ids``; ``positions[k]`` is the index
      (among all records and skips the reader yielded for this input) of document ``k``, and ``end``
      how many of those items have been consumed after this batch; or
    * ``raw``, whole JSONL lines for a worker to parse (:func:`readers.line_chunks`): its items are
      counted there, and ``first_line``, ``byte_end`` and ``line_end`` place it in the input.
    """
    input_index: int
    texts: list[str] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)
    positions: list[int] = field(default_factory=list)
    skipped: list[tuple[int, str]] = field(default_factory=list)
    end: int = 0
    done: bool = False        # the input was read to its end
    bad: str | None = None    # the input failed: the error
    raw: bytes | None = None
    first_line: int = 0       # lines of the input before this chunk
    byte_end: int = 0         # decompressed bytes of the input read after this chunk
    line_end: int = 0         # lines of the input read after this chunk


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
    # raw batches only, from the worker that parsed the lines:
    items: int = 0                                    # records and skips in the chunk
    positions: np.ndarray | None = None               # (n_docs,) each document's item index in the chunk
    skipped: list = field(default_factory=list)       # [(item index in the chunk, readers.Skipped)]


def split_is_val(key: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") < val_fraction * 2.0 ** 64


def _encode(encoder: tk.Encoder, texts: list[str], ids: list[str | None], val_fraction: float,
            np_dtype: np.dtype, eot: int) -> Encoded:
    """Encode one batch: repair lone surrogates, pick each document's split, and lay the ids out per
    split with a separator before every document."""
    repaired, text_bytes, is_val, clean = 0, 0, [], []
    for text, doc_id in zip(texts, ids):
        try:
            text_bytes += len(text.encode("utf-8"))
        except UnicodeEncodeError:  # lone surrogates, the only str that is not UTF-8; rare, so checked last
            text, n = tk.repair_surrogates(text)
            repaired += n
            text_bytes += len(text.encode("utf-8"))
        clean.append(text)
        is_val.append(val_fraction > 0 and split_is_val(doc_id if doc_id is not None else text, val_fraction))
    encoded = encoder.encode_batch(clean, arrays=True)
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    if encoder.engine == "tiktoken" and encoded:  # uint32 arrays (lists where a text holds a special token)
        flat = np.concatenate(encoded, dtype=np_dtype, casting="unsafe")  # ids < vocab size fit np_dtype
    else:
        flat = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np_dtype, count=int(lengths.sum()))
    # a separator before every document, then each split's documents, in stream order
    stream = np.insert(flat, np.cumsum(lengths) - lengths, np_dtype.type(eot))
    val = np.array(is_val, dtype=bool)
    in_val = np.repeat(val, lengths + 1)
    tokens = {"train": stream[~in_val], "val": stream[in_val]} if val.any() else {"train": stream,
                                                                                  "val": stream[:0]}
    return Encoded(tokens, lengths, val, repaired, text_bytes)


# -- worker processes ------------------------------------------------------------------------------
# Processes, not threads: tiktoken releases the GIL only inside its BPE loop, and building the ids'
# Python ints holds it, so two threads reached 1.25x one thread where two processes reach 1.7x.

_WORKER: dict = {}


def _set_worker(encoder: tk.Encoder, val_fraction: float, np_dtype: np.dtype, eot: int) -> None:
    _WORKER.update(encoder=encoder, val_fraction=val_fraction, np_dtype=np_dtype, eot=eot)


def _worker_init(*settings) -> None:
    _set_worker(*settings)
    parent = os.getppid()

    def watch() -> None:  # a worker must not outlive a build killed with kill -9
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def _encode_lines(encoder: tk.Encoder, raw: bytes, first_line: int, text_field: str, val_fraction: float,
                  np_dtype: np.dtype, eot: int) -> Encoded:
    """Parse a chunk of JSONL lines (as the readers do) and encode its documents."""
    items = readers.parse_lines(raw, first_line, text_field)
    texts, ids, positions, skipped = [], [], [], []
    for k, item in enumerate(items):
        if type(item) is readers.Record:
            texts.append(item.text)
            ids.append(item.id)
            positions.append(k)
        else:
            skipped.append((k, item))
    enc = _encode(encoder, texts, ids, val_fraction, np_dtype, eot)
    enc.items, enc.positions, enc.skipped = len(items), np.array(positions, dtype=np.int64), skipped
    return enc


def _empty(np_dtype: np.dtype) -> Encoded:
    none = np.zeros(0, dtype=np_dtype)
    return Encoded({"train": none, "val": none}, np.zeros(0, np.int64), np.zeros(0, bool), 0, 0,
                   positions=np.zeros(0, np.int64))


def _worker_encode(texts: list[str], ids: list[str | None]) -> Encoded:
    w = _WORKER
    return _encode(w["encoder"], texts, ids, w["val_fraction"], w["np_dtype"], w["eot"])


def _worker_encode_lines(raw: bytes, first_line: int, text_field: str) -> Encoded:
    w = _WORKER
    return _encode_lines(w["encoder"], raw, first_line, text_field, w["val_fraction"], w["np_dtype"], w["eot"])


def _job(b: Batch, text_field: str) -> tuple | None:
    """The worker call that encodes ``b``; None for an input's end or failure, which carry no documents."""
    if b.raw:
        return _worker_encode_lines, (b.raw, b.first_line, text_field)
    if b.texts:
        return _worker_encode, (b.texts, b.ids)
    return None


def encode_in_order(batches: Iterable[Batch], encoder: tk.Encoder, val_fraction: float, np_dtype: np.dtype,
                    eot: int, workers: int, text_field: str) -> Iterator[tuple[Batch, Encoded]]:
    """``(batch, encoded)`` in input order. With one worker all in this process; with more, ``workers``
    processes parse and encode while this one reads and writes, up to 2*workers+1 batches in flight."""
    settings = (encoder, val_fraction, np_dtype, eot)
    if workers <= 1:
        _set_worker(*settings)  # this process is the worker
        for b in batches:
            job = _job(b, text_field)
            yield b, job[0](*job[1]) if job else _empty(np_dtype)
        return
    # fork on Linux: workers start in milliseconds with the encoder already built (spawn costs ~0.35 s
    # of imports and tokenizer rebuilding per worker). HF tokenizers turns its own thread pool off in a
    # forked child, which is right here (the processes are the parallelism); the variable only keeps
    # it from warning about that.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    context = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
    ex = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=settings)
    try:
        inflight: deque = deque()
        for b in batches:
            job = _job(b, text_field)
            inflight.append((b, ex.submit(job[0], *job[1]) if job else None))  # no round trip without work
            if len(inflight) > 2 * workers:
                item, fut = inflight.popleft()
                yield item, fut.result() if fut is not None else _empty(np_dtype)
        while inflight:
            item, fut = inflight.popleft()
            yield item, fut.result() if fut is not None else _empty(np_dtype)
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
