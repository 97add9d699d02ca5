"""Builds from where corpora live: a URL list served over HTTP (with a cut connection), and
--fallback-input when the first source cannot be opened. The server runs on 127.0.0.1 in the test."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_a_bug_in_resolving_the_input_is_not_taken_for_an_input_that_cannot_be_opened(tmp_path, monkeypatch):
    """--fallback-input is for an input that does not resolve or open (InputError, BadInputFile,
    DownloadFailed); any other error there is a bug, and must surface, not quietly build the fallback."""
    import pytest

    from preprocess import readers
    from preprocess.build import build
    from preprocess.options import BuildOptions

    fallback = tmp_path / "fallback.jsonl"
    fallback.write_text("".join(json.dumps({"text": f"fallback text {i}"}) + "\n" for i in range(20)))
    resolve = readers.resolve_inputs

    def broken(specs, *args, **kwargs):
        if specs != [str(fallback)]:
            raise ValueError("a bug in resolving the input")
        return resolve(specs, *args, **kwargs)
    monkeypatch.setattr(readers, "resolve_inputs", broken)
    opts = BuildOptions(out=str(tmp_path / "out"), inputs=[str(tmp_path / "corpus")], fallback_input=str(fallback),
                        vocab_size=300, quiet=True)
    with pytest.raises(ValueError, match="a bug in resolving the input"):
        build(opts)
    assert not (tmp_path / "out" / shards.MANIFEST_NAME).exists()
