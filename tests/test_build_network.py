"""Stage 1 over a network that fails: outages with Retry-After, HEAD sizing through them, Content-Encoding,
stalls, a file that changes under a reconnect, a HEAD that misstates the size. Each runs a real server on
127.0.0.1 with the fault scripted, and a real build with a short --network-patience and
--network-timeout (so no test waits minutes), and ends in either every document kept or a clear error
that names the file and what to do."""
from __future__ import annotations

import gzip
import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import shards
from preprocess.cli import main
from tests.conftest import FAST, assert_nothing_lost, decoded_documents

TEXTS = [f"document {i}: " + " ".join(f"word{(i * 7 + j) % 97}" for j in range(40 + i % 30)) for i in range(400)]
JSONL = b"".join(json.dumps({"id": f"d{i}", "text": t}).encode() + b"\n" for i, t in enumerate(TEXTS))
QUICK = ["--network-patience", "20", "--network-timeout", "1"]


class FaultHandler(BaseHTTPRequestHandler):
    """Serves ``server.files`` (name -> bytes) with HEAD, GET and Range (206 with Content-Range, an ETag
    and Last-Modified unless ``server.validators`` is False). ``server.script[name]`` is a queue of
    faults, each taken by the next request of its method for that name: ``("503", seconds)`` answers
    503 with Retry-After and keeps answering so for that file (HEAD and GET) for that many seconds;
    ``("cut", n)`` stops the body after n bytes; ``("cut-and-change", n, data)`` does so, then serves
    ``data`` as the file from the next request on; ``("trickle", delay)`` sends one byte per ``delay``
    seconds; ``("silent", seconds)`` sends the headers, then nothing for that long. ``server.encoding``
    (name -> value) adds a Content-Encoding header; ``server.head_size`` (name -> n) makes HEAD say n.
    ``server.sent_by`` counts the body bytes sent per file, ``server.log`` every request."""

    protocol_version = "HTTP/1.0"

    def _fault(self, method: str, name: str):
        srv = self.server
        if time.monotonic() < srv.down_until.get(name, 0):
            return ("503", 0)
        queue = srv.script.get((method, name))
        return queue.popleft() if queue else None

    def _refuse(self, name: str, fault) -> bool:
        srv = self.server
        if fault is None or fault[0] != "503":
            return False
        if fault[1]:
            srv.down_until[name] = time.monotonic() + fault[1]
        self.send_response(503)
        self.send_header("Retry-After", str(srv.retry_after))
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def _headers(self, name: str, status: int, length: int, extra: dict) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        if self.server.validators:
            self.send_header("ETag", f'"{hash(self.server.files[name]) & 0xffffffff:x}"')
            self.send_header("Last-Modified", "Mon, 01 Apr 2024 00:00:00 GMT")
        if name in self.server.encoding:
            self.send_header("Content-Encoding", self.server.encoding[name])
        for k, v in extra.items():
            self.send_header(k, v)
        self.end_headers()

    def do_HEAD(self):
        name = self.path.lstrip("/")
        self.server.log.append(("HEAD", name, None, time.monotonic()))
        if self._refuse(name, self._fault("HEAD", name)):
            return
        if name not in self.server.files:
            self.send_error(404)
            return
        size = self.server.head_size.get(name, len(self.server.files[name]))
        self._headers(name, 200, size, {"Accept-Ranges": "bytes"})

    def do_GET(self):
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        self.server.log.append(("GET", name, rng, time.monotonic()))
        fault = self._fault("GET", name)
        if self._refuse(name, fault):
            return
        data = self.server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start, end = 0, len(data)
        if rng:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(len(data), int(last) + 1 if last else len(data))
            self._headers(name, 206, end - start, {"Content-Range": f"bytes {start}-{end - 1}/{len(data)}"})
        else:
            self._headers(name, 200, len(data), {})
        stop = end
        if fault is not None and fault[0] in ("cut", "cut-and-change"):
            stop = min(end, start + fault[1])
        try:
            if fault is not None and fault[0] == "silent":
                time.sleep(fault[1])
                return
            step = 1 if fault is not None and fault[0] == "trickle" else 4096
            for pos in range(start, stop, step):
                piece = data[pos:min(stop, pos + step)]
                self.wfile.write(piece)
                self.wfile.flush()
                with self.server.lock:
                    self.server.sent_by[name] = self.server.sent_by.get(name, 0) + len(piece)
                if step == 1:
                    time.sleep(fault[1])
        except (BrokenPipeError, ConnectionResetError):
            return
        if fault is not None and fault[0] == "cut-and-change":
            self.server.files[name] = fault[2]

    def log_message(self, *args):
        pass


