"""HTTP(S) with the standard library: requests, patience through outages, stalls, sizes, random access.

The pieces every reader of a URL shares. :func:`request` sends one GET (with a ``Range`` when asked)
and sorts failures into those worth another try (:class:`Transient`: a refused or reset connection,
5xx, 408/425/429, a timeout) and final ones (``BadInputFile``: 404 and the other client errors, which
retrying cannot help). :class:`Patience` decides how long to go on trying: a back-off that doubles
from ``Retry.backoff_s`` to ``Retry.max_backoff_s``, or as long as the server's ``Retry-After`` asks,
until ``Retry.patience_s`` has passed without a byte (10 minutes by default, ``--network-patience``):
then ``DownloadFailed`` names the URL, and the next run retries it. :func:`body` reads a response and
names a stall: no byte for ``Retry.timeout_s`` seconds (``--network-timeout``), or fewer than
``Retry.min_rate`` bytes per second over that long of waiting. Sizing a list of URLs with HEAD
(:func:`head_sizes`) rides out the same outages.

Reading a whole file for a build, once, through a spool, is ``preprocess/fetch.py``; :class:`RangeFile`
here gives formats that need random access (parquet) a seekable file over range requests.
"""
from __future__ import annotations

import email.utils
import http.client
import io
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from preprocess.errors import BadInputFile, DownloadFailed

USER_AGENT = "memmap-gpt-preprocess (urllib)"
# Statuses worth retrying: the server or a proxy is busy or briefly broken.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_HINTS = {404: "check the URL (the file list may be out of date)", 401: "the server wants credentials",
          403: "access denied; check the URL and credentials", 416: "the server refused the byte range"}


@dataclass(frozen=True)
class Retry:
    """How long to keep trying a URL. Defaults suit a far server that has outages of minutes."""
    patience_s: float = 600.0   # give up after this long without a byte of progress (--network-patience)
    backoff_s: float = 1.0      # wait before the 2nd try; doubles with each failure, up to max_backoff_s
    max_backoff_s: float = 60.0
    timeout_s: float = 60.0     # no byte for this long is a stall (--network-timeout); also the connect timeout
    min_rate: float = 4096.0    # bytes/s: fewer than this over timeout_s seconds of waiting is a stall
    attempts: int | None = None  # give up after this many failures in a row as well (None: patience only)


class Transient(Exception):
    """A failure worth another try; ``retry_after``: the seconds the server asked to wait, if it did;
    ``stall``: the connection gave too little (what it gave is not progress for the patience)."""

    def __init__(self, message: str, retry_after: float | None = None, stall: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.stall = stall


class Patience:
    """The retry loop's clock for one URL: how long since the last byte, how many failures in a row.
    ``log``: told of each failure and the wait before the next try."""

    def __init__(self, retry: Retry, url: str, log: Callable[[str], None] | None = None):
        self.retry, self.url, self.log = retry, url, log
        self.since = time.monotonic()
        self.failures = 0

    def progressed(self) -> None:
        self.since = time.monotonic()
        self.failures = 0

    def wait(self, error: Transient, where: str, remedy: str) -> None:
        """Sleep before the next try, or raise DownloadFailed when the patience (or the attempts) would
        run out first. ``where`` says what was being done, e.g. "at byte 1,048,576"."""
        r = self.retry
        self.failures += 1
        waited = time.monotonic() - self.since
        delay = min(r.backoff_s * 2 ** (self.failures - 1), r.max_backoff_s)
        if error.retry_after is not None:
            delay = max(delay, error.retry_after)
        if (r.attempts is not None and self.failures >= r.attempts) or waited + delay > r.patience_s:
            asked = (f", the server asked to wait {error.retry_after:,.0f} s more" if error.retry_after is not None
                     and waited + error.retry_after > r.patience_s else "")
            raise DownloadFailed(self.url, f"no progress {where} for {waited:,.0f} s ({self.failures} failed tries; "
                                           f"last error: {error}{asked})", remedy)
        if self.log is not None:
            self.log(f"{self.url}: {error} ({where}); trying again in {delay:,.1f} s "
                     f"({waited:,.0f} of {r.patience_s:,.0f} s of --network-patience used)")
        time.sleep(delay)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number of seconds, or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def describe(e: BaseException) -> str:
    if isinstance(e, urllib.error.URLError) and not isinstance(e.reason, str):
        e = e.reason
    if isinstance(e, TimeoutError):
        return "no answer within the network timeout"
    return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__


def request(url: str, headers: dict[str, str], retry: Retry, method: str = "GET") -> http.client.HTTPResponse:
    """One request; a failure worth another try raises Transient, a final one BadInputFile."""
    req = urllib.request.Request(url, method=method,
                                 headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers})
    try:
        return urllib.request.urlopen(req, timeout=retry.timeout_s)
    except urllib.error.HTTPError as e:
        after = _retry_after(e.headers.get("Retry-After")) if e.headers is not None else None
        e.close()
        if e.code in RETRY_STATUS:
            raise Transient(f"HTTP {e.code} {e.reason}", after) from None
        hint = _HINTS.get(e.code, "check the URL")
        raise BadInputFile(url, f"HTTP {e.code} {e.reason}" + (" (asking its size)" if method == "HEAD" else ""),
                           f"{hint}, or pass --skip-bad-files") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        raise Transient(describe(e)) from None


