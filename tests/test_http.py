"""HTTP inputs against a real server on 127.0.0.1: streaming, resume after a cut, give-up, 404."""
from __future__ import annotations

import re

import pytest

from preprocess import http
from preprocess.errors import DownloadFailed
from preprocess.fetch import RANGE_FIRST, Fetcher
from preprocess.readers import BadInputFile, Record, probe, read_records, resolve_inputs
from tests.conftest import EXPECTED, FAST_RETRY, FILES, JSONL

FAST = FAST_RETRY


def read_url(u: str, **kw) -> list:
    [inp] = resolve_inputs([u])
    return list(read_records(inp, fetch=Fetcher(FAST), **kw))


@pytest.mark.parametrize("name", ["docs.json.gz", "docs.jsonl"])
def test_streams_and_decompresses(url, name):
    assert read_url(url(f"ok/{name}")) == EXPECTED


@pytest.mark.parametrize("name", ["docs.json.gz", "docs.jsonl"])
def test_cut_connection_resumes_from_the_byte_where_it_broke(url, server, name):
    assert read_url(url(f"cut-once/{name}")) == EXPECTED  # every document exactly once, in order
    size = len(FILES[name])
    # the first range (16 KiB) breaks half-way; the next request continues there, repeating the byte before
    # it (compared, with the ETag, to check that the file is still the same); each range is as long as
    # what was read before it
    pos, want = min(size, RANGE_FIRST) // 2, [f"bytes=0-{RANGE_FIRST - 1}"]
    while pos < size:
        end = min(size, pos + max(RANGE_FIRST, pos))
        want.append(f"bytes={pos - 1}-{end - 1}")
        pos = end
    assert server.log == [(f"/cut-once/{name}", r) for r in want]
    assert len(want) == (2 if name == "docs.json.gz" else 6)


def test_server_ignoring_range_is_read_with_one_streamed_get_from_then_on(url, server):
    assert read_url(url("no-range/docs.json.gz")) == EXPECTED
    # the first range is answered with the whole file (200): from then on plain GETs, so the second
    # request (after the cut) asks for no range; what it re-sends is compared, not given twice
    assert [r for _, r in server.log] == [f"bytes=0-{RANGE_FIRST - 1}", None]


def test_always_cut_gives_up_after_the_attempts_and_keeps_what_arrived(url, server, tmp_path):
    u = url("always-cut/docs.json.gz")
    fetch = Fetcher(FAST, spool=tmp_path / "spool")
    with pytest.raises(DownloadFailed) as exc:
        list(read_records(resolve_inputs([u])[0], fetch=fetch))
    size = len(FILES["docs.json.gz"])
    half = size // 2
    assert exc.value.path == u
    assert re.fullmatch(rf"{re.escape(u)}: no progress at byte {half:,} for \d+ s \(3 failed tries; last error: "
                        rf"connection closed at byte {half:,} of {size:,}\); the build is saved: run the same command "
                        rf"again when the server answers \(--network-patience waits longer\)", str(exc.value))
    # The first try stopped at the middle, and two more stopped there too: three failures at that byte.
    assert [r for _, r in server.log] == [f"bytes=0-{RANGE_FIRST - 1}"] + [f"bytes={half - 1}-{size - 1}"] * 2
    # what arrived is in the spool, for the next run to go on from
    [data] = (tmp_path / "spool").glob("*.data")
    assert data.read_bytes() == FILES["docs.json.gz"][:half]
    assert fetch.downloaded == half + 2  # the two retries each repeated the byte before the break


def test_404_names_url_and_status(url, server):
    u = url("ok/nothing-here.json.gz")
    with pytest.raises(BadInputFile) as exc:
        read_url(u)
    assert str(exc.value) == (f"{u}: HTTP 404 Not Found; check the URL (the file list may be out of date), "
                              f"or pass --skip-bad-files")
    assert len(server.log) == 1  # not retried
    with pytest.raises(BadInputFile, match="HTTP 404"):
        probe(resolve_inputs([u])[0])


def test_probe_and_unreachable_server(url):
    assert probe(resolve_inputs([url("ok/docs.jsonl")])[0]) is None
    assert http.probe(url("ok/docs.jsonl")) == len(JSONL)
    dead = "http://127.0.0.1:9/x.json.gz"  # discard port: connection refused
    with pytest.raises(DownloadFailed, match=r"^http://127\.0\.0\.1:9/x\.json\.gz: no progress at byte 0 for \d+ s "
                                             r"\(3 failed tries; last error: ConnectionRefusedError"):
        read_url(dead)


def test_parquet_over_range_requests(url):
    assert read_url(url("ok/t.parquet")) == [Record("x", "a", 1), Record("y", "b", 2), Record("z", "c", 3)]


def test_input_list_of_urls(url, tmp_path):
    (tmp_path / "urls.txt").write_text(f"{url('ok/docs.json.gz')}\n# mirror\n{url('cut-once/docs.jsonl')}\n")
    inputs = resolve_inputs([], input_list=str(tmp_path / "urls.txt"))
    assert [i.kind for i in inputs] == ["jsonl.gz", "jsonl"]
    assert [list(read_records(i, fetch=Fetcher(FAST))) for i in inputs] == [EXPECTED, EXPECTED]
