"""Batches of token windows from the memmapped shards of a dataset directory.

Each shard's tokens are cut into windows of ``seq_len + 1`` tokens that start every ``seq_len``
tokens (window ``j`` is ``tokens[j*seq_len : (j+1)*seq_len + 1]``: inputs are its first ``seq_len``
tokens, targets its last ``seq_len``), so every token but a shard's first is a target exactly once
per epoch. The tail of a shard too short for a whole window is dropped. Windows are numbered across
shards in manifest order.

Training walks a seeded permutation of all windows, a new one per epoch. The whole state is
``(seed, epoch, position)``, ``position`` counting windows of the permutation already consumed by
all processes together. A micro-batch of all processes is ``perm[position : position + batch_size *
world_size]`` and rank ``r`` takes every ``world_size``-th window of it starting at ``r``: ranks read
disjoint windows, together they read the same ones as a single process. An optimizer step reads
``step_windows`` (the global batch) windows in a row, whatever the number of processes and micro-batches
it is split into, and an epoch ends when the next step's windows would run past the last window (the
remainder of that permutation is skipped): so 2 processes x accumulation k read exactly what 1 process
x accumulation 2k reads, and a checkpoint resumes exactly with any number of processes.

Memory: shards are mapped once. Pages that random reads touch count toward the process's RSS, so
after every ``release_bytes`` of reads the mappings are ``madvise(MADV_DONTNEED)``-ed: the pages
leave this process (they stay in the OS page cache), and RSS stays bounded over any number of batches.

Batches are gathered in a background thread (one fancy index on a strided window view per shard, no
per-window Python loop) into a ring of pinned int64 buffers and copied to the device with ``non_blocking=True``.

Trust, but check what is mapped: each shard's size must match its manifest entry when it is opened,
and every gathered batch must hold ids below ``vocab_size`` (one ``max()`` over the batch, in the
loader thread). A shard damaged after the build is then a DatasetError naming the file and what to
run (``python tools/inspect_shards.py verify DIR``), not an IndexError in the embedding (or a device
assert on CUDA) mid-run.
"""
from __future__ import annotations

import mmap
import queue
import threading
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

import shards

FAULT_AROUND_BYTES = 64 << 10  # Linux default (/sys/kernel/debug/fault_around_bytes)
IGNORE_TARGET = -100  # F.cross_entropy's default ignore_index: a padded row of a val batch counts for nothing


