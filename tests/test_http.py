"""HTTP inputs against a real server on 127.0.0.1: streaming, resume after a cut, give-up, 404."""
from __future__ import annotations

import pytest

from preprocess import http
from preprocess.readers import BadInputFile, Record, probe, read_records, resolve_inputs
from tests.conftest import EXPECTED, FAST_RETRY, FILES, JSONL, N_DOCS

FAST = FAST_RETRY


def read_url(u: str, **kw) -> list:
    [inp] = resolve_inputs([u])
    return list(read_records(inp, retry=FAST, **kw))


@pytest.mark.parametrize("name", ["docs.json.gz", "docs.jsonl"])
def test_streams_and_decompresses(url, name):
    assert read_url(url(f"ok/{name}")) == EXPECTED


@pytest.mark.parametrize("name", ["docs.json.gz", "docs.jsonl"])
def test_cut_connection_resumes_from_the_byte_where_it_broke(url, server, name):
    assert read_url(url(f"cut-once/{name}")) == EXPECTED  # every document exactly once, in order
    half = len(FILES[name]) // 2
    assert server.log == [(f"/cut-once/{name}", None), (f"/cut-once/{name}", f"bytes={half}-")]


def test_server_ignoring_range_still_gives_each_byte_once(url, server):
    assert read_url(url("no-range/docs.json.gz")) == EXPECTED
    assert [r for _, r in server.log] == [None, f"bytes={len(FILES['docs.json.gz']) // 2}-"]


def test_always_cut_gives_up_after_the_attempts_and_keeps_what_arrived(url, server):
    u = url("always-cut/docs.json.gz")
    got = []
    with pytest.raises(BadInputFile) as exc:
        for item in read_records(resolve_inputs([u])[0], retry=FAST):
            got.append(item)
    size = len(FILES["docs.json.gz"])
    half = size // 2
    assert exc.value.path == u
    assert str(exc.value) == (f"{u}: download failed 3 times in a row at byte {half:,} (last error: connection "
                              f"closed at byte {half:,} of {size:,}); check the network and try "
                              f"again, or pass --skip-bad-files")
    # The first try stopped at the middle, and two more stopped there too: three failures at that byte.
    assert [r for _, r in server.log] == [None, f"bytes={half}-", f"bytes={half}-"]
    assert 0 < len(got) < N_DOCS and got == EXPECTED[:len(got)]


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
    with pytest.raises(BadInputFile, match=r"^http://127\.0\.0\.1:9/x\.json\.gz: download failed 3 times in a row "
                                           r"at byte 0 \(last error: ConnectionRefusedError"):
        read_url(dead)


def test_parquet_over_range_requests(url):
    assert read_url(url("ok/t.parquet")) == [Record("x", "a", 1), Record("y", "b", 2), Record("z", "c", 3)]


def test_input_list_of_urls(url, tmp_path):
    (tmp_path / "urls.txt").write_text(f"{url('ok/docs.json.gz')}\n# mirror\n{url('cut-once/docs.jsonl')}\n")
    inputs = resolve_inputs([], input_list=str(tmp_path / "urls.txt"))
    assert [i.kind for i in inputs] == ["jsonl.gz", "jsonl"]
    assert [list(read_records(i, retry=FAST)) for i in inputs] == [EXPECTED, EXPECTED]
