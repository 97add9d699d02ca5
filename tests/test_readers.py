"""Local readers: every format with its bad inputs, and how inputs are resolved and ordered."""
from __future__ import annotations

import gzip
import json
import os
import zlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from preprocess import readers, streams
from preprocess.errors import InputError
from preprocess.readers import BadInputFile, InputFile, Record, Skipped, probe, read_records, resolve_inputs

# One JSONL file exercising every per-record outcome, with the line each lands on.
BAD_JSONL = b"".join([
    b'{"id": 7, "text": "first"}\n',                 # 1 record, id stringified
    b"\n",                                           # 2 blank: not a record, still counted as a line
    b'{"text": "a", "x": }\n',                       # 3 malformed
    b'{"text": "lone \\ud800 surrogate"}\n',         # 4 record with a lone surrogate
    b'[1, 2]\n',                                     # 5 not an object
    b'{"body": "no text field"}\n',                  # 6 missing text
    b'{"text": 42}\n',                               # 7 non-string
    b'{"text": null}\n',                             # 8 non-string
    b'{"text": " \\n\\t "}\n',                       # 9 whitespace only
    b'{"text": ""}\n',                               # 10 empty
    b'{"text": "caf\xe9"}\n',                        # 11 Latin-1 byte: not UTF-8
    b'{"text": "last, no newline", "id": "d-12"}',   # 12
])
BAD_JSONL_EXPECTED = [
    Record("first", "7", 1),
    Skipped("malformed_json", 3, "Expecting value: column 20"),
    Record("lone \ud800 surrogate", None, 4),
    Skipped("malformed_json", 5, "expected a JSON object, got list"),
    Skipped("missing_text", 6, "no 'text' field"),
    Skipped("non_string_text", 7, "'text' is a number, not a string"),
    Skipped("non_string_text", 8, "'text' is null, not a string"),
    Skipped("empty_text", 9, "whitespace only"),
    Skipped("empty_text", 10, "empty"),
    Skipped("undecodable_bytes", 11, "invalid UTF-8 at byte 13: b'\\xe9\"}'"),
    Record("last, no newline", "d-12", 12),
]


def docs(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps({"id": f"d{i}", "text": f"document number {i}"}).encode() + b"\n"
                    for i in range(start, start + n))


def read_all(path, **kw) -> list:
    [inp] = resolve_inputs([str(path)])
    return list(read_records(inp, **kw))


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.fixture(params=["isal", "zlib"])
def inflater(request, monkeypatch):
    """Run a gzip test with ISA-L (what the readers use where it is installed) and with the standard
    library's zlib (their fallback): both must give the same records and the same errors."""
    if request.param == "isal":
        isal_zlib = pytest.importorskip("isal.isal_zlib")
        monkeypatch.setattr(streams, "inflate", isal_zlib)
    else:
        monkeypatch.setattr(streams, "inflate", zlib)
    return request.param


@pytest.mark.parametrize("name,encode", [("a.jsonl", bytes), ("a.json", bytes), ("a.json.gz", gz),
                                         ("a.jsonl.gz", gz), ("a.jsonl.zst", zst), ("a.json.zst", zst)])
def test_jsonl_every_bad_record_kind(tmp_path, name, encode):
    (tmp_path / name).write_bytes(encode(BAD_JSONL))
    assert read_all(tmp_path / name) == BAD_JSONL_EXPECTED


# Lines where orjson (the fast path) and the standard library differ: each must come out as the
# standard library alone would have read it.
TRICKY_LINES = [
    b'{"text": "a", "text": "b", "id": 1}',              # duplicate keys: the last wins
    b'{"text": "big id", "id": 123456789012345678901234567890}',  # beyond 64 bits: orjson gives a float
    b'{"text": "float id", "id": 1.5}',
    b'{"text": "neg id", "id": -9223372036854775809}',
    b'{"text": "x", "id": NaN}', b'{"text": "x", "id": Infinity}', b'{"text": "x", "id": 1e400}',
    b'{"text": "lone \\udc00 low"}', b'{"text": "pair \\ud83d\\ude00 ok"}',
    b'\xef\xbb\xbf{"text": "bom"}', b'{"text": "nul \\u0000 and \\u2028"}',
    b'{"text": "\xf0\x9f\x98"}', b'{"text": "\xed\xa0\x80"}',  # truncated 4-byte char, encoded surrogate
    b'  {"text": "padded"}  ', b'{"text": "trailing"} x', b'"just a string"', b'null', b'{"text": true}',
    b'[' * 2000 + b']' * 2000, b'{"text": "deep", "m": ' + b'[' * 2000 + b']' * 2000 + b'}',
    b'{"id": {"nested": 1}, "text": "dict id"}', b'{"id": false, "text": "bool id"}',
]