class TokenWindows:
    """The ``seq_len + 1``-token windows of one split, gathered from the shard memmaps."""

    def __init__(self, data_dir: str | Path, manifest: dict, split: str, seq_len: int,
                 release_bytes: int = 256 << 20):
        self.data_dir = Path(data_dir)
        self.seq_len = seq_len
        self.release_bytes = release_bytes
        self._touched = 0
        self.vocab_size = int(manifest["vocab_size"])
        itemsize = shards.numpy_dtype(manifest["dtype"]).itemsize
        # ids of this dtype can reach vocab_size (uint16 holds up to 65535): only then is a batch checked
        self.check_ids = self.vocab_size < 1 << (8 * itemsize)
        self.tokens: list[np.ndarray] = []
        self.views: list[np.ndarray] = []
        self.files: list[Path] = []
        counts = []
        for entry in shards.split_shards(manifest, split):
            path = shards.shard_path(data_dir, entry)
            if path.exists() and path.stat().st_size != entry["tokens"] * itemsize:
                raise shards.DatasetError(
                    f"{path} holds {path.stat().st_size:,} bytes, but the manifest lists {entry['tokens']:,} "
                    f"{manifest['dtype']} tokens ({entry['tokens'] * itemsize:,} bytes): the shard was truncated or "
                    f"overwritten after the build. {self._what_to_do()}")
            tokens = shards.open_tokens(data_dir, entry, manifest["dtype"])
            n = shards.window_count(len(tokens), seq_len)
            if n == 0:
                continue
            self.files.append(path)
            if isinstance(tokens.base, mmap.mmap):
                tokens.base.madvise(mmap.MADV_RANDOM)  # no readahead into this process for random windows
            self.tokens.append(tokens)
            # (n, T+1) strided view of the windows, no copy: a batch is one fancy index on its rows,
            # which copies whole rows (3x faster than gathering an (n, T+1) index array of positions)
            self.views.append(sliding_window_view(tokens, seq_len + 1)[::seq_len][:n])
            counts.append(n)
        self.counts = np.asarray(counts, dtype=np.int64)
        self.first = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)  # first window id per shard
        self.n_windows = int(self.first[-1])

    def gather(self, window_ids: np.ndarray, out: np.ndarray) -> None:
        """Write windows ``window_ids`` (n,) into ``out`` (n, seq_len + 1), any integer dtype."""
        window_ids = np.asarray(window_ids, dtype=np.int64)
        shard = np.searchsorted(self.first, window_ids, side="right") - 1  # (n,)
        local = window_ids - self.first[shard]                             # (n,) window index in its shard
        if len(self.tokens) == 1 or (shard == shard[0]).all():
            out[:] = self.views[shard[0]][local]
        else:
            for s in np.unique(shard):
                rows = np.nonzero(shard == s)[0]
                out[rows] = self.views[s][local[rows]]
        if self.check_ids and len(out) and out.max() >= self.vocab_size:
            raise self._bad_ids(shard, local, out)
        # a window maps its own bytes plus up to FAULT_AROUND_BYTES around each page fault (Linux maps
        # neighbouring cached pages in on a read fault), so count that much per window
        self._touched += len(window_ids) * ((self.seq_len + 1) * self.tokens[0].itemsize + FAULT_AROUND_BYTES)
        if self._touched >= self.release_bytes:
            self.release()

    def _what_to_do(self) -> str:
        return (f"Check the whole dataset with `python tools/inspect_shards.py verify {self.data_dir}`, then "
                f"restore the damaged files or rebuild it with `python -m preprocess`")

    def _bad_ids(self, shard: np.ndarray, local: np.ndarray, out: np.ndarray) -> shards.DatasetError:
        """The error for a batch holding an id >= vocab_size, naming the first such token's shard and offset."""
        row = int(np.nonzero(out.max(axis=1) >= self.vocab_size)[0][0])
        col = int(np.argmax(out[row] >= self.vocab_size))
        offset = int(local[row]) * self.seq_len + col  # token index within the shard
        return shards.DatasetError(
            f"{self.files[shard[row]]} holds token id {int(out[row, col])} at token {offset:,}, but the vocabulary "
            f"has {self.vocab_size:,} ids (0..{self.vocab_size - 1:,}): the shard was changed after the build. "
            f"{self._what_to_do()}")

    def release(self) -> None:
        """Drop this process's mapped pages (they stay in the page cache; the next read maps them again)."""
        for tokens in self.tokens:
            if isinstance(tokens.base, mmap.mmap):
                tokens.base.madvise(mmap.MADV_DONTNEED)
        self._touched = 0


def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of the ``n`` windows in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng([seed, epoch]).permutation(n)


