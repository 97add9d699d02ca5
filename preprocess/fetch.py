"""Fetching the URLs of a build: each byte once, in growing ranges, through a spool in the build directory.

A sampled build reads the start of some files more than once: the tokenizer sample reads it, the
measurement of tokens per byte reads it again, then the main pass reads on as far as the build keeps.
:class:`Fetcher` makes them share one download. ``open(url)`` gives a URL's bytes from its first byte:
first those an earlier reader already fetched (its *spool*, ``OUT/.build/fetched/``), then the network
from where the spool ends, appending every byte to the spool as it arrives. The build releases a
file's spool once the main pass is done with it and the saved state is past it, and the rest goes with
``.build`` when the dataset is finished. A rerun after kill -9 reads the spool, so it fetches again
only what was in flight. A spool rather than an order of work in which the main pass continues the
sample's connections: the main pass needs the tokenizer, which needs the whole sample first, and a
connection left waiting through tokenizer training (minutes to an hour) would not survive it; nor
would the bytes read by a killed build.

Ranges. A file is read in ranges that start at RANGE_FIRST (16 KiB) and double up to RANGE_CAP
(256 MiB): a range is never larger than what was read of the file before it, so a reader that stops
early (the tokenizer sample, a file cut at its token budget) has asked for at most about twice what it
read, and the last request overshoots by at most one range (a reader that stops closes its connection,
so the server may not even send all of it, but a fast link's buffers take most of a range at once).
A reader that knows how far it will read gives a ``hint``: ranges go straight to it (a whole file:
ranges of RANGE_CAP from the start; a file cut at its budget: to a little before where the cut is
expected; the tokenizer sample: to a little before where its share of text is expected to end), and
past it they start again at RANGE_FIRST and double, so a cut costs what was read past
the hint twice at most, not what was read of the file. The cap keeps a 2 GB file at 8 requests, each
long enough that a far server's round trip (0.1-0.2 s) costs little against its transfer (2 s at
1 Gbit/s), while no single request runs for a whole file. A server that ignores Range answers the
first range with the whole file (status 200): its host is noted, and from then on each of its files
is read with one streamed GET. When a reader that the build will follow with another (``come_back``:
the sample, the measurement) stops early, the rest of the response it was reading goes into the spool
there and then: the rest of a range (bounded as above), or, from a server that ignores Range, the rest
of the file, since reading on later would mean downloading it again from byte 0; so each file of such
a server is downloaded once.

One version of each file. Every response is compared with the first one the spool recorded: size
(Content-Range's total or Content-Length), ETag, Last-Modified; ``If-Range`` carries a strong ETag
(or the Last-Modified date) where there is one, so that a changed file comes back whole (200) with
other validators. Without a strong ETag, every request after the first starts OVERLAP bytes before
the point it continues from, and those bytes are compared with what was fetched before, which
catches a changed file that has no validators. A difference raises ``ChangedInput`` and drops the
spool: the file is read again from its start, never spliced. A partial spool is checked that way
(or with a one-byte conditional request) before any of it is given.

Retries, patience and stalls are ``preprocess/http.py``'s; ``downloaded`` counts every body byte
received (overlaps and re-sent prefixes included), for the build's summary.
"""
from __future__ import annotations

import errno
import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import shards
from preprocess import http
from preprocess.errors import BadInputFile, ChangedInput

RANGE_FIRST = 16 << 10
RANGE_CAP = 256 << 20
OVERLAP = 4096          # bytes before the continuation point a later request repeats, without a strong ETag
SPOOL_PIECE = 1 << 20   # the pieces a spool is read back in
DECODED_ENCODINGS = (None, "identity", "gzip", "x-gzip")  # gzip is recognised in the bytes and inflated