@pytest.fixture
def faulty():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FaultHandler)
    srv.daemon_threads = True
    srv.files, srv.script, srv.encoding, srv.head_size = {}, {}, {}, {}
    srv.validators, srv.down_until, srv.retry_after, srv.log, srv.sent_by = True, {}, 1, [], {}
    srv.lock = threading.Lock()
    srv.url = lambda name: f"http://127.0.0.1:{srv.server_address[1]}/{name}"
    srv.fault = lambda method, name, *faults: srv.script.setdefault((method, name), deque()).extend(faults)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    """A tokenizer trained on TEXTS: a build given it reads its input once, in the main pass."""
    import tokenizer as tk

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tk.save(tk.train_bpe(TEXTS, vocab_size=300), path)
    return str(path)


def _build(urls: list[str], out: Path, *extra: str) -> int:
    return main(["--input", *urls, "--out", str(out), *FAST, *QUICK, *extra])


def _gets(srv, name: str) -> list:
    return [x for x in srv.log if x[0] == "GET" and x[1] == name]


# --- 1. outages: Retry-After, patience, the next run goes on ---------------------------------------

def test_an_outage_within_the_patience_is_waited_out_as_the_server_asks(faulty, tmp_path, capsys, tokenizer):
    faulty.files["d-0000.json.gz"] = gzip.compress(JSONL, mtime=0)
    size = len(faulty.files["d-0000.json.gz"])
    # the first response breaks a third of the way in, then the server answers 503 (Retry-After: 1) for 2 s
    faulty.fault("GET", "d-0000.json.gz", ("cut", size // 3), ("503", 2))
    out = tmp_path / "out"
    assert _build([faulty.url("d-0000.json.gz")], out, "--encoder", "hf", "--tokenizer", tokenizer) == 0
    assert_nothing_lost(out, TEXTS)
    gets = _gets(faulty, "d-0000.json.gz")
    down = faulty.down_until["d-0000.json.gz"]
    assert len(gets) >= 3 and any(t < down for *_, t in gets)
    for before, after in zip(gets[1:], gets[2:], strict=False):  # the tries after the cut, while it was down
        if before[3] < down:
            assert after[3] - before[3] >= 0.95, "Retry-After: 1 was not honoured"
    assert "503 Service Unavailable" in capsys.readouterr().err  # each failed try is named


def test_an_outage_past_the_patience_stops_the_build_and_the_same_command_goes_on(faulty, tmp_path, capsys):
    faulty.files["d-0000.jsonl"] = JSONL
    faulty.files["e-0000.jsonl"] = JSONL.replace(b"document", b"paper")
    # the second file's first response breaks, then the server is down far longer than the patience
    faulty.fault("GET", "e-0000.jsonl", ("cut", 5000), ("503", 3600))
    urls = [faulty.url("d-0000.jsonl"), faulty.url("e-0000.jsonl")]
    out = tmp_path / "out"
    # even with --skip-bad-files: a network failure is not a bad file
    assert _build(urls, out, "--encoder", "hf", "--skip-bad-files", "--network-patience", "2") == 2
    err = capsys.readouterr().err
    assert f"error: {faulty.url('e-0000.jsonl')}: no progress at byte" in err
    assert "HTTP 503" in err and "run the same command again when the server answers" in err
    assert "Traceback" not in err and not (out / shards.MANIFEST_NAME).exists()
    faulty.down_until.clear()  # the server is back
    sent = dict(faulty.sent_by)
    assert _build(urls, out, "--encoder", "hf", "--skip-bad-files") == 0
    err = capsys.readouterr().err
    assert "resuming the build" in err and "up to date" not in err
    m = shards.load_manifest(out)
    assert [x["status"] for x in m["inputs"]] == ["ok", "ok"]
    assert_nothing_lost(out, TEXTS + [t.replace("document", "paper") for t in TEXTS])
    # the rerun fetched no more of the second file than the first run had not (its first 5,000 bytes
    # were kept in OUT/.build)
    assert faulty.sent_by["e-0000.jsonl"] - sent["e-0000.jsonl"] <= len(JSONL) - 5000 + 1


# --- 2. sizing with HEAD rides out the same outages ------------------------------------------------

def test_sizing_rides_out_an_outage_and_never_drops_a_url_silently(faulty, tmp_path, capsys):
    for k in range(3):
        faulty.files[f"c4-{k:04d}.jsonl"] = JSONL
    urls = [faulty.url(f"c4-{k:04d}.jsonl") for k in range(3)]
    faulty.fault("HEAD", "c4-0001.jsonl", ("503", 1.5))
    assert main(["--input", *urls, "--out", str(tmp_path / "p"), "--max-tokens", "2000", "--plan", *QUICK]) == 0
    assert "3 input files in 1 sources" in capsys.readouterr().out
    faulty.fault("HEAD", "c4-0002.jsonl", ("503", 3600))
    for skip in ([], ["--skip-bad-files"]):
        assert main(["--input", *urls, "--out", str(tmp_path / "p"), "--max-tokens", "2000", "--plan", *QUICK,
                     "--network-patience", "2", *skip]) == 2
        err = capsys.readouterr().err
        assert f"cannot plan the build: {faulty.url('c4-0002.jsonl')}: no progress asking its size (HEAD)" in err
        assert "run the same command again when the server answers" in err and "Traceback" not in err


def test_a_url_left_out_then_back_is_named_not_a_crash(faulty, tmp_path, capsys):
    faulty.files["c4-0000.jsonl"] = JSONL
    urls = [faulty.url("c4-0000.jsonl"), faulty.url("c4-0001.jsonl")]  # the second answers 404
    out = tmp_path / "out"
    assert _build(urls, out, "--skip-bad-files", "--encoder", "hf") == 0
    assert "c4-0001.jsonl: HTTP 404 Not Found (asking its size)" in capsys.readouterr().err
    faulty.files["c4-0001.jsonl"] = JSONL  # it is back: the dataset is not of these inputs any more
    assert _build(urls, out, "--skip-bad-files", "--encoder", "hf") == 2
    err = capsys.readouterr().err
    assert "was built from other input files than these" in err and "c4-0001.jsonl" in err
    assert "Traceback" not in err


# --- 3. Content-Encoding, data compressed twice, inputs that give nothing --------------------------

def test_gzip_content_encoding_and_a_file_gzipped_twice_are_read_whole(faulty, tmp_path):
    faulty.files["s3-0000.jsonl"] = gzip.compress(JSONL, mtime=0)  # an S3 object with Content-Encoding: gzip
    faulty.encoding["s3-0000.jsonl"] = "gzip"
    faulty.files["twice-0000.json.gz"] = gzip.compress(gzip.compress(JSONL, mtime=0), mtime=0)
    for name in ("s3-0000.jsonl", "twice-0000.json.gz"):
        out = tmp_path / name
        assert _build([faulty.url(name)], out) == 0
        assert_nothing_lost(out, TEXTS)


def test_an_encoding_the_reader_cannot_decode_and_undecodable_records_are_bad_inputs(faulty, tmp_path, capsys):
    import zstandard

    faulty.files["br-0000.jsonl"] = b"\x0b\x80" + JSONL  # what a brotli body might look like to a plain reader
    faulty.encoding["br-0000.jsonl"] = "br"
    assert _build([faulty.url("br-0000.jsonl")], tmp_path / "br") == 2
    err = capsys.readouterr().err
    assert f"{faulty.url('br-0000.jsonl')}: the server sends it with Content-Encoding: br" in err
    # zstd data in a file named .jsonl: every record is undecodable, so the file is bad, never "ok" with 0
    faulty.files["z-0000.jsonl"] = zstandard.ZstdCompressor().compress(JSONL)
    faulty.files["ok-0000.jsonl"] = JSONL
    urls = [faulty.url("z-0000.jsonl"), faulty.url("ok-0000.jsonl")]
    assert _build(urls, tmp_path / "z") == 2
    err = capsys.readouterr().err
    assert "z-0000.jsonl: all its" in err and "records were skipped (" in err and "undecodable_bytes" in err
    assert "complete copy" not in err
    assert _build(urls, tmp_path / "z", "--skip-bad-files") == 0
    m = shards.load_manifest(tmp_path / "z")
    assert m["inputs"][0]["status"].startswith("bad: all its") and m["inputs"][0]["documents"] == 0
    assert m["inputs"][1]["status"] == "ok"
    assert_nothing_lost(tmp_path / "z", TEXTS)


# --- 4. stalls --------------------------------------------------------------------------------------

@pytest.mark.parametrize("stall", [("trickle", 0.05), ("silent", 3)])
def test_a_stalled_connection_is_named_and_retried(faulty, tmp_path, capsys, stall, tokenizer):
    faulty.files["d-0000.jsonl"] = JSONL
    faulty.fault("GET", "d-0000.jsonl", stall)
    out = tmp_path / "out"
    assert _build([faulty.url("d-0000.jsonl")], out, "--encoder", "hf", "--tokenizer", tokenizer) == 0
    err = capsys.readouterr().err
    named = "below the floor of 4,096 bytes/s" if stall[0] == "trickle" else "stalled: no byte for 1 s"
    assert f"{faulty.url('d-0000.jsonl')}: stalled" in err and named in err
    assert_nothing_lost(out, TEXTS)


def test_a_stall_that_never_ends_stops_the_build_naming_it(faulty, tmp_path, capsys):
    faulty.files["d-0000.jsonl"] = JSONL
    faulty.fault("GET", "d-0000.jsonl", *[("trickle", 0.05)] * 20)
    assert _build([faulty.url("d-0000.jsonl")], tmp_path / "out", "--encoder", "hf", "--network-patience", "3") == 2
    err = capsys.readouterr().err
    assert f"error: {faulty.url('d-0000.jsonl')}: no progress at byte" in err and "stalled" in err


# --- 5. a file that changes under a reconnect, without validators ----------------------------------

@pytest.mark.parametrize("same_size", [True, False])
def test_a_file_that_changes_across_a_reconnect_is_read_again_whole_never_spliced(faulty, tmp_path, capsys,
                                                                                   tokenizer, same_size):
    faulty.validators = False  # no ETag, no Last-Modified: only the size and the bytes can tell
    v2_texts = [t.replace("word", "wort") for t in TEXTS]
    v2 = b"".join(json.dumps({"id": f"d{i}", "text": t}).encode() + b"\n" for i, t in enumerate(v2_texts))
    if not same_size:
        v2 += json.dumps({"id": "extra", "text": "one more document"}).encode() + b"\n"
        v2_texts = [*v2_texts, "one more document"]
    assert len(v2) == len(JSONL) or not same_size
    faulty.files["d-0000.jsonl"] = JSONL
    # the main pass's first response breaks half-way, and the file on the server is then another
    faulty.fault("GET", "d-0000.jsonl", ("cut-and-change", len(JSONL) // 2, v2))
    out = tmp_path / "out"
    assert _build([faulty.url("d-0000.jsonl")], out, "--encoder", "hf", "--tokenizer", tokenizer) == 0
    err = capsys.readouterr().err
    assert "the file changed on the server while it was read" in err and "reading it again from its start" in err
    assert ("differ from those fetched before" if same_size else "its size was") in err
    assert_nothing_lost(out, v2_texts)  # the new version whole: nothing of the old one, no mixed document
    assert [x["status"] for x in shards.load_manifest(out)["inputs"]] == ["ok"]


# --- 6. the manifest records what was read, not what HEAD said ------------------------------------

def test_a_head_that_misstates_the_size_does_not_reach_the_manifest(faulty, tmp_path, capsys):
    faulty.files["d-0000.json.gz"] = gzip.compress(JSONL, mtime=0)
    size = len(faulty.files["d-0000.json.gz"])
    faulty.head_size["d-0000.json.gz"] = size + 1000
    out = tmp_path / "out"
    assert _build([faulty.url("d-0000.json.gz")], out, "--encoder", "hf") == 0
    [x] = shards.load_manifest(out)["inputs"]
    assert x["size"] == x["read_bytes"] == size and x["checksum"] == "verified"
    assert f"the plan has it as {size + 1000:,} bytes (from HTTP HEAD), and {size:,} were read" in \
        capsys.readouterr().err
    assert sum(decoded_documents(out)["train"].values()) + sum(decoded_documents(out)["val"].values()) == len(TEXTS)


# --- the fetcher itself: one download shared by its readers ------------------------------------------

def test_a_second_reader_continues_the_first_ones_spool_after_checking_it(faulty, tmp_path):
    from preprocess import http
    from preprocess.fetch import RANGE_FIRST, Fetcher

    faulty.files["d-0000.jsonl"] = JSONL
    u = faulty.url("d-0000.jsonl")
    fetch = Fetcher(http.Retry(attempts=2, backoff_s=0.01), spool=tmp_path / "spool")
    first = fetch.open(u, come_back=True)
    assert len(next(first)) <= RANGE_FIRST
    first.close()  # the rest of its range, already on its way, goes into the spool
    assert fetch.downloaded == RANGE_FIRST
    assert b"".join(fetch.open(u)) == JSONL
    # the second reader checked the spool (one byte, If-Range on the strong ETag), gave it, then fetched
    # only the rest, each later range repeating one byte to compare
    gets = [rng for method, name, rng, _ in faulty.log if method == "GET"]
    assert gets[:3] == [f"bytes=0-{RANGE_FIRST - 1}", f"bytes={RANGE_FIRST - 1}-{RANGE_FIRST - 1}",
                        f"bytes={RANGE_FIRST - 1}-{2 * RANGE_FIRST - 1}"]
    assert fetch.downloaded == len(JSONL) + len(gets) - 1
    # a spool whose file has changed since (another ETag) is never given: the reader is told, and the next
    # one reads the new version from its start
    fetch.release(u)
    first = fetch.open(u, come_back=True)
    next(first)
    first.close()
    faulty.files["d-0000.jsonl"] = JSONL.replace(b"document", b"Document")  # the same size, another ETag
    from preprocess.errors import ChangedInput
    with pytest.raises(ChangedInput, match="the file changed on the server while it was read \\(its ETag was"):
        next(fetch.open(u))
    assert b"".join(fetch.open(u)) == faulty.files["d-0000.jsonl"]
