"""tools/bench_dolma.py: its server serves what it promises, and the rehearsal prints its table.

The server runs as the tool runs it (``--serve``, a subprocess); this test reads it as a client would
and holds it to a static file's behaviour: HEAD's size is the body's, a range is the slice of the whole
body, every file is one valid gzip member of Dolma-format JSON lines, and the server's byte counts are
what the client received. Then the rehearsal runs end to end on tiny settings in every mode. No speed
is asserted.
"""
from __future__ import annotations

import gzip
import http.client
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "bench_dolma.py"
TINY = ("--urls", "30", "--scale", "5e-5", "--style-kb", "128")


def start_server(tmp_path: Path, *options: str) -> tuple[subprocess.Popen, str, list[str]]:
    here = tmp_path / f"server{len(list(tmp_path.glob('server*')))}"
    here.mkdir()
    ready, urls = here / "ready.json", here / "urls.txt"
    proc = subprocess.Popen([sys.executable, str(TOOL), "--serve", *TINY, "--list", str(urls), "--ready", str(ready),
                             "--text-cache", str(tmp_path / "styles"), *options],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the server did not start"
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["base"], urls.read_text().split()


def fetch(url: str, headers: dict | None = None, method: str = "GET"):
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}, method=method), timeout=60) as r:
        return r.status, dict(r.headers), r.read()


def stats(base: str) -> dict:
    for _ in range(100):  # a request is recorded just after its last byte went out
        s = json.loads(fetch(base + "/_stats")[2])
        if all(r["t1"] for r in s["requests"]):
            return s
        time.sleep(0.05)
    return s


def stop(proc: subprocess.Popen, base: str) -> None:
    fetch(base + "/_shutdown")
    assert proc.wait(30) == 0


@pytest.mark.slow
def test_the_server_behaves_as_a_static_file_server_and_counts_what_it_sends(tmp_path):
    proc, base, urls = start_server(tmp_path, "--mode", "range")
    try:
        assert len(urls) >= 19 and all("/dolma-v1_7/" in u and u.endswith(".json.gz") for u in urls)
        names = {u.rsplit("/", 1)[1].rsplit("-", 1)[0] for u in urls}
        assert {"cc_en_head", "starcoder", "arxiv", "books", "wiki", "megawika", "tulu_flan"} <= names
        url = next(u for u in urls if "/cc_en_head-" in u)
        status, head, body = fetch(url, method="HEAD")
        size = int(head["Content-Length"])
        assert status == 200 and body == b"" and head["Accept-Ranges"] == "bytes" and head["ETag"]
        status, _, whole = fetch(url)
        assert status == 200 and len(whole) == size
        records = [json.loads(line) for line in gzip.decompress(whole).splitlines()]  # one member, CRC checked
        assert records and {"id", "text", "source", "added", "created", "metadata"} <= set(records[0])
        assert len({r["id"] for r in records}) == len(records)
        assert records[0]["source"] == "common-crawl"
        status, head, part = fetch(url, {"Range": f"bytes={size // 3}-{size // 2}"})
        assert status == 206 and part == whole[size // 3:size // 2 + 1]
        assert head["Content-Range"] == f"bytes {size // 3}-{size // 2}/{size}"
        assert fetch(url)[2] == whole  # generated again, byte for byte
        s = stats(base)
        gets = [r for r in s["requests"] if r["method"] == "GET" and r["file"]]
        assert [r["sent"] for r in gets] == [size, size // 2 - size // 3 + 1, size]
        assert s["sent"] == 2 * size + len(part) == s["files"][url.rsplit("/", 1)[1]]["sent"]
        code = next(u for u in urls if "/starcoder-" in u)
        assert json.loads(gzip.decompress(fetch(code)[2]).splitlines()[0])["metadata"]["repo_name"]
    finally:
        stop(proc, base)


@pytest.mark.slow
def test_the_server_ignores_ranges_or_refuses_and_resets_when_asked(tmp_path):
    proc, base, urls = start_server(tmp_path, "--mode", "norange")
    try:
        status, head, body = fetch(urls[0], {"Range": "bytes=10-19"})
        assert status == 200 and len(body) == int(head["Content-Length"]) > 10 and "Accept-Ranges" not in head
        assert stats(base)["sent"] == len(body)
    finally:
        stop(proc, base)
    proc, base, urls = start_server(tmp_path, "--mode", "range", "--fail-rate", "1", "--retry-after", "7")
    try:
        with pytest.raises(urllib.error.HTTPError) as e:
            fetch(urls[0])
        assert e.value.code == 503 and e.value.headers["Retry-After"] == "7"
        assert stats(base)["sent"] == 0
    finally:
        stop(proc, base)
    proc, base, urls = start_server(tmp_path, "--mode", "range", "--reset-rate", "1")
    try:
        with pytest.raises((OSError, http.client.HTTPException)):  # a reset, or a body shorter than promised
            fetch(urls[0])
        s = stats(base)
        assert s["requests"][0]["end"] == "reset" and 0 <= s["sent"] < s["requests"][0]["length"]
    finally:
        stop(proc, base)


@pytest.mark.slow
def test_the_rehearsal_prints_its_table_in_every_mode(tmp_path):
    done = subprocess.run([sys.executable, str(TOOL), "--modes", "range,norange,flaky,slow", *TINY,
                           "--max-tokens", "20k", "--tokenizer-sample-bytes", "200k", "--vocab-size", "600",
                           "--out", str(tmp_path / "bench")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    header = next(line for line in out.splitlines() if line.split() == ["range", "norange", "flaky", "slow"])
    assert header
    for row in ("planning (start to plan)", "sent: tokenizer sample", "sent: main pass", "sent / kept (gzip)",
                "tokenizer: training", "tokenizer: peak RSS", "encoding: M tokens/s", "peak memory, all processes",
                "server: generated", "5B build: download (kept)", "5B build: wall, 16 cores, 1 Gbit/s"):
        assert row in out, row
    build = next(line for line in out.splitlines() if line.startswith("build "))
    assert build.split()[1:] == ["ok"] * 4, build
    check = next(line for line in out.splitlines() if line.startswith("byte counts check"))
    assert check.split()[3:] == ["ok"] * 4, check  # the server's counts add up and match what a client got
    for mode in ("range", "norange", "flaky", "slow"):
        manifest = json.loads((tmp_path / "bench" / mode / "data" / "manifest.json").read_text())
        assert sum(t["tokens"] for t in manifest["totals"].values()) >= 20_000