class Fetcher:
    """Reads URLs for one build (see the module docstring). ``spool``: the directory holding what was
    fetched (None: nothing is kept beyond what a check needs, for tools and tests); ``log``: told of
    each failed request and the wait before the next."""

    def __init__(self, retry: http.Retry | None = None, spool: Path | None = None,
                 log: Callable[[str], None] | None = None):
        self.retry = retry or http.Retry()
        self.log = log
        self.spool = Path(spool) if spool is not None else None
        self.downloaded = 0
        self._no_range: set[str] = set()   # hosts that answered a range with the whole file
        self._open: set[str] = set()
        self._released: set[str] = set()  # released while open: deleted when closed
        self._lock = threading.Lock()

    # -- the spool ---------------------------------------------------------------------------------

    def _stem(self, url: str) -> Path | None:
        if self.spool is None:
            return None
        return self.spool / hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def release(self, url: str) -> None:
        """The build is done with ``url``: delete its spool (when its reader closes, if one is open)."""
        if url in self._open:
            self._released.add(url)
        else:
            _Spool(self._stem(url), url).drop()

    def release_all_but(self, urls: set[str]) -> None:
        """Delete the spool of every URL not in ``urls`` (fetched by the sample or the measurement but
        not read by this build's main pass)."""
        if self.spool is None or not self.spool.is_dir():
            return
        for meta in self.spool.glob("*.json"):
            try:
                url = json.loads(meta.read_text(encoding="utf-8"))["url"]
            except (OSError, ValueError, KeyError):
                url = None
            if url not in urls and url not in self._open:
                meta.unlink(missing_ok=True)
                meta.with_suffix(".data").unlink(missing_ok=True)

    # -- reading -----------------------------------------------------------------------------------

    def range_file(self, url: str) -> http.RangeFile:
        """A seekable file over range requests (parquet), its bytes counted in ``downloaded``."""
        def count(n: int) -> None:
            self.downloaded += n
        return http.RangeFile(url, self.retry, on_bytes=count)

    def info(self, url: str) -> dict:
        """What the first response for ``url`` said (size, ETag, Content-Type, Content-Encoding...);
        empty before one came."""
        return dict(_Spool(self._stem(url), url).meta or {})

    def open(self, url: str, come_back: bool = False, hint: int | None = None) -> Iterator[bytes]:
        """The bytes of ``url`` from its first byte, from the spool then the network. ``come_back``: the
        reader may stop early and the build will read the file again; ``hint``: the reader expects to
        read about this many bytes (see the module docstring)."""
        with self._lock:
            if url in self._open:
                raise RuntimeError(f"{url} is already being read")  # one reader per URL at a time, by design
            self._open.add(url)
        spool = _Spool(self._stem(url), url)
        try:
            yield from self._read(url, spool, come_back, hint or 0)
        finally:
            spool.close()
            with self._lock:
                self._open.discard(url)
            if url in self._released:
                self._released.discard(url)
                spool.drop()

    def _ranged(self, url: str) -> bool:
        return urlsplit(url).netloc not in self._no_range

    def _read(self, url: str, spool: _Spool, come_back: bool, hint: int) -> Iterator[bytes]:
        if spool.complete():
            yield from spool.chunks(0)
            return
        pos = 0  # the next byte to give the reader
        # a spool left by an earlier reader is checked against the server before any of it is given
        checked = not spool.length
        patience = http.Patience(self.retry, url, self.log)
        while True:
            size = spool.size()
            if size is not None and pos >= size:
                return
            if checked and pos < spool.length:
                for piece in spool.chunks(pos):
                    pos += len(piece)
                    yield piece
                continue
            ranged = self._ranged(url)
            if not ranged:
                start, end = 0, None
            elif not checked:  # only the bytes before the spool's end, to compare; then the spool is given
                start, end = max(0, spool.length - spool.overlap()), spool.length
            else:
                # to the hint, then never more than was read past it
                step = min(RANGE_CAP, max(RANGE_FIRST, hint - pos if pos < hint else pos - hint))
                start, end = max(0, pos - spool.overlap()), pos + step if size is None else min(pos + step, size)
            headers = http.range_header(start, end) if ranged else {}
            if ranged and spool.strong_validator():
                headers["If-Range"] = spool.strong_validator()
            fresh = False  # new bytes in this try: progress for the patience, unless the try ends in a stall
            try:
                with http.request(url, headers, self.retry) as resp:
                    info = http.response_info(resp)
                    why = spool.differs(info)
                    if why:
                        spool.drop()
                        raise ChangedInput(url, f"the file changed on the server while it was read ({why})",
                                           "it is read again from its start")
                    if ranged and resp.status == 200:  # the server ignores Range: this is the whole file
                        self._no_range.add(urlsplit(url).netloc)
                        start, end, ranged = 0, None, False
                    elif resp.status == 206 and (http.content_range(resp) or (None,))[0] != start:
                        raise BadInputFile(url, f"asked for bytes from {start:,}, the server sent Content-Range "
                                                f"{resp.headers.get('Content-Range')!r}", "try again later")
                    if info["content_encoding"] not in DECODED_ENCODINGS:
                        raise BadInputFile(url, f"the server sends it with Content-Encoding: "
                                                f"{info['content_encoding']}, which the reader does not decode",
                                           "download it with a tool that decodes it and pass the local file")
                    spool.remember(info)
                    checked = checked or not ranged  # a whole file is compared with the spool as it comes
                    carried = http.body_end(resp, start)
                    if carried is not None and spool.size() is not None:
                        carried = min(carried, spool.size())  # a range past the file's end is cut to it
                    offset = start  # of the next byte of the body
                    try:
                        for data in http.body(resp, self.retry):
                            self.downloaded += len(data)
                            had = spool.length
                            spool.take(offset, data)  # compares what the spool holds, appends the rest
                            offset += len(data)
                            fresh = fresh or spool.length > had  # new bytes, not the repeated ones
                            if checked and offset > pos:
                                piece = data[max(0, pos - (offset - len(data))):]
                                pos = offset
                                yield piece
                    except GeneratorExit:
                        if come_back:  # the build reads on later: keep what is already on its way
                            self._read_rest(resp, spool, offset)
                        raise
                    if fresh:
                        patience.progressed()
                    if carried is not None and offset < carried:
                        raise http.Transient(f"connection closed at byte {offset:,} of {carried:,}")
                    if not checked:
                        checked = True
                    elif carried is None or not ranged:
                        return  # no length given, or the whole file: the end of the body is the file's end
                    elif spool.size() is None and offset < end:
                        return  # a range cut short where the file ends
            except http.Transient as e:
                if fresh and not e.stall:
                    patience.progressed()
                patience.wait(e, f"at byte {pos:,}", "the build is saved: run the same command again when the server "
                                                     "answers (--network-patience waits longer)")

    def _read_rest(self, resp, spool: _Spool, offset: int) -> None:
        """Read the rest of a response into the spool, for a reader that stopped early but whose file
        the build reads again: the rest of a range (no more than what was read before it, or to the
        hint), which a fast link has mostly delivered already, or the rest of the file from a server
        that ignores Range, which could not be fetched later without starting again at byte 0. A
        failure leaves the spool as far as it got: the next reader goes on from there."""
        try:
            for data in http.body(resp, self.retry):
                self.downloaded += len(data)
                spool.take(offset, data)
                offset += len(data)
        except (http.Transient, ChangedInput):
            pass