def range_header(start: int, end: int | None) -> dict[str, str]:
    """The Range header for bytes [start, end) (to the file's end when ``end`` is None)."""
    return {"Range": f"bytes={start}-" + ("" if end is None else str(end - 1))}


def content_range(resp) -> tuple[int, int, int | None] | None:
    """(first byte, exclusive end, total size or None) of a 206 response, None when it has none."""
    m = CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", "").strip())
    if not m:
        return None
    return int(m.group(1)), int(m.group(2)) + 1, None if m.group(3) == "*" else int(m.group(3))


def response_info(resp) -> dict:
    """What identifies the file a response carries: its size (Content-Range's total, or a 200's
    Content-Length), ETag, Last-Modified, and how it is served (Content-Type, Content-Encoding)."""
    if resp.status == 206:
        rng = content_range(resp)
        size = rng[2] if rng else None
    else:
        length = resp.headers.get("Content-Length")
        size = int(length) if length and length.isdigit() else None
    encoding = (resp.headers.get("Content-Encoding") or "").strip().lower() or None
    return {"size": size, "etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified"),
            "content_type": resp.headers.get("Content-Type"), "content_encoding": encoding}


def body_end(resp, start: int) -> int | None:
    """Exclusive end (absolute byte) of what a response starting at ``start`` carries, when it says."""
    if resp.status == 206:
        rng = content_range(resp)
        return rng[1] if rng else None
    length = resp.headers.get("Content-Length")
    return start + int(length) if length and length.isdigit() else None


def body(resp, retry: Retry, piece: int = 1 << 20) -> Iterator[bytes]:
    """The body of ``resp`` as it arrives. A stall raises Transient: no byte for ``timeout_s`` (the
    socket's timeout), or fewer than ``min_rate`` bytes per second over ``timeout_s`` seconds spent
    waiting for data (time the caller spends with the bytes does not count)."""
    waited, got = 0.0, 0
    while True:
        t0 = time.monotonic()
        try:
            data = resp.read1(piece)
        except TimeoutError:
            raise Transient(f"stalled: no byte for {retry.timeout_s:g} s", stall=True) from None
        except (OSError, http.client.HTTPException) as e:
            raise Transient(describe(e)) from None
        waited += time.monotonic() - t0
        if not data:
            return
        got += len(data)
        if waited >= retry.timeout_s:
            if got < retry.min_rate * waited:
                raise Transient(f"stalled: {got:,} bytes in {waited:.0f} s, below the floor of "
                                f"{retry.min_rate:,.0f} bytes/s", stall=True)
            waited, got = 0.0, 0
        yield data


