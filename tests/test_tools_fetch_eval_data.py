"""tools/fetch_eval_data.py against a server on 127.0.0.1 serving files it writes: checks by sha256 and by
git blob id, ARC's member read out of a zip with range requests (not the whole zip), a mismatch refused."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import zipfile

import pytest

from tests.conftest import load_tool

fetch = load_tool("fetch_eval_data")

ARC_LINE = {"id": "Mercury_1", "question": {"stem": "Which is a gas?", "choices": [
    {"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}]}, "answerKey": "B"}
HELLASWAG_LINE = {"ind": 0, "activity_label": "Running", "ctx_a": "A man runs.", "ctx_b": "he", "endings":
                  ["stops.", "flies.", "sings.", "sits."], "label": 0}


def jsonl(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_git_blob_id_is_gits():
    data = b"hello\n"
    done = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
    assert fetch.git_blob_id(data) == done.stdout.decode().strip()


def test_files_checked_by_sha256_and_by_git_blob(static_server, tmp_path):
    static_server.root = tmp_path / "srv"
    static_server.root.mkdir()
    lam, hella = jsonl({"text": "a b c"}, {"text": "d e"}), jsonl(HELLASWAG_LINE)
    (static_server.root / "lambada_test.jsonl").write_bytes(lam)
    (static_server.root / "hellaswag_val.jsonl").write_bytes(hella)
    out = tmp_path / "eval"
    out.mkdir()
    lam_src = fetch.Source("lambada_openai", "lambada", static_server.url("lambada_test.jsonl"), 2,
                           sha256=hashlib.sha256(lam).hexdigest())
    r = fetch.fetch_source(lam_src, out)
    assert (out / "lambada_openai.jsonl").read_bytes() == lam
    assert (r["items"], r["verified"], r["kept"], r["fetched_bytes"]) == (2, "sha256", False, len(lam))
    hella_src = fetch.Source("hellaswag", "hellaswag", static_server.url("hellaswag_val.jsonl"), 1,
                             git_blob=fetch.git_blob_id(hella))
    assert fetch.fetch_source(hella_src, out)["verified"] == "git blob id"
    # a copy that passes its check is kept, not fetched again
    requests = len(static_server.log)
    assert fetch.fetch_source(lam_src, out)["kept"] and len(static_server.log) == requests
    # a file that is not the recorded one is not written
    bad = fetch.Source("lambada_other", "lambada", static_server.url("lambada_test.jsonl"), 2, sha256="0" * 64)
    with pytest.raises(fetch.FetchError, match=f"has sha256 {hashlib.sha256(lam).hexdigest()}, expected 0{{64}}"):
        fetch.fetch_source(bad, out)
    assert not (out / "lambada_other.jsonl").exists()
    unchecked = fetch.Source("plain", "lambada", static_server.url("lambada_test.jsonl"), 2)
    assert fetch.fetch_source(unchecked, out)["verified"] == "unverified"
    missing = fetch.Source("gone", "lambada", static_server.url("nothing_here.jsonl"), 1, sha256="0" * 64)
    with pytest.raises(fetch.FetchError, match="cannot fetch .*nothing_here.jsonl: Not Found"):
        fetch.fetch_source(missing, out)


def test_arc_is_read_out_of_the_zip_with_range_requests(static_server, tmp_path):
    static_server.root = tmp_path / "srv"
    static_server.root.mkdir()
    member = jsonl(ARC_LINE, ARC_LINE)
    zip_path = static_server.root / "ARC-V1-Feb2018.zip"
    with zipfile.ZipFile(zip_path, "w") as z:
        z.writestr("ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl", member, compress_type=zipfile.ZIP_DEFLATED)
        z.writestr("ARC-V1-Feb2018-2/ARC_Corpus.txt", os.urandom(4 << 20))  # the corpus nobody needs here
    source = fetch.Source("arc_easy", "arc", static_server.url(zip_path.name), 2,
                          sha256=hashlib.sha256(member).hexdigest(),
                          member="ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl")
    out = tmp_path / "eval"
    out.mkdir()
    r = fetch.fetch_source(source, out)
    assert (out / "arc_easy.jsonl").read_bytes() == member and r["items"] == 2 and r["verified"] == "sha256"
    size = zip_path.stat().st_size
    assert r["fetched_bytes"] < size / 4 and static_server.sent < size / 4
    assert all(method == "HEAD" or rng for method, _, rng in static_server.log)
    # a zip downloaded by hand is checked as a whole first
    with pytest.raises(fetch.FetchError, match="but ARC-V1-Feb2018.zip has 6d2d5ab5"):
        fetch.check_arc_zip(zip_path)
    fetch.ARC_ZIP_SHA256, recorded = hashlib.sha256(zip_path.read_bytes()).hexdigest(), fetch.ARC_ZIP_SHA256
    try:
        fetch.check_arc_zip(zip_path)
        by_hand = fetch.fetch_source(source, tmp_path / "by-hand", arc_zip=zip_path)
    finally:
        fetch.ARC_ZIP_SHA256 = recorded
    assert (by_hand["verified"], by_hand["note"], by_hand["fetched_bytes"]) == ("zip sha256", None, 0)


def test_the_recorded_sources_name_their_checks():
    assert {s.name for s in fetch.SOURCES} == {"hellaswag", "arc_easy", "arc_challenge", "lambada_openai"}
    for s in fetch.SOURCES:
        assert s.url.startswith("https://") and (s.sha256 or s.git_blob) and s.provenance
        assert s.sha256 is None or len(s.sha256) == 64