@pytest.mark.parametrize("raw", TRICKY_LINES)
def test_fast_json_path_reads_every_line_as_the_standard_library(raw):
    fast = readers._parse_line(raw, 3, "text", json.loads)
    assert fast == readers._parse_line_slow(raw, 3, "text", json.loads)


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(text=json_values, rid=json_values, extra=st.dictionaries(st.text(), json_values, max_size=3))
def test_fast_json_path_matches_on_generated_records(text, rid, extra):
    raw = json.dumps({**extra, "text": text, "id": rid}).encode("utf-8", "surrogatepass")
    assert readers._parse_line(raw, 1, "text", json.loads) == readers._parse_line_slow(raw, 1, "text", json.loads)


def test_text_field_and_large_lines(tmp_path):
    big = "x" * 3_000_000  # longer than one read chunk: the line is reassembled from pieces
    data = json.dumps({"content": big}).encode() + b"\n" + json.dumps({"content": "y", "text": "z"}).encode()
    (tmp_path / "a.jsonl.gz").write_bytes(gz(data))
    assert read_all(tmp_path / "a.jsonl.gz", text_field="content") == [Record(big, None, 1), Record("y", None, 2)]


def test_multi_member_gzip_and_multi_frame_zstd(tmp_path, inflater):
    (tmp_path / "a.json.gz").write_bytes(gz(docs(3)) + gz(docs(2, 3)))
    (tmp_path / "b.json.zst").write_bytes(zst(docs(3)) + zst(docs(2, 3)))
    want = [Record(f"document number {i}", f"d{i}", i + 1) for i in range(5)]
    assert read_all(tmp_path / "a.json.gz") == want
    assert read_all(tmp_path / "b.json.zst") == want