def fetch_range(url: str, start: int, end: int, retry: Retry, on_bytes: Callable[[int], None] | None = None,
                ) -> bytes:
    """The bytes [start, end) of ``url``, with patience (a cut response is continued where it broke)."""
    out = bytearray()
    patience = Patience(retry, url)
    while start + len(out) < end:
        pos = start + len(out)
        try:
            with request(url, range_header(pos, end), retry) as resp:
                skip = 0
                if resp.status == 206:
                    rng = content_range(resp)
                    if rng is None or rng[0] != pos:
                        raise BadInputFile(url, f"asked for bytes from {pos:,}, the server sent Content-Range "
                                                f"{resp.headers.get('Content-Range')!r}", "try again later")
                elif pos:
                    skip = pos  # a server that ignores Range sends the file from its start
                for data in body(resp, retry):
                    if on_bytes is not None:
                        on_bytes(len(data))
                    if skip:
                        cut = min(skip, len(data))
                        data, skip = data[cut:], skip - cut
                    out += data[:end - start - len(out)]
                    patience.progressed()
                    if start + len(out) >= end:
                        break
                else:
                    if start + len(out) < end:
                        if body_end(resp, pos) is not None and body_end(resp, pos) <= start + len(out):
                            break  # the file ends before `end`
                        raise Transient(f"connection closed at byte {start + len(out):,}")
        except Transient as e:
            patience.wait(e, f"at byte {start + len(out):,}", "check the network and run the same command again")
    return bytes(out)


def probe(url: str, retry: Retry | None = None) -> int | None:
    """Check that ``url`` can be read (its first byte is fetched); its size when the server says."""
    retry = retry or Retry(patience_s=20.0, timeout_s=20.0)
    patience = Patience(retry, url)
    while True:
        try:
            with request(url, range_header(0, 1), retry) as resp:
                resp.read(1)
                return response_info(resp)["size"]
        except Transient as e:
            patience.wait(e, "opening it", "check the URL and the network, or use --fallback-input")


def _head_size(url: str, retry: Retry) -> int | None:
    """The size the server gives for ``url`` (HEAD; a server that refuses HEAD is asked for one byte)."""
    patience = Patience(retry, url)
    while True:
        try:
            try:
                with request(url, {}, retry, method="HEAD") as resp:
                    return response_info(resp)["size"]
            except BadInputFile as e:
                if not e.problem.startswith(("HTTP 405", "HTTP 501")):
                    raise
            return probe(url, retry)  # HEAD not allowed: ask for the first byte instead
        except Transient as e:
            patience.wait(e, "asking its size (HEAD)", "the plan needs every file's size: run the same command "
                                                       "again when the server answers (--network-patience waits "
                                                       "longer)")


def head_sizes(urls: list[str], retry: Retry | None = None, in_flight: int = 64) -> list:
    """The size of every URL (bytes, or None when the server does not say), asked with ``in_flight``
    HEAD requests at a time, in the order given. A URL the server refuses (404, 403, ...) gives its
    BadInputFile; one that does not answer within the patience, its DownloadFailed.

    A list of 2,400 URLs on a server 100 ms away plans in about 4 s (2,400 / 64 x 0.1 s)."""
    from concurrent.futures import ThreadPoolExecutor

    retry = retry or Retry()

    def one(url: str):
        try:
            return _head_size(url, retry)
        except (BadInputFile, DownloadFailed) as e:
            return e

    if not urls:
        return []
    with ThreadPoolExecutor(min(in_flight, len(urls)), thread_name_prefix="head") as pool:
        return list(pool.map(one, urls))


class RangeFile(io.RawIOBase):
    """A read-only, seekable file over HTTP range requests, for formats that need random access
    (parquet reads its footer first, then one column chunk at a time). ``on_bytes(n)`` is told of
    every body byte received."""

    def __init__(self, url: str, retry: Retry | None = None, on_bytes: Callable[[int], None] | None = None):
        super().__init__()
        self.url = url
        self.retry = retry or Retry()
        self.on_bytes = on_bytes
        self.size = probe(url, self.retry)
        if self.size is None:
            raise BadInputFile(url, "the server does not say how large the file is, so it cannot be read in pieces",
                               "download it and pass the local path")
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def readinto(self, b) -> int:
        end = min(self.pos + len(b), self.size)
        if end <= self.pos:
            return 0
        data = fetch_range(self.url, self.pos, end, self.retry, self.on_bytes)
        with memoryview(b) as view:
            view[:len(data)] = data
        self.pos += len(data)
        return len(data)