class Loader:
    """Training batches ``(x, y)``, each (batch_size, seq_len) int64 on ``device``; see the module docstring."""

    def __init__(self, data_dir: str | Path, manifest: dict, seq_len: int, batch_size: int, seed: int,
                 device: torch.device | str = "cpu", rank: int = 0, world_size: int = 1, prefetch: int = 4,
                 split: str = "train", release_bytes: int = 256 << 20, step_windows: int | None = None):
        self.windows = TokenWindows(data_dir, manifest, split, seq_len, release_bytes)
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.global_batch = batch_size * world_size  # one micro-batch of all processes
        self.step_windows = step_windows or self.global_batch  # one optimizer step: a multiple of global_batch
        if self.step_windows % self.global_batch:
            raise ValueError(f"step_windows {self.step_windows} is not a multiple of batch_size x world_size "
                             f"{self.global_batch}")
        if self.windows.n_windows < self.step_windows:
            raise shards.DatasetError(
                f"the {split} split of {data_dir} has {self.windows.n_windows} windows of seq_len + 1 = "
                f"{seq_len + 1} tokens, fewer than one global batch ({self.step_windows} sequences); "
                f"use a smaller training.global_batch_size (or batch_size) or model.seq_len, or a bigger dataset")
        self.seed, self.epoch, self.position = seed, 0, 0
        self.device = torch.device(device)
        self.prefetch = max(1, prefetch)
        self._perm_epoch, self._perm = -1, None
        self._thread: threading.Thread | None = None

    # ----------------------------------------------------------------------------------------------
    # state

    def state_dict(self) -> dict:
        """What the next batch depends on: the batch after ``load_state_dict(s)`` is the one after ``s``."""
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.close()
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])

    def windows_for(self, epoch: int, position: int) -> tuple[np.ndarray, int, int]:
        """(this rank's window ids of the batch at (epoch, position), next epoch, next position)."""
        n = self.windows.n_windows
        starts_step = position % self.step_windows == 0
        # (the second test only matters for a position saved by a loader that wrapped per micro-batch)
        if (starts_step and position + self.step_windows > n) or position + self.global_batch > n:
            epoch, position = epoch + 1, 0
        if epoch != self._perm_epoch:
            self._perm, self._perm_epoch = permutation(self.seed, epoch, self.windows.n_windows), epoch
        batch = self._perm[position: position + self.global_batch]
        return batch[self.rank:: self.world_size], epoch, position + self.global_batch

    # ----------------------------------------------------------------------------------------------
    # the background thread

    def _start(self) -> None:
        pin = self.device.type == "cuda"
        n_slots = self.prefetch + 2  # queued + the one being filled + the one the trainer holds
        shape = (self.batch_size, self.windows.seq_len + 1)
        self._buffers = [torch.empty(shape, dtype=torch.int64, pin_memory=pin) for _ in range(n_slots)]
        self._events = [None] * n_slots  # CUDA events: a slot's copy to the device has finished
        self._queue: queue.Queue = queue.Queue(maxsize=self.prefetch)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(self.epoch, self.position),
                                        name="loader", daemon=True)
        self._thread.start()
        self._slot = 0

    def _produce(self, epoch: int, position: int) -> None:
        slot = 0
        try:
            while not self._stop.is_set():
                ids, epoch, position = self.windows_for(epoch, position)
                if self._events[slot] is not None:
                    self._events[slot].synchronize()
                self.windows.gather(ids, self._buffers[slot].numpy())
                while not self._stop.is_set():
                    try:
                        self._queue.put((slot, epoch, position), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                slot = (slot + 1) % len(self._buffers)
        except BaseException as e:  # re-raised in the trainer's thread by next_batch
            self._queue.put(e)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._thread is None:
            self._start()
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        slot, self.epoch, self.position = item
        buf = self._buffers[slot]
        if self.device.type == "cuda":
            buf = buf.to(self.device, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            self._events[slot] = event
        return buf[:, :-1], buf[:, 1:]

    def close(self) -> None:
        if self._thread is not None:
            self._stop.set()
            while self._thread.is_alive():
                try:
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread = None


class ValWindows:
    """A fixed set of validation windows, evenly spread over the val split, the same at every evaluation."""

    def __init__(self, data_dir: str | Path, manifest: dict, seq_len: int, n_windows: int):
        self.windows = TokenWindows(data_dir, manifest, "val", seq_len)
        total = self.windows.n_windows
        self.ids = np.unique(np.linspace(0, total - 1, min(n_windows, total)).round().astype(np.int64)) \
            if total else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def batches(self, batch_size: int, device: torch.device, rank: int = 0, world_size: int = 1, pad: bool = False):
        """This rank's share (every world_size-th window) as (x, y) batches of up to ``batch_size``.

        With ``pad`` every batch has exactly ``batch_size`` rows, so a compiled model sees one shape (a
        short tail batch would compile a second, dynamic-shape graph): the rows past this rank's windows
        repeat the batch's first window with every target ``IGNORE_TARGET``, which the loss leaves out. The number
        of windows a batch covers is then ``(y[:, 0] != IGNORE_TARGET).sum()``."""
        mine = self.ids[rank::world_size]
        for i in range(0, len(mine), batch_size):
            ids = mine[i: i + batch_size]
            rows = batch_size if pad else len(ids)
            buf = np.empty((rows, self.windows.seq_len + 1), dtype=np.int64)
            self.windows.gather(ids, buf[:len(ids)])
            buf[len(ids):] = buf[0]
            t = torch.from_numpy(buf).to(device)
            x, y = t[:, :-1], t[:, 1:]
            if pad:  # y its own copy (x and y share the tokens: padded inputs stay ids), in every batch
                y = y.clone()  # alike, as a compiled graph checks strides too
                y[len(ids):] = IGNORE_TARGET
            yield x, y
