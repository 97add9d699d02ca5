"""Corpus readers: every input format, streamed one document at a time in constant memory.

``resolve_inputs`` turns what the user typed (files, directories, globs, URLs, ``hf:`` specs, an
input list) into a deterministic list of ``InputFile``; ``read_records`` yields, per input and in file
order, a ``Record`` for every document and a ``Skipped`` for every bad record. A whole input that
cannot be read (truncated gzip, corrupt parquet, HTTP failure) raises ``BadInputFile`` after every
complete record before the damage has been yielded, so the pipeline can keep them.

Inputs are resolved in ``preprocess/inputs.py`` and their bytes come from the chains of
``preprocess/streams.py`` (a source, then a decompressor); here they are parsed. JSON Lines are cut
into chunks of whole lines (``line_chunks``) and parsed by ``parse_lines``: ``read_records`` does both,
the build cuts here and parses in its worker processes.

A gzip member's CRC (or a zstd frame's end) is only checked after the whole member has been
inflated, and a damaged member can inflate "successfully" into garbage until then. So
``line_chunks`` marks each chunk ``verified`` or not: a chunk is verified when every byte up to its
end lies in members that passed their check (plain JSON Lines: always). Chunks are cut at every
member end, so a build can trust exactly the verified ones and roll back the rest.

Only regular files are read (a FIFO or a link to a device would block or never end), and no line
may exceed ``MAX_LINE_BYTES``: memory stays bounded whatever an input holds.

Sections, in order: parsers (JSON Lines, txt, parquet); the entry points; Hugging Face datasets.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import orjson

from preprocess import streams
from preprocess.errors import BadInputFile, CorruptStream
from preprocess.inputs import (
    HF_PREFIX,
    KNOWN_SUFFIXES,
    LINE_KINDS,
    InputFile,
    is_url,
    kind_of,
    parse_hf_spec,
    resolve_inputs,
)
from preprocess.streams import (
    MEMBER_END,
    Position,
    byte_chunks,
    checked_start,
    decompressed,
    head_bytes,
    what_it_is,
)

# what the rest of the pipeline reads through this module
__all__ = ["HF_PREFIX", "KNOWN_SUFFIXES", "LINE_KINDS", "MAX_LINE_BYTES", "SKIP_REASONS", "BadInputFile",
           "InputFile", "Position", "Record", "Skipped", "byte_chunks", "check_text", "decompressed", "head_bytes",
           "is_url",
           "kind_of", "line_chunks", "open_parquet", "parse_hf_spec", "parse_lines", "probe", "read_records",
           "resolve_inputs"]

SKIP_REASONS = ("malformed_json", "missing_text", "non_string_text", "empty_text", "undecodable_bytes")
# The longest line (JSON Lines record) or .txt document read: far above any real document (a 50 MB
# record reads fine), and a bound on what a file without line breaks can make the reader hold.
MAX_LINE_BYTES = 256 << 20


@dataclass(frozen=True, slots=True)
class Record:
    text: str         # may hold lone surrogates from JSON escapes; the pipeline repairs and counts them
    id: str | None    # the record's "id", stringified; None when it has none
    line: int         # 1-based: JSONL line, parquet row, txt block (1 for a whole-file document)
    source: str | None = None  # the record's own "source" field (Dolma's), when it is a string


@dataclass(frozen=True, slots=True)
class Skipped:
    reason: str       # one of SKIP_REASONS
    line: int
    detail: str


# ---------------------------------------------------------------------------------------------------
# parsers

def check_text(obj, text_field: str, line: int) -> Record | Skipped:
    """A Record for a decoded JSON value or dataset example, or a Skipped saying what is wrong."""
    if not isinstance(obj, dict):
        return Skipped("malformed_json", line, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get(text_field, _MISSING)
    if text is _MISSING:
        return Skipped("missing_text", line, f"no {text_field!r} field")
    if not isinstance(text, str):
        return Skipped("non_string_text", line, f"{text_field!r} is {_json_type(text)}, not a string")
    if not text or text.isspace():
        return Skipped("empty_text", line, "empty" if not text else "whitespace only")
    rid, source = obj.get("id"), obj.get("source")
    return Record(text, None if rid is None else str(rid), line, source if type(source) is str else None)


_MISSING = object()


def _json_type(value) -> str:
    return {type(None): "null", bool: "a boolean", int: "a number", float: "a number",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)




def _refuse_json_array(chunks: Iterable[bytes], path: str) -> Iterator[bytes]:
    """Pass a JSONL stream through, but refuse one that opens as a JSON array of objects (``[{...},
    ...]``, a common export: read as lines, its documents would all be counted as malformed records)
    or as markup (``<``: an HTML error page, XML). A first line like ``[1, 2]`` is a JSON Lines record
    that is not an object: skipped as such."""
    head = b""
    for chunk in chunks:
        if head is None or chunk is MEMBER_END:
            yield chunk
            continue
        head += chunk
        start = head.removeprefix(_BOM).lstrip()
        if start[:1] == b"[":
            after = start[1:].lstrip()
            if not after:
                continue  # what follows the bracket has not been read yet
            if after[:1] == b"{":
                raise BadInputFile(path, "holds one JSON array, not one JSON object per line (JSON Lines)",
                                   "convert it first, e.g. `jq -c '.[]' FILE > FILE.jsonl`, or pass "
                                   "--skip-bad-files to go on without it")
        elif start[:1] == b"<":
            raise BadInputFile(path, what_it_is(start, None, "JSON Lines", False).replace(
                "corrupt JSON Lines data", "not JSON Lines"))
        elif not start:
            continue  # only whitespace so far
        yield head
        head = None
    if head:
        yield head


def line_chunks(inp: InputFile, size: int | Callable[[], int] = 1 << 20, skip_bytes: int = 0, first_line: int = 0,
                fetch=None, on_bytes: Callable[[int], None] | None = None, come_back: bool = False,
                position: Position | None = None, piece=None, hint: int | None = None,
                ) -> Iterator[tuple[bytes, int, bool]]:
    """The decompressed bytes of a JSONL input (a kind in LINE_KINDS) as ``(chunk, newlines, verified)``
    pieces of whole lines, each about ``size`` bytes (longer when one line is; ``size`` may be a
    function, asked before each cut); only the last may end without a newline. :func:`parse_lines`
    turns a chunk into the items :func:`read_records` would yield. Where a chunk is cut depends only on
    the data and where the previous one ended, so a stream resumed at a chunk's end is cut as before.

    ``verified``: every byte up to the end of this chunk lies in gzip members (zstd frames) that
    passed their check; always True for plain JSON Lines. A chunk ends at every member end (a
    ``(b"", 0, True)`` marker when no whole line is pending there), so the verified chunks are
    exactly the trustworthy prefix of the stream. ``position.raw``: the raw bytes read when the
    chunk was cut. ``fetch``, ``on_bytes``, ``come_back``, ``piece``, ``hint``: as for :func:`byte_chunks`.

    The build sends the chunks to its workers as they are, so the process that reads does little
    more than decompress; :func:`read_records` parses them itself. ``skip_bytes`` (a line boundary)
    and ``first_line`` resume a stream where an interrupted build left it. Raises ``BadInputFile``
    after yielding every complete line before damage (unverified, for a compressed input), for an
    empty input, and for a line longer than ``MAX_LINE_BYTES``.
    """
    info: dict = {}
    compressed = inp.kind != "jsonl"  # or gzip inside (info), known once the first bytes are read
    chunk_size = size if callable(size) else (lambda fixed=size: fixed)
    line, to_skip = first_line, skip_bytes
    pending: list[bytes] = []
    pending_len = 0
    has_newline = False  # whether `pending` holds a line end
    seen = 0             # decompressed bytes of the stream so far
    try:
        source = byte_chunks(inp, fetch, on_bytes, members=True, come_back=come_back, position=position, info=info,
                             piece=piece or streams.RAW_PIECE, hint=hint)
        for data in (source if skip_bytes else _refuse_json_array(source, inp.path)):
            compressed = compressed or info.get("gzip_inside", False)
            if data is MEMBER_END:
                if to_skip:
                    continue
                buf = b"".join(pending)
                cut = buf.rfind(b"\n") + 1
                n = buf.count(b"\n", 0, cut)
                yield buf[:cut], n, True
                line += n
                pending = [buf[cut:]] if cut < len(buf) else []
                pending_len, has_newline = len(buf) - cut, False
                continue
            seen += len(data)
            if to_skip:
                if len(data) <= to_skip:
                    to_skip -= len(data)
                    continue
                data, to_skip = data[to_skip:], 0
            pending.append(data)
            pending_len += len(data)
            has_newline = has_newline or b"\n" in data
            if not has_newline:
                if pending_len > MAX_LINE_BYTES:
                    raise BadInputFile(inp.path, f"line {line + 1:,} runs past {MAX_LINE_BYTES >> 20} MiB without a "
                                                 f"line break: this is not a JSON Lines file (or one record is larger "
                                                 f"than the reader takes)", "check the file, or pass --skip-bad-files")
                continue
            want = chunk_size()
            if pending_len < want:
                continue
            buf = b"".join(pending) if len(pending) > 1 else pending[0]
            start = 0
            while len(buf) - start >= want:
                cut = buf.rfind(b"\n", start, start + want) + 1
                if cut <= start:  # one line longer than the chunk: the chunk ends with it
                    cut = buf.find(b"\n", start + want) + 1
                    if not cut:
                        break  # its end has not been read yet
                chunk = buf[start:cut]
                n = chunk.count(b"\n")
                yield chunk, n, not compressed
                line += n
                start = cut
                want = chunk_size()
            pending = [buf[start:]] if start < len(buf) else []
            pending_len = len(buf) - start
            has_newline = b"\n" in buf[start:] if pending else False
    except (CorruptStream, OSError, BadInputFile) as e:  # damaged data, a read error, a refused or changed URL
        buf = b"".join(pending)
        cut = buf.rfind(b"\n") + 1
        if cut:  # the complete lines that arrived before it (in a member that will never pass its check)
            n = buf.count(b"\n", 0, cut)
            yield buf[:cut], n, not compressed
            line += n
        if isinstance(e, BadInputFile):
            raise
        raise _unreadable(inp, e, line) from None
    if to_skip:
        raise BadInputFile(inp.path, f"is shorter than when the build started ({skip_bytes:,} bytes were read "
                                     f"from it then)", "restore it, or use --overwrite to start over")
    if not seen:
        raise BadInputFile(inp.path, "is empty: it holds no data" + (" (0 bytes)" if not compressed else ""),
                           "check where it came from, or pass --skip-bad-files to go on without it")
    if pending:
        buf = b"".join(pending)
        yield buf, buf.count(b"\n"), True


def parse_lines(chunk: bytes, first_line: int, text_field: str = "text") -> list[Record | Skipped]:
    """The items of a :func:`line_chunks` chunk whose first line is line ``first_line + 1``."""
    items = []
    lineno = first_line
    loads = json.loads
    for raw in chunk.split(b"\n"):
        lineno += 1
        if raw and not raw.isspace():
            items.append(_parse_line(raw, lineno, text_field, loads))
    return items


_BOM = b"\xef\xbb\xbf"


def _parse_line(raw: bytes, lineno: int, text_field: str, loads: Callable) -> Record | Skipped:
    if lineno == 1 and raw.startswith(_BOM):  # a byte-order mark (Windows tools write one) is not JSON
        raw = raw[len(_BOM):]
    # orjson takes the bytes as they are and is 2-3x faster; it refuses everything outside strict JSON
    # in valid UTF-8, and those lines (lone-surrogate escapes, NaN, huge numbers, bad bytes, garbage)
    # take the standard library's path below, which accepts or classifies them as it always has
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _parse_line_slow(raw, lineno, text_field, loads)
    if type(obj) is dict:
        text = obj.get(text_field)
        if type(text) is str and text and not text.isspace():
            rid, source = obj.get("id"), obj.get("source")
            if type(rid) is float:  # orjson reads an integer beyond 64 bits as a float: keep json's str(id)
                return _parse_line_slow(raw, lineno, text_field, loads)
            return Record(text, None if rid is None else str(rid), lineno, source if type(source) is str else None)
    return check_text(obj, text_field, lineno)


def _parse_line_slow(raw: bytes, lineno: int, text_field: str, loads: Callable) -> Record | Skipped:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Skipped("undecodable_bytes", lineno, f"invalid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}")
    try:
        obj = loads(s)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, an over-long integer, absurd nesting
        detail = f"{e.msg}: column {e.colno}" if isinstance(e, json.JSONDecodeError) else f"{type(e).__name__}: {e}"
        return Skipped("malformed_json", lineno, detail)
    if type(obj) is dict:  # fast path for the common case; check_text handles everything else
        text = obj.get(text_field)
        if type(text) is str and text and not text.isspace():
            rid, source = obj.get("id"), obj.get("source")
            return Record(text, None if rid is None else str(rid), lineno, source if type(source) is str else None)
    return check_text(obj, text_field, lineno)


def _decode_doc(raw: bytes, number: int) -> Record | Skipped:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        return Skipped("undecodable_bytes", number, f"invalid UTF-8 at byte {e.start}: {raw[e.start:e.start + 4]!r}")
    if text.startswith("\ufeff"):
        text = text[1:]  # a byte-order mark is not part of the document
    if not text or text.isspace():
        return Skipped("empty_text", number, "empty" if not text else "whitespace only")
    return Record(text, None, number)


def _bounded(chunks: Iterable[bytes], what: str) -> Iterator[bytes]:
    """Pass ``chunks`` through, raising CorruptStream past MAX_LINE_BYTES (``what`` names the unit)."""
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > MAX_LINE_BYTES:
            raise CorruptStream(f"{what} is longer than {MAX_LINE_BYTES >> 20} MiB, more than the reader takes as "
                                f"one document")
        yield chunk


def _txt_whole(chunks: Iterable[bytes]) -> Iterator[Record | Skipped]:
    yield _decode_doc(b"".join(_bounded(chunks, "the file")), 1)


def _txt_blocks(chunks: Iterable[bytes]) -> Iterator[Record | Skipped]:
    """One document per run of non-blank lines; a blank line is empty or whitespace only.

    A block's text is its lines with the line break after the last one removed. ``line`` is the
    block's 1-based number.
    """
    block: list[bytes] = []
    number = size = 0
    pending = b""
    for chunk in chunks:
        lines = (pending + chunk).split(b"\n")
        pending = lines.pop()
        if len(pending) > MAX_LINE_BYTES:
            raise CorruptStream(f"a line after block {number:,} is longer than {MAX_LINE_BYTES >> 20} MiB")
        for ln in lines:
            if ln.strip():
                block.append(ln)
                size += len(ln)
                if size > MAX_LINE_BYTES:
                    raise CorruptStream(f"block {number + 1:,} is longer than {MAX_LINE_BYTES >> 20} MiB, more "
                                        f"than the reader takes as one document")
            elif block:
                number += 1
                yield _decode_doc(b"\n".join(block), number)
                block, size = [], 0
    if pending.strip():
        block.append(pending)
    if block:
        yield _decode_doc(b"\n".join(block), number + 1)


def open_parquet(inp: InputFile, text_field: str, fetch=None):
    """(ParquetFile, columns to read, whether the text column holds bytes); BadInputFile if unusable.
    A URL is read with range requests (``fetch``: the build's Fetcher, which counts the bytes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if is_url(inp.path):
            from preprocess.fetch import Fetcher
            pf = pq.ParquetFile((fetch or Fetcher()).range_file(inp.path))
        else:
            pf = pq.ParquetFile(inp.path)
        schema = pf.schema_arrow
    except (pa.ArrowException, OSError) as e:
        empty = not is_url(inp.path) and os.path.exists(inp.path) and os.path.getsize(inp.path) == 0
        if empty:
            raise BadInputFile(inp.path, "is empty: 0 bytes", "check where it came from, or pass --skip-bad-files "
                                                              "to go on without it") from None
        raise BadInputFile(inp.path, f"not a readable parquet file ({e})", damaged=True) from None
    names = schema.names
    column_hint = "pass --text-field with the name of the text column"
    if text_field not in names:
        raise BadInputFile(inp.path, f"no column {text_field!r} (columns: {', '.join(names)})", column_hint)
    ttype = schema.field(text_field).type
    is_binary = pa.types.is_binary(ttype) or pa.types.is_large_binary(ttype)
    if not (is_binary or pa.types.is_string(ttype) or pa.types.is_large_string(ttype)):
        raise BadInputFile(inp.path, f"column {text_field!r} has type {ttype}, not text", column_hint)
    if pf.metadata.num_rows == 0:
        raise BadInputFile(inp.path, "is empty: it holds no rows", "check where it came from, or pass "
                                                                   "--skip-bad-files to go on without it")
    columns = [text_field] + (["id"] if "id" in names and text_field != "id" else [])
    return pf, columns, is_binary


def _parquet(inp: InputFile, text_field: str, fetch=None) -> Iterator[Record | Skipped]:
    import pyarrow as pa

    pf, columns, is_binary = open_parquet(inp, text_field, fetch)
    row = 0
    try:
        # One batch at a time: memory stays bounded by a batch (and pyarrow's row-group buffer).
        for batch in pf.iter_batches(batch_size=1024, columns=columns):
            texts = batch.column(0).to_pylist()
            ids = batch.column(1).to_pylist() if len(columns) == 2 else [None] * len(texts)
            for text, rid in zip(texts, ids, strict=True):
                row += 1
                if text is None:
                    yield Skipped("non_string_text", row, f"{text_field!r} is null")
                    continue
                item = _decode_doc(text, row) if is_binary else _check_str(text, row)
                if rid is not None and type(item) is Record:
                    item = Record(item.text, str(rid), row)
                yield item
    except (pa.ArrowException, OSError) as e:
        raise BadInputFile(inp.path, f"parquet data unreadable after row {row:,} ({e})", damaged=True) from None


def _check_str(text: str, line: int) -> Record | Skipped:
    if not text or text.isspace():
        return Skipped("empty_text", line, "empty" if not text else "whitespace only")
    return Record(text, None, line)


# ---------------------------------------------------------------------------------------------------
# the entry points

def read_records(inp: InputFile, text_field: str = "text", txt_blocks: bool = False, fetch=None,
                 on_bytes: Callable[[int], None] | None = None, come_back: bool = False,
                 hint: int | None = None) -> Iterator[Record | Skipped]:
    """Yield every document of ``inp`` in file order, one at a time, and a ``Skipped`` per bad record.

    ``fetch``: the build's ``preprocess.fetch.Fetcher`` for URLs (None: one of its own, without a
    spool, with the default patience). ``on_bytes(n)`` is called as the source's bytes are read
    (JSONL and text inputs). ``come_back``: the caller may stop long before the end and the build
    reads the file again later (the tokenizer sample); ``hint``: how far on disk the caller expects to
    read (JSONL inputs; see :func:`streams.byte_chunks`). Raises ``BadInputFile`` when the input as a
    whole cannot be read, after the records before the damage.
    """
    if inp.kind == "hf":
        yield from _read_hf(inp.path, text_field)
        return
    if inp.kind == "parquet":
        yield from _parquet(inp, text_field, fetch)
        return
    if inp.kind in LINE_KINDS:  # the lines the build's workers parse, parsed here the same way
        line = 0
        # a reader that may stop early takes small chunks, so that it does not read far past its need
        size = 1 << 14 if come_back else 1 << 20
        for chunk, newlines, _ in line_chunks(inp, size, fetch=fetch, on_bytes=on_bytes, come_back=come_back,
                                              hint=hint):
            yield from parse_lines(chunk, line, text_field)
            line += newlines
        return
    last, seen = 0, [0]

    def sized(chunks):
        for chunk in chunks:
            seen[0] += len(chunk)
            yield chunk
    try:
        chunks = sized(byte_chunks(inp, fetch, on_bytes, come_back=come_back))
        for item in _txt_blocks(chunks) if txt_blocks else _txt_whole(chunks):
            last = item.line
            yield item
    except (CorruptStream, OSError) as e:
        raise _unreadable(inp, e, last) from None
    if not seen[0]:
        raise BadInputFile(inp.path, "is empty: 0 bytes", "check where it came from, or pass --skip-bad-files to go "
                                                          "on without it")


def _unreadable(inp: InputFile, e: Exception, last_line: int) -> BadInputFile:
    """The error for an input whose bytes stop being readable after line ``last_line``."""
    if isinstance(e, CorruptStream) and not e.damaged:  # not broken data but something else: empty, HTML
        remedy = "check where it came from, or pass --skip-bad-files to go on without it"
        return BadInputFile(inp.path, str(e), remedy if str(e).startswith("is empty") else
                            "pass --skip-bad-files to go on without it")
    if isinstance(e, CorruptStream):
        after = f"after line {last_line:,}" if last_line else "before its first record"
        return BadInputFile(inp.path, f"{e}, {after}",
                            "re-download the file, or pass --skip-bad-files to go on without the rest of it",
                            damaged=True)
    return BadInputFile(inp.path, f"cannot read it ({e.strerror or e})", "check that it exists and is readable")


def probe(inp: InputFile, text_field: str = "text", retry=None) -> None:
    """Raise ``BadInputFile`` (or, for a URL that does not answer, ``DownloadFailed``) quickly when
    ``inp`` cannot be opened (for ``--fallback-input``). Reads its first byte, or its first chunk
    for a local file, no more. ``retry``: a ``preprocess.http.Retry`` for URLs."""
    if inp.kind == "hf":
        _load_hf(inp.path, probe=True)
        return
    if is_url(inp.path):
        from preprocess import http
        http.probe(inp.path, retry=retry)
        return
    if not os.path.isfile(inp.path):
        raise BadInputFile(inp.path, "no such file", "check the path")
    if inp.kind == "parquet":
        open_parquet(inp, text_field)
        return
    try:
        with open(inp.path, "rb") as f:
            head = f.read(64 << 10)
    except OSError as e:
        raise BadInputFile(inp.path, f"cannot read it ({e.strerror})", "check its permissions") from None
    if not head:
        raise BadInputFile(inp.path, "is empty: 0 bytes")
    if inp.kind in ("jsonl.gz", "jsonl.zst"):
        try:
            for _ in decompressed(checked_start([head], inp.kind, {}, False), inp.kind):
                break
        except CorruptStream as e:
            if "truncated" not in str(e):  # a 64 KiB head of a longer file always looks truncated
                raise BadInputFile(inp.path, str(e), "re-download it" if e.damaged else None,
                                   damaged=e.damaged) from None


# ---------------------------------------------------------------------------------------------------
# Hugging Face datasets

def _load_hf(spec: str, probe: bool = False):
    """``datasets.load_dataset(NAME, CONFIG, split=SPLIT, streaming=True)`` with errors a person can act on.

    NAME is a hub id (``allenai/c4``) or a local directory of jsonl/parquet files, which ``datasets``
    reads with its packaged builders (this is how tests run offline).
    """
    name, config, split = parse_hf_spec(spec)
    try:
        import datasets
    except ImportError:
        raise BadInputFile(spec, "the `datasets` package is not installed", "pip install datasets") from None
    try:
        ds = datasets.load_dataset(name, config, split=split, streaming=True)
        if probe:
            next(iter(ds), None)
        return ds
    except Exception as e:  # datasets raises many types (hub, network, config, split errors)
        msg = (str(e).strip().splitlines() or [""])[0].rstrip(".")
        offline = " (offline mode is set, so nothing is downloaded)" if any(os.environ.get(v, "").lower() in (
            "1", "true", "yes", "on") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")) else ""
        where = (f"check that {name} holds data files (e.g. {split}.jsonl or {split}-*.parquet)"
                 if os.path.isabs(name) or name.startswith(".") or os.path.isdir(name) else
                 f"check the name, config and split on huggingface.co/datasets/{name}, the network and HF_TOKEN")
        config_text = f"config {config!r}" if config else "no config"
        raise BadInputFile(spec, f"cannot open Hugging Face dataset {name!r}, {config_text}, split {split!r}"
                                 f"{offline}: {type(e).__name__}: {msg}",
                           f"{where[0].upper()}{where[1:]}, or use --fallback-input") from None


def _read_hf(spec: str, text_field: str) -> Iterator[Record | Skipped]:
    ds = _load_hf(spec)
    n = 0
    try:
        for n, example in enumerate(ds, 1):
            yield check_text(example, text_field, n)
    except (OSError, ValueError) as e:  # a network drop or a bad shard mid-stream
        raise BadInputFile(spec, f"reading stopped after example {n:,}: {type(e).__name__}: {e}",
                           "try again, or pass --skip-bad-files") from None