class _Spool:
    """What was fetched of one URL: ``STEM.data`` (its bytes from byte 0, appended as they arrive) and
    ``STEM.json`` (the URL and what its first response said). Without a stem only the length and the
    last OVERLAP bytes are kept, in memory, for the checks of one open."""

    def __init__(self, stem: Path | None, url: str):
        self.stem, self.url = stem, url
        self.meta: dict | None = None
        self.length = 0
        self._tail = b""
        self._out = None
        if stem is not None and stem.with_suffix(".json").exists():
            try:
                meta = json.loads(stem.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = None
            data = stem.with_suffix(".data")
            if meta is not None and meta.get("url") == url and data.exists():
                self.meta, self.length = meta, data.stat().st_size
            else:
                self.drop()

    def size(self) -> int | None:
        return None if self.meta is None else self.meta.get("size")

    def complete(self) -> bool:
        return self.size() is not None and self.length >= self.size()

    def strong_validator(self) -> str | None:
        """A strong ETag or the Last-Modified date: what ``If-Range`` takes."""
        if self.meta is None:
            return None
        etag = self.meta.get("etag")
        if etag and not etag.startswith("W/"):
            return etag
        return self.meta.get("last_modified")

    def overlap(self) -> int:
        """Bytes a continuation repeats to compare: OVERLAP without a strong ETag, else one (a strong
        ETag is compared on every response, and If-Range makes a changed file come back whole)."""
        etag = (self.meta or {}).get("etag")
        return 1 if etag and not etag.startswith("W/") else OVERLAP

    def differs(self, info: dict) -> str | None:
        """Why a response is not of the version of the file the spool holds, or None."""
        if self.meta is None:
            return None
        for key, name in (("size", "size"), ("etag", "ETag"), ("last_modified", "Last-Modified")):
            if self.meta.get(key) is not None and info.get(key) is not None and self.meta[key] != info[key]:
                return f"its {name} was {self.meta[key]!r}, now {info[key]!r}"
        return None

    def remember(self, info: dict) -> None:
        if self.meta is not None:
            return
        self.meta = {"url": self.url, **info}
        if self.stem is not None:
            self.stem.parent.mkdir(parents=True, exist_ok=True)
            shards.write_json_atomic(self.stem.with_suffix(".json"), self.meta)

    def take(self, offset: int, data: bytes) -> None:
        """Bytes of the file at ``offset``: those the spool holds are compared with it (ChangedInput when
        they differ), the rest appended."""
        end = offset + len(data)
        # without a spool file only the last OVERLAP bytes can be compared (those a continuation repeats)
        lo = self.length - len(self._tail) if self.stem is None else 0
        skip = max(0, lo - offset)
        n = min(end, self.length) - offset - skip
        if n > 0:
            if self._read(offset + skip, n) != data[skip:skip + n]:
                self.drop()
                raise ChangedInput(self.url, f"the file changed on the server while it was read (bytes "
                                             f"{offset + skip:,} to {offset + skip + n:,} differ from those fetched "
                                             f"before)",
                                   "it is read again from its start")
        if end > self.length:
            new = data[self.length - offset:]
            if self.stem is not None:
                if self._out is None:
                    self._out = open(self.stem.with_suffix(".data"), "ab", buffering=0)  # noqa: SIM115
                try:
                    view = memoryview(new)
                    while view:  # unbuffered: what was received survives a kill -9
                        view = view[self._out.write(view):]
                except OSError as e:
                    if e.errno in (errno.ENOSPC, errno.EDQUOT):
                        raise shards.DiskFull(self.stem.with_suffix(".data"), len(new)) from None
                    raise
            self._tail = (self._tail + new)[-OVERLAP:]
            self.length = end

    def _read(self, offset: int, n: int) -> bytes:
        if self.stem is None:
            lo = self.length - len(self._tail)
            return self._tail[offset - lo:offset - lo + n]
        with open(self.stem.with_suffix(".data"), "rb") as f:
            f.seek(offset)
            return f.read(n)

    def chunks(self, start: int) -> Iterator[bytes]:
        """The spool's bytes from ``start`` to its end as it is now."""
        with open(self.stem.with_suffix(".data"), "rb") as f:
            f.seek(start)
            left = self.length - start
            while left > 0:
                piece = f.read(min(SPOOL_PIECE, left))
                if not piece:
                    return
                left -= len(piece)
                yield piece

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def drop(self) -> None:
        self.close()
        self.meta, self.length, self._tail = None, 0, b""
        if self.stem is not None:
            self.stem.with_suffix(".json").unlink(missing_ok=True)
            self.stem.with_suffix(".data").unlink(missing_ok=True)


def spool_dir(out: Path) -> Path:
    return Path(out) / shards.BUILD_DIR / "fetched"