@pytest.mark.parametrize("name,encode", [("t.json.gz", gz), ("t.jsonl.zst", zst)])
def test_truncated_file_yields_complete_records_then_names_the_file(tmp_path, name, encode, inflater):
    # Random text keeps the compressed form long, and 4000 records span several zstd blocks (128 KiB):
    # zstd emits nothing of a block until the whole block has arrived.
    data = b"".join(json.dumps({"id": i, "text": os.urandom(30).hex()}).encode() + b"\n" for i in range(4000))
    blob = encode(data)
    path = tmp_path / name
    path.write_bytes(blob[: len(blob) * 3 // 4])
    [inp] = resolve_inputs([str(path)])
    got = []
    with pytest.raises(BadInputFile) as exc:
        for item in read_records(inp):
            got.append(item)
    assert exc.value.path == str(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: truncated ")
    assert f"after line {len(got):,}" in msg and "--skip-bad-files" in msg
    # Every yielded item is a complete, correct record, in order; a partial last line is never yielded.
    assert 1000 < len(got) < 4000
    lines = data.splitlines()[:len(got)]
    assert got == [Record(json.loads(line)["text"], str(i), i + 1) for i, line in enumerate(lines)]


def test_corrupt_gzip_crc_is_bad_input(tmp_path, inflater):
    blob = bytearray(gz(docs(5)))
    blob[-8] ^= 0xFF  # the CRC32 in the trailer
    (tmp_path / "c.json.gz").write_bytes(bytes(blob))
    # This small member decompresses in one call, so the check fails before any of it is yielded.
    with pytest.raises(BadInputFile, match=r"c\.json\.gz: corrupt gzip data \(.*"
                       r"(incorrect data check|Incorrect checksum).*\), before its first"):
        list(read_records(resolve_inputs([str(tmp_path / "c.json.gz")])[0]))


def test_not_gzip_at_all(tmp_path, inflater):
    (tmp_path / "n.json.gz").write_bytes(docs(2))
    # the wrong kind of data, not a damaged copy: no advice to download it again
    with pytest.raises(BadInputFile) as exc:
        list(read_records(resolve_inputs([str(tmp_path / "n.json.gz")])[0]))
    assert str(exc.value) == (f"{tmp_path / 'n.json.gz'}: corrupt gzip data (not a gzip stream: it begins "
                              f"b'{{\"id\": \"'); pass --skip-bad-files to go on without it")
    assert not exc.value.damaged
    with pytest.raises(BadInputFile, match="corrupt gzip data"):
        probe(resolve_inputs([str(tmp_path / "n.json.gz")])[0])


def test_gzip_trailing_zero_padding_is_accepted(tmp_path, inflater):
    (tmp_path / "p.json.gz").write_bytes(gz(docs(2)) + b"\0" * 512)
    assert len(read_all(tmp_path / "p.json.gz")) == 2


def test_parquet_text_id_nulls_and_rows(tmp_path):
    table = pa.table({"id": [10, None, 12, 13, 14], "text": ["a", "b", None, "  ", "e\ud7ffok"],
                      "other": [1, 2, 3, 4, 5]})
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=2)
    assert read_all(tmp_path / "t.parquet") == [
        Record("a", "10", 1), Record("b", None, 2), Skipped("non_string_text", 3, "'text' is null"),
        Skipped("empty_text", 4, "whitespace only"), Record("e\ud7ffok", "14", 5)]


def test_parquet_binary_column_and_bad_files(tmp_path):
    pq.write_table(pa.table({"body": [b"ok", b"\xff"]}), tmp_path / "b.parquet")
    assert read_all(tmp_path / "b.parquet", text_field="body") == [
        Record("ok", None, 1), Skipped("undecodable_bytes", 2, "invalid UTF-8 at byte 0: b'\\xff'")]
    with pytest.raises(BadInputFile, match=r"b\.parquet: no column 'text' \(columns: body\); pass --text-field"):
        read_all(tmp_path / "b.parquet")
    pq.write_table(pa.table({"text": [1, 2]}), tmp_path / "i.parquet")
    with pytest.raises(BadInputFile, match="column 'text' has type int64, not text"):
        read_all(tmp_path / "i.parquet")
    (tmp_path / "x.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(BadInputFile, match=r"x\.parquet: not a readable parquet file .*re-download"):
        read_all(tmp_path / "x.parquet")
    with pytest.raises(BadInputFile, match="not a readable parquet file"):
        probe(InputFile(str(tmp_path / "x.parquet"), "parquet", 24))


def test_txt_whole_file_and_blocks(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbfTitle\n\npara one\nstill one\n  \n\n\npara two\n")
    assert read_all(tmp_path / "a.txt") == [Record("Title\n\npara one\nstill one\n  \n\n\npara two\n", None, 1)]
    assert read_all(tmp_path / "a.txt", txt_blocks=True) == [
        Record("Title", None, 1), Record("para one\nstill one", None, 2), Record("para two", None, 3)]


def test_txt_bad_inputs(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok\n\xff\xfe\n\nfine")
    assert read_all(tmp_path / "bad.txt") == [
        Skipped("undecodable_bytes", 1, "invalid UTF-8 at byte 3: b'\\xff\\xfe\\n\\n'")]
    assert read_all(tmp_path / "bad.txt", txt_blocks=True) == [
        Skipped("undecodable_bytes", 1, "invalid UTF-8 at byte 3: b'\\xff\\xfe'"), Record("fine", None, 2)]
    (tmp_path / "empty.txt").write_bytes(b" \n\n")
    assert read_all(tmp_path / "empty.txt") == [Skipped("empty_text", 1, "whitespace only")]
    assert read_all(tmp_path / "empty.txt", txt_blocks=True) == []


# ---------------------------------------------------------------------------------------------------
# resolve_inputs

@pytest.fixture
def tree(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel in ["d/b.json.gz", "d/a.jsonl", "d/sub/c.jsonl.zst", "d/sub/z.parquet", "d/notes.md",
                "d/.hidden.jsonl", "d/.cache/x.jsonl", "e/1.txt", "e/2.json"]:
        os.makedirs(os.path.dirname(rel), exist_ok=True)
        with open(rel, "wb") as f:
            f.write(b"x" * len(rel))
    return tmp_path


def paths(inputs: list[InputFile]) -> list[str]:
    return [i.path for i in inputs]


def test_directory_is_recursive_sorted_and_skips_unknown_and_hidden(tree):
    inputs = resolve_inputs(["d"])
    assert paths(inputs) == ["d/a.jsonl", "d/b.json.gz", "d/sub/c.jsonl.zst", "d/sub/z.parquet"]
    assert [(i.kind, i.size) for i in inputs] == [("jsonl", 9), ("jsonl.gz", 11), ("jsonl.zst", 17), ("parquet", 15)]


def test_globs_specs_order_dedup_and_input_list(tree):
    (tree / "list.txt").write_text("# Dolma-style list\n\ne/2.json\n  https://host/x/v1.json.gz?sig=1  \n"
                                   "d/a.jsonl\nhf:allenai/c4:en\n")
    inputs = resolve_inputs(["e/*", "d/**/*.zst", "d/a.jsonl"], input_list="list.txt")
    assert paths(inputs) == ["e/1.txt", "e/2.json", "d/sub/c.jsonl.zst", "d/a.jsonl",
                             "https://host/x/v1.json.gz?sig=1", "hf:allenai/c4:en"]
    assert [i.kind for i in inputs] == ["txt", "jsonl", "jsonl.zst", "jsonl", "jsonl.gz", "hf"]
    assert inputs[4].size is None


def test_resolve_errors_say_what_and_where(tree):
    with pytest.raises(InputError, match=r"--input: nope\.jsonl: no such file or directory"):
        resolve_inputs(["nope.jsonl"])
    with pytest.raises(InputError, match=r"pattern 'd/\*\.md' matched 1 paths, none of them input files"):
        resolve_inputs(["d/*.md"])
    with pytest.raises(InputError, match=r"pattern 'q/\*\.json' matched nothing"):
        resolve_inputs(["q/*.json"])
    with pytest.raises(InputError, match=r"d/notes\.md: unknown file type; expected a name ending in \.jsonl\.gz"):
        resolve_inputs(["d/notes.md"])
    (tree / "empty").mkdir()
    with pytest.raises(InputError, match="directory empty holds no input files"):
        resolve_inputs(["empty"])
    (tree / "l.txt").write_text("d/a.jsonl\n\nmissing.json\n")
    with pytest.raises(InputError, match=r"--input-list l\.txt line 3: missing\.json: no such file"):
        resolve_inputs([], input_list="l.txt")
    with pytest.raises(InputError, match=r"https://h/data\.bin: unknown file type"):
        resolve_inputs(["https://h/data.bin"])
    with pytest.raises(InputError, match=r"expected hf:NAME\[:CONFIG\]\[:SPLIT\]"):
        resolve_inputs(["hf:a:b:c:d"])


def test_probe_local(tmp_path):
    (tmp_path / "ok.json.gz").write_bytes(gz(docs(20000)))  # longer than the probe's head
    assert probe(resolve_inputs([str(tmp_path / "ok.json.gz")])[0]) is None
    with pytest.raises(BadInputFile, match="no such file"):
        probe(InputFile(str(tmp_path / "gone.jsonl"), "jsonl", None))


def test_on_bytes_reports_every_source_byte_as_it_reads(tmp_path):
    path = tmp_path / "a.json.gz"
    path.write_bytes(gz(docs(3000)))
    inp = InputFile(str(path), "jsonl.gz", path.stat().st_size)
    seen, counts_at_first_record = [], None
    for _ in read_records(inp, on_bytes=seen.append):
        if counts_at_first_record is None:
            counts_at_first_record = sum(seen)
    assert sum(seen) == path.stat().st_size
    assert 0 < counts_at_first_record <= sum(seen)


# --- line chunks: what the build's workers parse must be what read_records yields ------------------

def chunked_items(inp, size, skip_bytes=0, first_line=0, text_field="text"):
    items, line = [], first_line
    for chunk, newlines, _ in readers.line_chunks(inp, size, skip_bytes, first_line):
        assert chunk.count(b"\n") == newlines
        items += readers.parse_lines(chunk, line, text_field)
        line += newlines
    return items


@settings(max_examples=60, deadline=None)
@given(lines=st.lists(st.sampled_from(BAD_JSONL.split(b"\n")[:-1] + [
    b"", b"   ", b'{"text": "crlf"}\r', b'{"text": "' + b"long " * 300 + b'"}', b'{"id": 3, "text": "x"}']),
    max_size=40), last=st.sampled_from([b"", b'{"text": "no newline at the end"}', b"  "]),
    size=st.integers(1, 2000), compress=st.sampled_from([bytes, gz, zst]))
def test_line_chunks_parse_to_exactly_the_records(tmp_path_factory, lines, last, size, compress):
    data = b"".join(line + b"\n" for line in lines) + last
    name = {bytes: "c.jsonl", gz: "c.jsonl.gz", zst: "c.jsonl.zst"}[compress]
    path = tmp_path_factory.mktemp("c") / name
    path.write_bytes(compress(data))
    [inp] = resolve_inputs([str(path)])
    if not data:  # an empty input is a bad input, however it is read
        for read in (lambda: list(read_records(inp)), lambda: chunked_items(inp, size)):
            with pytest.raises(BadInputFile, match="is empty"):
                read()
        return
    want = list(read_records(inp))
    assert chunked_items(inp, size) == want
    # resuming at any line boundary gives the rest, numbered as before
    boundaries = [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")]
    for k in sorted({0, len(boundaries) // 2, len(boundaries) - 1}):
        rest = chunked_items(inp, size, boundaries[k], k)
        assert rest == [item for item in want if item.line > k]


def test_line_chunks_of_a_truncated_file_end_with_the_complete_lines(tmp_path, inflater):
    data = b"".join(json.dumps({"id": i, "text": os.urandom(30).hex()}).encode() + b"\n" for i in range(4000))
    blob = gz(data)
    path = tmp_path / "t.json.gz"
    path.write_bytes(blob[: len(blob) * 3 // 4])
    [inp] = resolve_inputs([str(path)])
    got = []
    with pytest.raises(BadInputFile) as exc:
        for chunk, _, _ in readers.line_chunks(inp, 4096):
            got.append(chunk)
    text = b"".join(got)
    n_lines = text.count(b"\n")
    assert text.endswith(b"\n") and data.startswith(text) and 1000 < n_lines < 4000
    assert f"after line {n_lines:,}" in str(exc.value)
    assert "--skip-bad-files" in str(exc.value)


def test_line_chunks_notice_an_input_shorter_than_at_the_start(tmp_path):
    (tmp_path / "s.jsonl").write_bytes(docs(3))
    [inp] = resolve_inputs([str(tmp_path / "s.jsonl")])
    with pytest.raises(BadInputFile, match="shorter than when the build started"):
        list(readers.line_chunks(inp, 100, skip_bytes=10_000))


@pytest.mark.parametrize("compress", [bytes, gz])
def test_a_byte_order_mark_at_the_start_of_a_jsonl_file_is_not_a_bad_record(tmp_path, compress):
    data = b'\xef\xbb\xbf{"text": "first doc"}\n\xef\xbb\xbf{"text": "a BOM inside is damage"}\n'
    path = tmp_path / ("b.jsonl" if compress is bytes else "b.jsonl.gz")
    path.write_bytes(compress(data))
    [inp] = resolve_inputs([str(path)])
    want = [Record("first doc", None, 1),
            Skipped("malformed_json", 2, "Unexpected UTF-8 BOM (decode using utf-8-sig): column 1")]
    assert list(read_records(inp)) == want
    assert chunked_items(inp, 8) == want


def test_zstd_written_with_a_long_window_is_read(tmp_path):
    """`zstd --long=30` frames declare a 1 GB window, past the library's default limit."""
    data = docs(200)
    params = zstandard.ZstdCompressionParameters.from_level(3, window_log=30, enable_ldm=True)
    out = tmp_path / "long.jsonl.zst"
    with open(out, "wb") as f, zstandard.ZstdCompressor(compression_params=params).stream_writer(f) as w:
        w.write(data)
    [inp] = resolve_inputs([str(out)])
    want = [Record(f"document number {i}", f"d{i}", i + 1) for i in range(200)]
    assert list(read_records(inp)) == want and chunked_items(inp, 1000) == want


@pytest.mark.parametrize("text", [b'[{"text": "a"}, {"text": "b"}]', b'\xef\xbb\xbf\n  [\n  {"text": "a"}\n]\n'])
def test_a_json_array_file_is_refused_with_what_to_do(tmp_path, text):
    (tmp_path / "export.json").write_bytes(text)
    [inp] = resolve_inputs([str(tmp_path / "export.json")])
    for read in (lambda: list(read_records(inp)), lambda: chunked_items(inp, 4)):
        with pytest.raises(BadInputFile, match=r"export\.json: holds one JSON array, not one JSON object per "
                                               r"line .*jq -c '\.\[\]' FILE > FILE\.jsonl"):
            read()
    # an array record is a bad record, on the first line or later
    (tmp_path / "fine.jsonl").write_bytes(b'  \n[1, 2]\n{"text": "a"}\n[]\n')
    [inp] = resolve_inputs([str(tmp_path / "fine.jsonl")])
    assert [type(x).__name__ for x in read_records(inp)] == ["Skipped", "Record", "Skipped"]
    assert chunked_items(inp, 2) == list(read_records(inp))
