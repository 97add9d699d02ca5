"""Byte chains: a source (a local file, or a URL through ``preprocess/fetch.py``) yields raw bytes in
pieces of RAW_PIECE, a decompressor (gzip, zstd or none) yields decompressed bytes, and
``MEMBER_END`` follows each gzip member or zstd frame that passed its check. The same chain serves
local files and URLs. Decompressed output comes in pieces of at most ``_OUT_CHUNK`` bytes, so one
compressed chunk of highly repetitive text cannot expand into an unbounded buffer.

The raw pieces have a fixed size whatever the network delivered, so where the decompressed stream
stands against the raw bytes read (``Position.raw``) is the same in every run: the build records it
as the bytes it read of a file it cut.

Data that is gzip inside (a file gzipped twice, a ``.jsonl`` served with ``Content-Encoding: gzip`` as
S3 objects with that metadata are, a misnamed file) is recognised by its first bytes and inflated
once more; its checks are then known to have passed only at its end."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from preprocess.errors import CorruptStream
from preprocess.inputs import InputFile, is_url

try:  # ISA-L inflates gzip about twice as fast as zlib, with the same interface and the same checks
    from isal import isal_zlib as inflate
except ImportError:  # no wheel for this platform: the standard library's zlib
    import zlib as inflate

_OUT_CHUNK = 4 << 20
_IN_CHUNK = 1 << 20
RAW_PIECE = 16 << 10  # the default; a reader may ask for smaller pieces where it wants to stop precisely


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


def head_bytes(inp: InputFile, n: int, fetch=None) -> bytes:
    """The first ``n`` bytes of ``inp`` as stored (compressed): from the file, or through ``fetch``
    (the build's Fetcher, so that the main pass goes on from them without fetching them again)."""
    if not is_url(inp.path):
        with open(inp.path, "rb") as f:
            return f.read(n)
    if fetch is None:
        from preprocess.fetch import Fetcher
        fetch = Fetcher()
    out = bytearray()
    stream = fetch.open(inp.path, come_back=True, hint=n)
    try:
        for chunk in stream:
            out += chunk
            if len(out) >= n:
                break
    finally:
        stream.close()
    return bytes(out[:n])


class Position:
    """Raw bytes of a source read so far (updated as the chain pulls each RAW_PIECE)."""

    def __init__(self):
        self.raw = 0


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
        raise CorruptStream("is empty: it holds no gzip data at all", damaged=False)


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
        raise CorruptStream("is empty: it holds no zstd data at all", damaged=False)


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
        raise CorruptStream(what_it_is(head, info.get("content_type"), wanted, url), damaged=False)
    if head:
        yield head
    yield from it


def _pieces(chunks: Iterable[bytes], piece: int | Callable[[], int], position: Position | None,
            on_bytes: Callable[[int], None] | None) -> Iterator[bytes]:
    """``chunks`` re-cut into pieces of exactly ``piece`` bytes (a function: asked before each piece;
    the last piece is shorter); each byte is copied once."""
    next_size = piece if callable(piece) else (lambda fixed=piece: fixed)
    def out(piece: bytes) -> bytes:
        if position is not None:
            position.raw += len(piece)
        if on_bytes is not None:
            on_bytes(len(piece))
        return piece

    pending, size = b"", next_size()
    for chunk in chunks:
        if pending:
            need = size - len(pending)
            if len(chunk) < need:
                pending += chunk
                continue
            yield out(pending + chunk[:need])
            chunk, pending, size = chunk[need:], b"", next_size()
        view, i = memoryview(chunk), 0
        while len(chunk) - i >= size:
            yield out(bytes(view[i:i + size]))
            i += size
            size = next_size()
        pending = bytes(view[i:])
    if pending:
        yield out(pending)


def _source(inp: InputFile, fetch, info: dict, come_back: bool, hint: int | None) -> Iterator[bytes]:
    if not is_url(inp.path):
        yield from _file_chunks(inp.path)
        return
    if fetch is None:
        from preprocess.fetch import Fetcher
        fetch = Fetcher()
    first = True
    for chunk in fetch.open(inp.path, come_back=come_back, hint=hint):
        if first:  # how the server sent it (an HTML error page says text/html)
            info.update(fetch.info(inp.path))
            first = False
        yield chunk


def decompressed(chunks: Iterable[bytes], kind: str) -> Iterator[bytes]:
    """The decompressed bytes of raw ``chunks`` of an input of ``kind`` (the member ends left out)."""
    if kind == "jsonl.gz":
        return (b for b in _gunzip(chunks) if b is not MEMBER_END)
    if kind == "jsonl.zst":
        return (b for b in _unzstd(chunks) if b is not MEMBER_END)
    return iter(chunks)


def gzip_inside(stream: Iterable, info: dict) -> Iterator:
    """Pass a (decompressed) stream through, or, when it begins with gzip's magic number, inflate it
    once more: a file gzipped twice, or gzip served as a plain file. Its member ends are then given
    once, at its end (when both layers have passed their checks); ``info["gzip_inside"]`` says so."""
    it = iter(stream)
    held, head = [], b""
    for item in it:
        held.append(item)
        if item is not MEMBER_END:
            head += item
            if len(head) >= len(_GZIP_MAGIC):
                break
    if not head.startswith(_GZIP_MAGIC):
        yield from held
        yield from it
        return
    info["gzip_inside"] = True

    def data():
        for item in held:
            if item is not MEMBER_END:
                yield item
        for item in it:
            if item is not MEMBER_END:
                yield item
    for item in _gunzip(data()):
        if item is not MEMBER_END:
            yield item
    yield MEMBER_END


def byte_chunks(inp: InputFile, fetch=None, on_bytes: Callable[[int], None] | None = None, members: bool = False,
                come_back: bool = False, position: Position | None = None, info: dict | None = None,
                piece: int | Callable[[], int] = RAW_PIECE, hint: int | None = None) -> Iterator[bytes | _MemberEnd]:
    """The decompressed bytes of a local or HTTP input, in chunks; ``on_bytes(n)`` is told of every
    ``n`` bytes read from the source (compressed bytes: what a progress bar over file sizes counts), and
    ``position.raw`` holds their running total. With ``members``, ``MEMBER_END`` follows every gzip member
    or zstd frame that passed its check. ``fetch``: the build's ``preprocess.fetch.Fetcher`` for URLs
    (None: one of its own, without a spool); ``come_back``: the reader may stop early and the build
    reads the file again later (the tokenizer sample); ``hint``: how far the reader expects to read (bytes
    on disk). ``piece``: the raw pieces the decompressor is fed (a function: asked before each one), the
    unit in which ``position.raw`` advances. ``info`` gets what the server said of a URL and
    ``gzip_inside`` when the data was gzip once more."""
    info = {} if info is None else info
    raw = _pieces(_source(inp, fetch, info, come_back, hint), piece, position, on_bytes)
    if inp.kind == "jsonl.gz":
        out = _gunzip(checked_start(raw, inp.kind, info, is_url(inp.path)))
    elif inp.kind == "jsonl.zst":
        out = _unzstd(checked_start(raw, inp.kind, info, is_url(inp.path)))
    else:
        out = raw
    out = gzip_inside(out, info)
    return out if members else (b for b in out if b is not MEMBER_END)
