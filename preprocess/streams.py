"""Byte chains: a source (a local file or HTTP) yields raw bytes, a decompressor (gzip, zstd or none)
yields decompressed bytes, and ``MEMBER_END`` follows each gzip member or zstd frame that passed its
check. The same chain serves local files and URLs. Decompressed output comes in pieces of at most
``_OUT_CHUNK`` bytes, so one compressed chunk of highly repetitive text cannot expand into an
unbounded buffer."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from preprocess import http
from preprocess.errors import CorruptStream
from preprocess.inputs import InputFile, is_url

try:  # ISA-L inflates gzip about twice as fast as zlib, with the same interface and the same checks
    from isal import isal_zlib as inflate
except ImportError:  # no wheel for this platform: the standard library's zlib
    import zlib as inflate

_OUT_CHUNK = 4 << 20
_IN_CHUNK = 1 << 20


class _MemberEnd:
    """Yielded by a decompressor after each gzip member or zstd frame that ended and passed its check."""

    def __repr__(self) -> str:
        return "MEMBER_END"


MEMBER_END = _MemberEnd()
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _file_chunks(path: str) -> Iterator[bytes]:
    with open(path, "rb") as f:
        while chunk := f.read(_IN_CHUNK):
            yield chunk


def head_bytes(inp: InputFile, n: int) -> bytes:
    """The first ``n`` bytes of ``inp`` as stored (compressed), from the file or one range request."""
    if is_url(inp.path):
        return b"".join(http.stream(inp.path, start=0, end=n))
    with open(inp.path, "rb") as f:
        return f.read(n)


def what_it_is(head: bytes, content_type: str | None, wanted: str, url: bool) -> str:
    """Why ``head`` (the first bytes of a stream) is not ``wanted`` data, for a person."""
    shown = head[:60].decode("utf-8", "replace").replace("\n", " ")
    media = (content_type or "").split(";")[0].strip()
    html = head.lstrip()[:1] == b"<" or media in ("text/html", "application/xhtml+xml")
    if html:
        if url:
            return (f"the server sent an HTML page instead of {wanted} data (Content-Type: {content_type or 'none'}; "
                    f"it begins {shown!r}): look at the URL in a browser, it is an error or login page, not the file")
        return (f"is an HTML page, not {wanted} data (it begins {shown!r}): probably an error page saved by a "
                f"download tool")
    return f"corrupt {wanted} data (not a {wanted} stream: it begins {head[:8]!r})"


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes | _MemberEnd]:
    """Decompress a gzip stream of any number of members; the inflater checks each member's CRC and
    length, and ``MEMBER_END`` follows the last bytes of each member that passed.

    A decompress object (not ``gzip.GzipFile``) so that every byte decompressed before damage reaches
    the parser, and so the same code serves HTTP streams. Both libraries release the GIL while they work.
    """
    d = inflate.decompressobj(wbits=31)
    started = False  # bytes fed to the current member
    members = 0
    try:
        for data in chunks:
            while data:
                if d.eof:
                    if not started and not data.strip(b"\0"):
                        break  # trailing zero padding after the last member, as gzip(1) accepts
                    d = inflate.decompressobj(wbits=31)
                started = True
                out = d.decompress(data, _OUT_CHUNK)
                data = d.unconsumed_tail or d.unused_data
                if out:
                    yield out
                if d.eof:
                    started = False
                    members += 1
                    yield MEMBER_END
        if started and not d.eof:
            raise CorruptStream("truncated gzip file: the data ends before the end of the compressed stream")
    except inflate.error as e:
        raise CorruptStream(f"corrupt gzip data ({e})") from None
    if not members:
        raise CorruptStream("is empty: it holds no gzip data at all")


def _unzstd(chunks: Iterable[bytes]) -> Iterator[bytes | _MemberEnd]:
    """Decompress a zstd stream of any number of frames (Dolma's files may hold several); ``MEMBER_END``
    follows each frame that ended (and passed its checksum, when it has one)."""
    import zstandard

    # files written with `zstd --long` declare windows beyond the library's default 128 MB limit; the
    # format allows up to 2 GB, and a frame only takes the memory its window needs
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    d = dctx.decompressobj()
    started = False
    frames = 0
    try:
        for data in chunks:
            while data:
                if d.eof:
                    d = dctx.decompressobj()
                started = True
                out = d.decompress(data)
                data = d.unused_data if d.eof else b""
                if out:
                    yield out
                if d.eof:
                    started = False
                    frames += 1
                    yield MEMBER_END
        if started and not d.eof:
            raise CorruptStream("truncated zstd file: the data ends inside a compressed frame")
    except zstandard.ZstdError as e:
        raise CorruptStream(f"corrupt zstd data ({e})") from None
    if not frames:
        raise CorruptStream("is empty: it holds no zstd data at all")


def checked_start(chunks: Iterable[bytes], kind: str, info: dict, url: bool) -> Iterator[bytes]:
    """Pass a compressed stream through once its first bytes are the format's magic number; anything
    else (an HTML error page served with status 200, a text file) is named for what it is."""
    magic, wanted = (_GZIP_MAGIC, "gzip") if kind == "jsonl.gz" else (_ZSTD_MAGIC, "zstd")
    head = b""
    it = iter(chunks)
    for chunk in it:
        head += chunk
        if len(head) >= len(magic):
            break
    # zstd skippable frames (magic 0x184D2A5?) may come first
    if head and not (head.startswith(magic) or (wanted == "zstd" and head[1:4] == b"\x2a\x4d\x18"
                                                and head[0] & 0xF0 == 0x50)):
        raise CorruptStream(what_it_is(head, info.get("content_type"), wanted, url))
    if head:
        yield head
    yield from it


def _counted(chunks: Iterable[bytes], on_bytes: Callable[[int], None]) -> Iterator[bytes]:
    for chunk in chunks:
        on_bytes(len(chunk))
        yield chunk


def _source(inp: InputFile, retry: http.Retry | None, on_bytes, info: dict, early_stop: bool) -> Iterator[bytes]:
    if is_url(inp.path):
        raw = (http.stream_growing(inp.path, retry, info=info) if early_stop
               else http.stream(inp.path, retry=retry, info=info))
    else:
        raw = _file_chunks(inp.path)
    return _counted(raw, on_bytes) if on_bytes is not None else raw


def decompressed(chunks: Iterable[bytes], kind: str) -> Iterator[bytes]:
    """The decompressed bytes of raw ``chunks`` of an input of ``kind`` (the member ends left out)."""
    if kind == "jsonl.gz":
        return (b for b in _gunzip(chunks) if b is not MEMBER_END)
    if kind == "jsonl.zst":
        return (b for b in _unzstd(chunks) if b is not MEMBER_END)
    return iter(chunks)


def byte_chunks(inp: InputFile, retry: http.Retry | None = None, on_bytes: Callable[[int], None] | None = None,
                members: bool = False, early_stop: bool = False) -> Iterator[bytes | _MemberEnd]:
    """The decompressed bytes of a local or HTTP input, in chunks; ``on_bytes(n)`` is told of every
    ``n`` bytes read from the source (compressed bytes: what a progress bar over file sizes counts).
    With ``members``, ``MEMBER_END`` follows every gzip member or zstd frame that passed its check.
    ``early_stop``: the reader may stop long before the end, so a URL is fetched in growing ranges."""
    info: dict = {}
    raw = _source(inp, retry, on_bytes, info, early_stop)
    if inp.kind == "jsonl.gz":
        out = _gunzip(checked_start(raw, inp.kind, info, is_url(inp.path)))
    elif inp.kind == "jsonl.zst":
        out = _unzstd(checked_start(raw, inp.kind, info, is_url(inp.path)))
    else:
        return raw
    return out if members else (b for b in out if b is not MEMBER_END)
