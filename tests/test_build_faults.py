"""Stage 1 under real faults: a flipped bit in a gzip member, a bad first input, a full disk (a real
tmpfs), empty inputs and empty results, an HTML error page served with status 200, FIFOs and
devices among the inputs. Each fault is named and counted, and leaves every finished shard intact."""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import shards
from preprocess.cli import main
from tests.conftest import (
    FAST,
    ROOT,
    assert_nothing_lost,
    build,
    file_hashes,
    make_corpus,
    sample_texts,
    write_jsonl_gz,
)


def _flip_a_bit_that_inflates_into_garbage(data: bytes, past: int) -> bytes:
    """``data`` (one gzip member) with one bit flipped past byte ``past`` such that it still inflates to
    its full length without an error, and only the CRC at its end tells: the silent kind of damage."""
    for pos in range(past, len(data) - 8, 997):
        for bit in (0x10, 0x02):
            bad = bytearray(data)
            bad[pos] ^= bit
            d = zlib.decompressobj(wbits=31)
            try:
                out = d.decompress(bytes(bad[:-8]))  # everything but the trailer: no check yet
                if len(out) < len(gzip.decompress(data)) * 0.9:
                    continue
                d.decompress(bytes(bad[-8:]))
            except zlib.error as e:
                if "incorrect data check" in str(e) and out != gzip.decompress(data)[:len(out)]:
                    return bytes(bad)
                continue
    raise AssertionError("no silent bit flip found")


def _big_corpus(root: Path) -> list[str]:
    """Three .json.gz files, the middle one a few MB in one gzip member, as Dolma's are."""
    root.mkdir(parents=True)
    texts = sample_texts(9000, seed=3)
    texts = [t + " " + os.urandom(200).hex() for t in texts]  # random hex keeps the compressed file long
    for k, part in enumerate((texts[:600], texts[600:8400], texts[8400:])):
        write_jsonl_gz(root / f"part_{k:02d}.json.gz", [{"id": f"b{k}-{i}", "text": t} for i, t in enumerate(part)])
    return texts


@pytest.mark.slow
def test_a_flipped_bit_in_a_gzip_member_keeps_none_of_it_and_the_redownload_gives_the_clean_dataset(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    texts = _big_corpus(corpus)
    good = (corpus / "part_01.json.gz").read_bytes()
    assert len(good) > 2 << 20
    assert main(["--tokenizer-only", "--input", str(corpus), "--out", str(tmp_path / "tok"), *FAST]) == 0
    args = ["--shard-tokens", "20000", "--tokenizer", str(tmp_path / "tok" / shards.TOKENIZER_NAME)]
    assert build(corpus, tmp_path / "clean", *args) == 0
    damaged = _flip_a_bit_that_inflates_into_garbage(good, past=1 << 20)
    (corpus / "part_01.json.gz").write_bytes(damaged)

    out = tmp_path / "out"
    assert build(corpus, out, *args) == 2
    err = capsys.readouterr().err
    assert "part_01.json.gz: corrupt gzip data" in err and "are not kept" in err
    state = json.loads((out / shards.BUILD_DIR / "state.json").read_text())
    assert state["input_stats"][1]["status"].startswith("bad: corrupt gzip data")
    assert state["input_stats"][1]["documents"] == 0 and state["skipped"] == {}  # nothing of it kept or counted
    for entry in state["shards"]:  # every shard the state names is finished and sound
        assert shards.sha256_file(out / entry["file"]) == entry["sha256"]

    # what the error advises: replace it with a complete copy and rerun the same command
    (corpus / "part_01.json.gz").write_bytes(good)
    assert build(corpus, out, *args) == 0
    assert file_hashes(out) == file_hashes(tmp_path / "clean")

    # or go on without it: none of the damaged member's documents, and no garbage, are kept
    (corpus / "part_01.json.gz").write_bytes(damaged)
    skipped = tmp_path / "skipped"
    assert build(corpus, skipped, *args, "--skip-bad-files") == 0
    m = shards.load_manifest(skipped)
    assert m["inputs"][1]["status"].startswith("bad: ") and m["inputs"][1]["documents"] == 0 and m["skipped"] == {}
    assert_nothing_lost(skipped, texts[:600] + texts[8400:])

    # a tokenizer trained by the build itself may have sampled the damaged file: the error says so
    assert build(corpus, tmp_path / "trained", "--shard-tokens", "20000") == 2
    assert "the tokenizer may hold merges learned from it" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["random bytes", "zero-byte parquet", "unreadable", "404"])
