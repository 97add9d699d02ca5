"""Builds from where corpora live: a URL list served over HTTP (with a cut connection), and
--fallback-input when the first source cannot be opened. The server runs on 127.0.0.1 in the test."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import shards
from tests.conftest import DOCS, FILES

ROOT = Path(__file__).resolve().parents[1]


def run_build(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocess", "--vocab-size", "300", "--quiet", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_url_list_with_a_cut_connection_gives_the_same_dataset_as_the_local_file(tmp_path, url):
    local = tmp_path / "docs.json.gz"
    local.write_bytes(FILES["docs.json.gz"])
    urls = tmp_path / "urls.txt"
    urls.write_text(f"# one file, served so that the first response breaks half-way\n{url('cut-once/docs.json.gz')}\n")
    a = run_build("--input-list", str(urls), "--out", str(tmp_path / "from_url"))
    b = run_build("--input", str(local), "--out", str(tmp_path / "from_file"))
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    ma, mb = shards.load_manifest(tmp_path / "from_url"), shards.load_manifest(tmp_path / "from_file")
    assert [s["sha256"] for s in ma["shards"]] == [s["sha256"] for s in mb["shards"]]
    assert sum(t["documents"] for t in ma["totals"].values()) == len(DOCS)
    assert [i["path"] for i in ma["inputs"]] == [url("cut-once/docs.json.gz")]
    assert ma["inputs"][0]["records"] == len(DOCS)


def test_fallback_input_is_used_and_recorded_when_the_input_cannot_be_opened(tmp_path, url):
    fallback = tmp_path / "fallback.jsonl"
    fallback.write_text("".join(json.dumps({"id": f"f{i}", "text": f"fallback text {i}"}) + "\n" for i in range(50)))
    missing = url("ok/no-such-file.json.gz")  # the server answers 404
    r = run_build("--input", missing, "--fallback-input", str(fallback), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    assert "using --fallback-input" in r.stderr and "404" in r.stderr
    m = shards.load_manifest(tmp_path / "out")
    assert m["source"]["source"] == "fallback" and m["source"]["fallback_input"] == str(fallback)
    assert sum(t["documents"] for t in m["totals"].values()) == 50

    r = run_build("--input", missing, "--out", str(tmp_path / "no_fallback"))
    assert r.returncode == 2 and "404" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("name", ["docs.jsonl", "docs.json.gz"])
def test_a_download_that_keeps_failing_keeps_what_can_be_trusted(tmp_path, url, monkeypatch, workers, name):
    """The server never sends past the middle of the file: with --skip-bad-files the build records the
    URL as bad and goes on with the next input. Plain JSON Lines are trusted as they arrive: every
    complete line that arrived is kept, no more, no less. A gzip member is trusted only once its CRC,
    at its end, has passed: none of the cut member's documents is kept."""
    import zlib
    from dataclasses import dataclass

    from preprocess import http
    from preprocess.cli import main
    from tests.conftest import assert_nothing_lost

    @dataclass(frozen=True)
    class Quick(http.Retry):  # the real retry loop, without its seconds of back-off
        attempts: int = 3
        backoff_s: float = 0.01
        timeout_s: float = 5.0
    monkeypatch.setattr(http, "Retry", Quick)

    data = FILES[name]
    arrived = data[:len(data) // 2]
    if name.endswith(".gz"):
        arrived = zlib.decompressobj(wbits=31).decompress(arrived)
    complete = arrived[:arrived.rfind(b"\n") + 1].splitlines()
    assert 0 < len(complete) < len(DOCS)
    u = url(f"always-cut/{name}")
    out = tmp_path / "out"
    assert main(["--input", u, url("ok/t.parquet"), "--out", str(out), "--vocab-size", "300", "--skip-bad-files",
                 "--quiet", "--workers", workers]) == 0
    m = shards.load_manifest(out)
    assert m["inputs"][0]["status"].startswith("bad: ") and "download failed 3 times" in m["inputs"][0]["status"]
    kept = [json.loads(line)["text"] for line in complete] if name == "docs.jsonl" else []
    assert m["inputs"][0]["documents"] == len(kept)
    assert_nothing_lost(out, kept + ["x", "y", "z"])