def test_skip_bad_files_goes_on_when_the_first_input_is_the_bad_one(tmp_path, bad, static_server, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=30)
    inputs = [str(p) for p in sorted(corpus.iterdir())]
    first = tmp_path / "aaa"
    first.mkdir()
    if bad == "random bytes":
        (first / "a-0000.json.gz").write_bytes(os.urandom(5000))
        inputs.insert(0, str(first / "a-0000.json.gz"))
    elif bad == "zero-byte parquet":
        (first / "a-0000.parquet").write_bytes(b"")
        inputs.insert(0, str(first / "a-0000.parquet"))
    elif bad == "unreadable":  # a regular file that cannot be read, even by root: reading it is EIO
        os.symlink("/proc/self/mem", first / "a-0000.jsonl")
        inputs.insert(0, str(first / "a-0000.jsonl"))
    else:
        static_server.root = first
        inputs.insert(0, static_server.url("a-0000.json.gz"))
    out = tmp_path / "out"
    assert main(["--input", *inputs, "--out", str(out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "--skip-bad-files" in err and "Traceback" not in err
    assert main(["--input", *inputs, "--out", str(out), *FAST, "--skip-bad-files"]) == 0
    err = capsys.readouterr().err
    assert "pass --skip-bad-files" not in err  # no advice to pass the flag the user passed
    m = shards.load_manifest(out)
    assert m["inputs"][0]["status"].startswith("bad: ") and m["inputs"][0]["documents"] == 0
    assert_nothing_lost(out, texts)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str):
    if os.geteuid() != 0:
        pytest.skip("a full disk is simulated with a small tmpfs, which needs root to mount")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_full_disk_names_the_file_and_the_space_then_the_rerun_finishes_the_same_dataset(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=4, docs_per_file=300)
    args = ["--shard-tokens", "20000"]
    assert build(corpus, tmp_path / "reference", *args) == 0
    reference = file_hashes(tmp_path / "reference")
    size = sum((tmp_path / "reference" / n).stat().st_size for n in reference)
    with _tmpfs(tmp_path / "disk", f"{size // 2}") as disk:
        out = disk / "out"
        assert build(corpus, out, *args) == 2
        err = capsys.readouterr().err
        assert re.search(rf"no space left on the device holding {out}/\S+ \(it needed about \d+ [km]B, \d+ [km]B are "
                         rf"free there\)", err), err
        assert "run the same command again" in err and "Traceback" not in err
        state = json.loads((out / shards.BUILD_DIR / "state.json").read_text())
        assert state["shards"]
        for entry in state["shards"]:
            assert shards.sha256_file(out / entry["file"]) == entry["sha256"]
        # make room (a bigger disk), and the same command goes on
        shutil.copytree(out, tmp_path / "moved", symlinks=True)
    out = tmp_path / "moved"
    assert build(corpus, out, *args) == 0
    assert file_hashes(out) == reference


def test_a_full_disk_while_copying_the_tokenizer_leaves_the_build_resumable(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=30)
    # a 4,096-token vocabulary learned from random hex: a tokenizer.json of a few hundred kB
    hexes = tmp_path / "hex"
    hexes.mkdir()
    write_jsonl_gz(hexes / "h.json.gz", [{"text": os.urandom(400).hex()} for _ in range(3000)])
    assert main(["--tokenizer-only", "--input", str(hexes), "--out", str(tmp_path / "tok"), "--vocab-size", "4096",
                 "--quiet"]) == 0
    tok = tmp_path / "tok" / "tokenizer.json"
    assert tok.stat().st_size > 200_000
    with _tmpfs(tmp_path / "disk", "1m") as disk:
        # room for the lock, the state and the plan (a few kB), not for the tokenizer
        filler = disk / "filler"
        filler.write_bytes(b"\0" * ((1 << 20) - 64 * 1024))
        out = disk / "out"
        assert build(corpus, out, "--tokenizer", str(tok)) == 2
        err = capsys.readouterr().err
        assert "no space left" in err and "tokenizer.json" in err, err
        filler.unlink()  # space freed: the same command builds
        assert build(corpus, out, "--tokenizer", str(tok)) == 0
        assert_nothing_lost(out, texts)


@pytest.mark.parametrize("name,data", [("e-0000.json.gz", b""), ("e-0000.jsonl.zst", b""), ("e-0000.jsonl", b""),
                                       ("e-0000.json.gz", gzip.compress(b"", mtime=0))])
def test_an_empty_input_is_a_bad_input(tmp_path, name, data, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=1, docs_per_file=20)
    (corpus / name).write_bytes(data)
    assert build(corpus, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "is empty" in err and "complete copy" not in err  # not damage: no advice to copy it again
    assert build(corpus, tmp_path / "out", "--skip-bad-files") == 0
    m = shards.load_manifest(tmp_path / "out")
    assert [x["status"].split(":")[0] for x in m["inputs"] if x["path"].endswith(name)] == ["bad"]
    assert_nothing_lost(tmp_path / "out", texts)


def test_a_build_that_keeps_no_document_is_an_error_that_says_why(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2, docs_per_file=20)
    # an input whose every record is skipped is a bad input, named with what to do (not "ok" with nothing)
    assert build(corpus, tmp_path / "typo", "--text-field", "txet") == 2
    err = capsys.readouterr().err
    assert "part_00.json.gz: all its 20 records were skipped (missing_text 20); is the text in another field" in err
    assert "--text-field" in err and "complete copy" not in err  # not damage: no advice to copy it again
    assert not (tmp_path / "typo" / shards.MANIFEST_NAME).exists()
    # going on without such inputs, the build keeps nothing and says why
    assert build(corpus, tmp_path / "typo", "--text-field", "txet", "--skip-bad-files") == 2
    err = capsys.readouterr().err
    assert "no document was kept: 40 records read, all skipped (missing_text 40)" in err
    assert "--text-field" in err and not (tmp_path / "typo" / shards.MANIFEST_NAME).exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    write_jsonl_gz(bad / "b.json.gz", [b"{oops", {"text": 3}, {"text": " "}])
    assert build(bad, tmp_path / "all-bad") == 2
    assert "all its 3 records were skipped (empty_text 1, malformed_json 1, non_string_text 1)" in \
        capsys.readouterr().err


def test_an_html_error_page_served_with_status_200_is_named_for_what_it_is(tmp_path, static_server, capsys):
    root = tmp_path / "site"
    root.mkdir()
    (root / "c4-0000.json.gz").write_text("<!DOCTYPE html><html><head><title>429 Too Many Requests</title>")
    (root / "c4-0001.jsonl").write_text("<html><body>Sign in to continue</body></html>\n")
    static_server.root = root
    for name in ("c4-0000.json.gz", "c4-0001.jsonl"):
        assert main(["--input", static_server.url(name), "--out", str(tmp_path / name), *FAST]) == 2
        err = capsys.readouterr().err
        assert "HTML" in err and "Invalid gzip" not in err and "Traceback" not in err, err
    assert main(["--input", static_server.url("c4-0000.json.gz"), "--out", str(tmp_path / "x"), *FAST]) == 2
    err = capsys.readouterr().err
    assert "the server sent an HTML page instead of gzip data" in err and "429 Too Many Requests" in err
    assert "complete copy" not in err and "re-download" not in err
    # the same page saved to disk by a download tool
    local = tmp_path / "saved" / "c4-0000.json.gz"
    local.parent.mkdir()
    shutil.copy(root / "c4-0000.json.gz", local)
    assert build(local.parent, tmp_path / "y") == 2
    assert "is an HTML page, not gzip data" in capsys.readouterr().err


def test_fifos_and_devices_are_passed_over_and_no_line_is_read_without_bound(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=20)
    os.mkfifo(corpus / "pipe.jsonl")  # nothing ever writes to it: reading it would block forever
    os.symlink("/dev/zero", corpus / "zeros.jsonl")  # reading it would never end
    done = subprocess.run([sys.executable, "-m", "preprocess", "--input", str(corpus), "--out", str(tmp_path / "out"),
                           *FAST], cwd=ROOT, capture_output=True, text=True, timeout=120)  # a hang fails, not blocks
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert "passed over" in err and "pipe.jsonl: a FIFO" in err and "zeros.jsonl: a character device" in err
    assert_nothing_lost(tmp_path / "out", texts)
    assert main(["--input", str(corpus / "pipe.jsonl"), "--out", str(tmp_path / "fifo"), *FAST]) == 2
    assert "is a FIFO, not a regular file" in capsys.readouterr().err
    # a regular file of 300 MB without a line break (sparse: no disk used) is refused, not buffered whole
    huge = tmp_path / "huge" / "h-0000.jsonl"
    huge.parent.mkdir()
    with open(huge, "wb") as f:
        f.truncate(300 << 20)
    assert build(huge.parent, tmp_path / "h") == 2
    assert "runs past 256 MiB without a line break" in capsys.readouterr().err


def test_an_output_that_is_a_file_or_not_writable_is_refused_clearly(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=1, docs_per_file=10)
    (tmp_path / "file").write_text("x")
    assert build(corpus, tmp_path / "file") == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    assert build(corpus, tmp_path / "file" / "below") == 2
    err = capsys.readouterr().err
    assert "cannot create it" in err and "Traceback" not in err


def test_parquet_with_no_rows_is_empty(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=1, docs_per_file=10)
    pq.write_table(pa.table({"text": pa.array([], pa.string())}), corpus / "none.parquet")
    assert build(corpus, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "is empty: it holds no rows" in err and "complete copy" not in err
    # a missing column is not damage either: the message says which columns there are and what to pass
    other = tmp_path / "other"
    make_corpus(other, n_files=1, docs_per_file=10)
    pq.write_table(pa.table({"content": ["a", "b"]}), other / "c.parquet")
    assert build(other, tmp_path / "other-out") == 2
    err = capsys.readouterr().err
    assert "c.parquet: no column 'text' (columns: content); pass --text-field" in err and "complete copy" not in err
    assert build(corpus, tmp_path / "out", "--skip-bad-files") == 0
    assert_nothing_lost(tmp_path / "out", texts)


def test_ctrl_c_during_tokenizer_training_stops_the_build_at_once(tmp_path):
    """The trainer works in native code, where an interrupt only takes effect when it is done (minutes on
    the default 1 GB sample): Ctrl-C must stop the build there and then, exit 130, and leave it resumable.
    Here the whole training takes most of a minute (8 MB of random letters, a 60k vocabulary); the
    interrupt comes 3 s in, once the sample (read first) is in the trainer."""
    import signal
    import time

    table = bytes((b"bcdfghjklmnprstvzaeiou" * 12)[:216] + b" " * 40)  # random letters, a space every ~6
    raw = os.urandom(8 << 20).translate(table).decode()
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_jsonl_gz(corpus / "w-0000.json.gz", [{"text": raw[i:i + 2000]} for i in range(0, len(raw), 2000)])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "preprocess", "--input", str(corpus), "--out", str(out),
                             "--vocab-size", "60000"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    for line in proc.stderr:
        if "training a 60,000-token byte-level BPE" in line:
            break
    time.sleep(3)
    assert proc.poll() is None, "the training ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=20)  # a hang guard: the rest of the training would take far longer
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert rc == 130, err
    assert "interrupted; every finished shard is kept: run the same command again to resume" in err
    assert "Traceback" not in err
    assert not (out / shards.TOKENIZER_NAME).exists()  # nothing half-trained is kept
    assert (out / shards.BUILD_DIR / "state.json").exists()  # the build is known and resumes


def test_a_huge_first_document_gives_the_encoder_check_only_its_first_256_kb(tmp_path):
    """The fast engine's check encodes its sample with HF, whose memory grows with a text's length; a
    document of tens of MB as the first record must not reach it whole (it took over 8 GB for 50 MB)."""
    from preprocess import build as builds
    from preprocess import readers
    from preprocess.options import BuildOptions

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    table = bytes((b"bcdfghjklmnprstvzaeiou" * 12)[:216] + b" " * 40)
    huge = os.urandom(12 << 20).translate(table).decode()
    texts = sample_texts(50)
    write_jsonl_gz(corpus / "b-0000.json.gz", [{"id": "huge", "text": huge}]
                   + [{"id": str(i), "text": t} for i, t in enumerate(texts)])
    b = builds.Builder(BuildOptions(out=str(tmp_path / "out"), inputs=[str(corpus)]), log=lambda msg: None)
    plan, inputs = b.make_plan(readers.resolve_inputs([str(corpus)]))
    sample = b.encoder_sample(plan, inputs, b.reads(plan))
    assert sample == [huge[:builds.ENCODER_SAMPLE_BYTES]]  # one byte per character here: cut to the budget
