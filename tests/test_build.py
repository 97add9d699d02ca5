"""The build pipeline end to end on tiny corpora: manifest, split, determinism, refusals, bad input."""
from __future__ import annotations

import collections
import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

import shards
import tokenizer as tk
from preprocess.cli import main
from preprocess.encode import split_is_val
from preprocess.options import OptionError, parse_count, parse_part, select_part
from tests.conftest import (
    FAST,
    assert_nothing_lost,
    build,
    decoded_documents,
    file_hashes,
    make_corpus,
    sample_texts,
    write_jsonl_gz,
)

# ---------------------------------------------------------------------------------------------------

def test_manifest_contents(tmp_path):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=30)
    write_jsonl_gz(corpus / "part_02.json.gz", [
        {"id": "bad-surrogate", "text": "a lone \ud800 surrogate"},
        b'{"id": "x", "text": ',                      # malformed JSON
        {"id": "y"},                                  # no text field
        {"id": "z", "text": 7},                       # non-string text
        {"id": "w", "text": "   \n "},                # whitespace only
        b'{"text": "caf\xe9"}',                      # Latin-1 byte: not UTF-8
    ])
    assert build(corpus, tmp_path / "out", "--workers", "1") == 0
    m = shards.load_manifest(tmp_path / "out")
    assert m["format_version"] == shards.FORMAT_VERSION
    assert m["dtype"] == "uint16" and m["vocab_size"] == 300 and m["eot_id"] == 0
    assert m["tokenizer_sha256"] == tk.fingerprint(tmp_path / "out" / "tokenizer.json")
    assert m["skipped"] == {"empty_text": 1, "malformed_json": 1, "missing_text": 1, "non_string_text": 1,
                            "undecodable_bytes": 1}
    assert m["repaired"] == {"lone_surrogates": 1}
    assert [(Path(x["path"]).name, x["kind"], x["records"], x["documents"], x["status"]) for x in m["inputs"]] == [
        ("part_00.json.gz", "jsonl.gz", 30, 30, "ok"),
        ("part_01.json.gz", "jsonl.gz", 30, 30, "ok"),
        ("part_02.json.gz", "jsonl.gz", 6, 1, "ok")]
    assert m["inputs"][2]["skipped"] == {"malformed_json": 1, "missing_text": 1, "non_string_text": 1,
                                         "empty_text": 1, "undecodable_bytes": 1}
    assert all(x["size"] == (corpus / Path(x["path"]).name).stat().st_size for x in m["inputs"])
    assert sum(x["tokens"] for x in m["inputs"]) == sum(t["tokens"] for t in m["totals"].values())
    for split in shards.SPLITS:
        entries = shards.split_shards(m, split)
        assert [e["file"] for e in entries] == [shards.shard_file_name(split, i) for i in range(len(entries))]
        assert m["totals"][split] == {"tokens": sum(e["tokens"] for e in entries),
                                      "documents": sum(e["documents"] for e in entries)}
    assert m["totals"]["train"]["documents"] + m["totals"]["val"]["documents"] == 61
    assert m["options"]["val_fraction"] == 0.2 and m["options"]["shard_tokens"] == 400
    assert "workers" not in m["options"] and "quiet" not in m["options"]
    assert m["encoder"]["engine"] == "tiktoken"
    assert m["split"]["val_fraction"] == 0.2
    assert_nothing_lost(tmp_path / "out", texts + ["a lone \ufffd surrogate"])
    assert not (tmp_path / "out" / ".build").exists()


def test_split_is_by_document_hash_and_stable(tmp_path):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=40)
    ids = [f"s0-{f}-{i}" for f in range(2) for i in range(40)]
    assert build(corpus, tmp_path / "a") == 0
    assert build(corpus, tmp_path / "b", "--shard-tokens", "5000") == 0  # other shard boundaries
    expected_val = collections.Counter(t for t, i in zip(texts, ids, strict=True) if split_is_val(i, 0.2))
    assert 0 < sum(expected_val.values()) < len(texts)
    for out in ("a", "b"):
        docs = decoded_documents(tmp_path / out)
        assert docs["val"] == expected_val
        assert not set(docs["val"]) & set(docs["train"])
        assert docs["train"] + docs["val"] == collections.Counter(texts)


def test_split_hash_threshold():
    assert split_is_val("anything", 0.0) is False
    assert split_is_val("anything", 0.999999999) is True
    frac = sum(split_is_val(str(i), 0.1) for i in range(20000)) / 20000
    assert 0.09 < frac < 0.11


def test_output_identical_for_any_number_of_workers(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=3, docs_per_file=60)
    for w in ("1", "2", "3"):
        assert build(corpus, tmp_path / f"w{w}", "--workers", w) == 0
    h1 = file_hashes(tmp_path / "w1")
    assert len([n for n in h1 if n.endswith(".bin")]) > 6
    assert file_hashes(tmp_path / "w2") == h1
    assert file_hashes(tmp_path / "w3") == h1


def test_both_engines_write_the_same_shards(tmp_path):
    """The HF reference and the fast engine (its array path, the build's) give byte-identical shards,
    on text that includes a literal separator, a lone surrogate and mixed scripts."""
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=50)
    write_jsonl_gz(corpus / "part_99.json.gz", [
        {"id": "sep", "text": "before <|endoftext|> after"}, b'{"id": "sur", "text": "lone \\ud800 one"}',
        {"id": "mix", "text": "日本語 😀 café e\u0301 \t\r\n  end  "}])
    assert build(corpus, tmp_path / "fast", "--workers", "2") == 0
    m = shards.load_manifest(tmp_path / "fast")
    assert m["encoder"]["engine"] == "tiktoken" and m["repaired"]["lone_surrogates"] == 1
    tok = tmp_path / "fast" / "tokenizer.json"
    assert main(["--input", str(corpus), "--out", str(tmp_path / "hf"), *FAST, "--tokenizer", str(tok),
                 "--encoder", "hf"]) == 0
    assert shards.load_manifest(tmp_path / "hf")["encoder"]["engine"] == "hf"
    fast, hf = file_hashes(tmp_path / "fast"), file_hashes(tmp_path / "hf")
    assert {n: h for n, h in fast.items() if n.endswith((".bin", ".idx"))} == \
        {n: h for n, h in hf.items() if n.endswith((".bin", ".idx"))}
    assert_nothing_lost(tmp_path / "fast", texts + ["before <|endoftext|> after", "lone \ufffd one",
                                                    "日本語 😀 café e\u0301 \t\r\n  end  "])


def test_tokenizers_the_fast_engine_cannot_match_fall_back_to_hf():
    tok = tk.train_bpe(sample_texts(30), vocab_size=300)
    assert tk.make_encoder(tok).engine == "tiktoken"
    plain = Tokenizer.from_str(tok.to_str())
    plain.add_tokens(["zebra"])  # an added token that is not special: HF matches it inside text
    enc = tk.make_encoder(plain)
    assert enc.engine == "hf" and "not special" in enc.reason
    assert enc.encode("a zebra") == plain.encode("a zebra", add_special_tokens=False).ids
    with pytest.raises(tk.TokenizerError, match="cannot encode this tokenizer exactly"):
        tk.make_encoder(plain, "tiktoken")
    spec = json.loads(tok.to_str())
    spec["normalizer"] = {"type": "Lowercase"}
    enc = tk.make_encoder(Tokenizer.from_str(json.dumps(spec)))
    assert enc.engine == "hf" and "normalizer" in enc.reason


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failed_encoder_check_restarts_with_hf_before_writing(tmp_path, monkeypatch, workers, capsys):
    """The check runs while the first batches encode; when it fails, the build starts over with HF and
    the output is exactly an --encoder hf build's. (No real tokenizer is known to fail the check, so the
    check's verdict is replaced here; everything else is the real build.)"""
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=40)
    assert build(corpus, tmp_path / "hf", "--encoder", "hf") == 0
    tok = str(tmp_path / "hf" / "tokenizer.json")

    def reject(fast, tok, sample=(), engine="auto"):
        return tk.Encoder(tok, "hf", "tiktoken's ids differ from HF's (simulated)")
    monkeypatch.setattr(tk, "verify_encoder", reject)
    capsys.readouterr()
    assert main(["--input", str(corpus), "--out", str(tmp_path / "fell_back"), *FAST, "--tokenizer", tok,
                 "--workers", workers]) == 0
    # a warning, shown even with --quiet: the build is slower than it would be
    assert "encoder: hf (tiktoken's ids differ from HF's (simulated))" in capsys.readouterr().err
    m = shards.load_manifest(tmp_path / "fell_back")
    assert m["encoder"] == {"engine": "hf", "reason": "tiktoken's ids differ from HF's (simulated)"}
    assert m["totals"] == shards.load_manifest(tmp_path / "hf")["totals"]
    want = {n: h for n, h in file_hashes(tmp_path / "hf").items() if n.endswith((".bin", ".idx"))}
    assert {n: h for n, h in file_hashes(tmp_path / "fell_back").items() if n.endswith((".bin", ".idx"))} == want
    assert_nothing_lost(tmp_path / "fell_back", texts)

    def insist(fast, tok, sample=(), engine="auto"):
        raise tk.TokenizerError("the tiktoken engine cannot encode this tokenizer exactly: (simulated)")
    monkeypatch.setattr(tk, "verify_encoder", insist)
    assert main(["--input", str(corpus), "--out", str(tmp_path / "insist"), *FAST, "--tokenizer", tok,
                 "--encoder", "tiktoken", "--workers", workers]) != 0
    assert "cannot encode this tokenizer exactly" in capsys.readouterr().err
    assert not list((tmp_path / "insist").glob("*.bin"))


def test_quiet_prints_nothing_but_warnings(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2, docs_per_file=20)
    assert build(corpus, tmp_path / "out") == 0
    assert capsys.readouterr() == ("", "")
    write_jsonl_gz(corpus / "part_09.json.gz", [{"text": "fine"}, b'{"text": 42}'])
    assert build(corpus, tmp_path / "out2") == 0
    out, err = capsys.readouterr()
    skipped = f"skipped {corpus / 'part_09.json.gz'}:2: non_string_text ('text' is a number, not a string)"
    assert out == "" and err.strip() == skipped
    assert main(["--input", str(corpus), "--out", str(tmp_path / "loud"), *FAST[:-1]]) == 0
    out, err = capsys.readouterr()
    assert "encoder: tiktoken" in err and "training a 300-token" in err and "dataset " in out + err


def test_a_dataset_built_inside_the_corpus_is_not_read_back(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=2, docs_per_file=20)
    out = corpus / "tokens"  # written into a folder of the input directory
    assert build(corpus, out) == 0
    m = shards.load_manifest(out)
    assert [Path(x["path"]).name for x in m["inputs"]] == ["part_00.json.gz", "part_01.json.gz"]
    assert m["skipped"] == {}
    capsys.readouterr()
    assert build(corpus, out) == 0  # its own tokenizer.json and manifest.json did not become inputs
    assert "up to date" in capsys.readouterr().err
    assert_nothing_lost(out, texts)
    assert build(out, tmp_path / "again") == 2
    assert "is a dataset or run directory written by this project, not a corpus" in capsys.readouterr().err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_text_field_reaches_the_workers_that_parse(tmp_path, workers):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    texts = sample_texts(50, seed=3)
    write_jsonl_gz(corpus / "a.json.gz", [{"id": i, "content": t, "text": "not this"} for i, t in enumerate(texts)])
    assert build(corpus, tmp_path / "out", "--text-field", "content", "--workers", workers) == 0
    assert_nothing_lost(tmp_path / "out", texts)


def test_read_parses_once_and_fingerprints_like_fingerprint(tmp_path):
    tok = tk.train_bpe(sample_texts(30), vocab_size=300)
    sha = tk.save(tok, tmp_path / "t.json")
    loaded = tk.read(tmp_path / "t.json")
    assert loaded.sha256 == sha == tk.fingerprint(tmp_path / "t.json")
    assert loaded.spec == json.loads(tok.to_str()) and loaded.tok.to_str() == tok.to_str()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(tk.TokenizerError, match="not a tokenizer.json"):
        tk.read(tmp_path / "bad.json")


def test_spawned_workers_give_the_same_shards(tmp_path, monkeypatch):
    """macOS and Windows start workers with spawn (the encoder travels pickled, as its tokenizer's
    JSON); the shards must be those of forked workers."""
    import multiprocessing

    import preprocess.encode as encode_module
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2, docs_per_file=40)
    assert build(corpus, tmp_path / "forked", "--workers", "2") == 0
    asked = []

    def get_context(method):
        asked.append(method)
        return multiprocessing.get_context("spawn")
    monkeypatch.setattr(encode_module, "multiprocessing", type("Spawn", (), {"get_context": staticmethod(get_context)}))
    tok = str(tmp_path / "forked" / "tokenizer.json")
    assert build(corpus, tmp_path / "spawned", "--workers", "2", "--tokenizer", tok) == 0
    assert asked == ["fork"]  # the build asked for its Linux default and got spawn
    shard_files = lambda d: {n: h for n, h in file_hashes(d).items() if n.endswith((".bin", ".idx"))}  # noqa: E731
    assert shard_files(tmp_path / "spawned") == shard_files(tmp_path / "forked")


def test_max_tokens_stops_after_the_document_that_reaches_it(tmp_path):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=3, docs_per_file=40)
    assert build(corpus, tmp_path / "out", "--max-tokens", "1.5k", "--in-order") == 0
    m = shards.load_manifest(tmp_path / "out")
    total = sum(t["tokens"] for t in m["totals"].values())
    n_docs = sum(t["documents"] for t in m["totals"].values())
    assert 1500 <= total and m["stopped_at_max_tokens"] is True
    last_doc_tokens = len(tk.load(tmp_path / "out" / "tokenizer.json").encode(texts[n_docs - 1]).ids) + 1
    assert total - last_doc_tokens < 1500
    assert_nothing_lost(tmp_path / "out", texts[:n_docs])
    assert m["inputs"][0]["status"] == "partly read: --max-tokens reached"
    assert [x["status"] for x in m["inputs"][1:]] == ["not read: --max-tokens reached"] * 2


def test_same_command_again_is_up_to_date(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=1, docs_per_file=20)
    assert build(corpus, tmp_path / "out") == 0
    before = file_hashes(tmp_path / "out")
    assert build(corpus, tmp_path / "out", "--workers", "1") == 0
    assert "is up to date" in capsys.readouterr().err
    assert file_hashes(tmp_path / "out") == before


def test_changed_inputs_are_not_up_to_date(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2, docs_per_file=20)
    assert build(corpus, tmp_path / "out") == 0
    capsys.readouterr()
    make_corpus(tmp_path / "more", n_files=1, docs_per_file=5, seed=1)
    added = corpus / "zz-added.json.gz"
    (tmp_path / "more").joinpath(next(p.name for p in (tmp_path / "more").iterdir())).rename(added)
    assert build(corpus, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "other input files" in err and "1 new or changed, 0 gone or changed" in err and str(added) in err
    assert build(corpus, tmp_path / "out", "--overwrite") == 0
    assert len(shards.load_manifest(tmp_path / "out")["inputs"]) == 3


def test_different_options_refused_unless_overwrite(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=1, docs_per_file=20)
    assert build(corpus, tmp_path / "out") == 0
    assert build(corpus, tmp_path / "out", "--val-fraction", "0.5") == 2
    err = capsys.readouterr().err
    assert "different options" in err and "--val-fraction 0.2 then, 0.5 now" in err and "--overwrite" in err
    assert build(corpus, tmp_path / "out", "--val-fraction", "0.5", "--overwrite") == 0
    assert shards.load_manifest(tmp_path / "out")["options"]["val_fraction"] == 0.5


def test_uint16_overflow_refused_before_any_work(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=1, docs_per_file=5)
    rc = main(["--input", str(corpus), "--out", str(tmp_path / "out"), "--vocab-size", "70000", "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "does not fit in uint16" in err and "--dtype uint32" in err
    assert not (tmp_path / "out").exists()


def test_tokenizer_without_separator_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=1, docs_per_file=5)
    tok = Tokenizer.from_str(tk.train_bpe(sample_texts(50), vocab_size=280).to_str())
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = []
    spec["model"]["vocab"] = {k: v for k, v in spec["model"]["vocab"].items() if k != tk.EOT_TOKEN}
    (tmp_path / "tok.json").write_text(json.dumps(spec))
    assert build(corpus, tmp_path / "out", "--tokenizer", str(tmp_path / "tok.json")) == 2
    assert "no <|endoftext|> token" in capsys.readouterr().err


def test_given_tokenizer_is_copied_and_used(tmp_path):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=1, docs_per_file=20)
    tk.save(tk.train_bpe(sample_texts(100, seed=5), vocab_size=290), tmp_path / "tok.json")
    assert build(corpus, tmp_path / "out", "--tokenizer", str(tmp_path / "tok.json")) == 0
    m = shards.load_manifest(tmp_path / "out")
    assert m["tokenizer_sha256"] == tk.fingerprint(tmp_path / "tok.json") and m["vocab_size"] == 290
    assert m["options"]["vocab_size"] is None
    assert_nothing_lost(tmp_path / "out", texts)


def test_truncated_gzip_stops_with_clear_error_then_skip_bad_files_goes_on(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=3, docs_per_file=40)
    bad = corpus / "part_01.json.gz"
    # two gzip members, 25 documents then 15, the second one cut short: only the first passes its check
    lines = gzip.decompress(bad.read_bytes()).splitlines(keepends=True)
    second = gzip.compress(b"".join(lines[25:]), mtime=0)
    bad.write_bytes(gzip.compress(b"".join(lines[:25]), mtime=0) + second[: len(second) * 2 // 3])
    out = tmp_path / "out"
    assert build(corpus, out) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "truncated" in err and "--skip-bad-files" in err
    assert not (out / "manifest.json").exists()
    state = json.loads((out / ".build" / "state.json").read_text())
    assert state["shards"], "the shards finished before the bad file are recorded"
    for entry in state["shards"]:
        assert hashlib.sha256((out / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    assert build(corpus, out, "--skip-bad-files") == 0
    m = shards.load_manifest(out)
    status = [x["status"] for x in m["inputs"]]
    assert status[0] == "ok" and status[2] == "ok" and status[1].startswith("bad: ") and "truncated" in status[1]
    kept = m["inputs"][1]["documents"]
    assert kept == 25
    # the documents of the member that passed its check are kept; the rest of that file is gone
    assert_nothing_lost(out, texts[:40 + kept] + texts[80:])


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_failed_file_replaced_by_a_complete_copy_resumes_inside_it(tmp_path, capsys, workers):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=3, docs_per_file=40)
    bad = corpus / "part_01.json.gz"
    good = bad.read_bytes()
    bad.write_bytes(good[: len(good) * 2 // 3])  # a download cut short
    out = tmp_path / "out"
    assert build(corpus, out, "--workers", workers) == 2
    assert "replace it with a complete copy of the same file" in capsys.readouterr().err
    bad.write_bytes(good)  # downloaded again
    assert build(corpus, out, "--workers", workers) == 0
    assert "has changed since it failed; going on inside it" in capsys.readouterr().err
    # the same as a build of the complete files with the tokenizer the first run trained
    tok = str(out / "tokenizer.json")
    assert build(corpus, tmp_path / "reference", "--tokenizer", tok) == 0
    shard_files = lambda d: {n: h for n, h in file_hashes(d).items() if n.endswith((".bin", ".idx"))}  # noqa: E731
    assert shard_files(out) == shard_files(tmp_path / "reference")
    assert shards.load_manifest(out)["inputs"][1]["status"] == "ok"
    # any other change of the inputs is still refused
    other = tmp_path / "other"
    bad.write_bytes(good[: len(good) * 2 // 3])
    assert build(corpus, other) == 2
    (corpus / "part_02.json.gz").write_bytes(gzip.compress(b'{"text": "changed"}\n'))
    bad.write_bytes(good)
    assert build(corpus, other) == 2
    assert "the input files differ" in capsys.readouterr().err


def test_skip_bad_files_from_the_start_matches_resumed(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=3, docs_per_file=40)
    bad = corpus / "part_01.json.gz"
    bad.write_bytes(bad.read_bytes()[:300])
    assert build(corpus, tmp_path / "a", "--skip-bad-files") == 0
    assert build(corpus, tmp_path / "b") == 2
    assert build(corpus, tmp_path / "b", "--skip-bad-files") == 0
    assert file_hashes(tmp_path / "a") == file_hashes(tmp_path / "b")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
def test_default_workers_are_the_cpus_this_process_may_use():
    """In a container or a job limited to some CPUs, the default must not fork one worker per CPU of
    the whole machine."""
    from preprocess.options import BuildOptions
    before = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(before)})
        assert BuildOptions(out="x").workers == 1
    finally:
        os.sched_setaffinity(0, before)
    assert BuildOptions(out="x").workers == len(before)


def test_count_and_part_parsing():
    assert [parse_count(s) for s in ("5e9", "100M", "1.5B", "32k", "1_000", "400")] == [
        5_000_000_000, 100_000_000, 1_500_000_000, 32_000, 1000, 400]
    for bad in ("", "abc", "1.5", "-3", "0", "5e-1"):
        with pytest.raises(OptionError):
            parse_count(bad)
    assert parse_part("2/3") == (2, 3)
    for bad in ("0/3", "4/3", "1", "a/b"):
        with pytest.raises(OptionError):
            parse_part(bad)
    assert [select_part(list(range(7)), f"{i}/3") for i in (1, 2, 3)] == [[0, 3, 6], [1, 4], [2, 5]]


def test_shards_are_plain_memmaps(tmp_path):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=1, docs_per_file=30)
    assert build(corpus, tmp_path / "out") == 0
    m = shards.load_manifest(tmp_path / "out")
    for e in m["shards"]:
        assert len(np.memmap(tmp_path / "out" / e["file"], dtype=np.uint16, mode="r")) == e["tokens"]


def test_a_dataset_built_before_plans_is_still_up_to_date(tmp_path, capsys):
    """A manifest without the plan's options and no plan.json (what earlier versions wrote): the same
    command finds it up to date, and a changed input still is not."""
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2, docs_per_file=20)
    out = tmp_path / "out"
    assert build(corpus, out) == 0
    m = json.loads((out / "manifest.json").read_text())
    for key in ("mix", "source_pattern", "seed", "in_order"):
        del m["options"][key]
    (out / "manifest.json").write_text(json.dumps(m))
    (out / "plan.json").unlink()
    capsys.readouterr()
    assert build(corpus, out, "--quiet") == 0 and "is up to date" in capsys.readouterr().err
    make_corpus(corpus, n_files=3, docs_per_file=20)
    assert build(corpus, out) == 2 and "built from other input files" in capsys.readouterr().err


def test_a_max_tokens_too_small_for_one_document_says_so(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("a", "b", "c"):  # three sources of the same size: each a third of --max-tokens 1, so none
        make_corpus(tmp_path / name, n_files=1, docs_per_file=20, seed=ord(name))
        (tmp_path / name / "part_00.json.gz").rename(corpus / f"{name}-0000.json.gz")
    assert build(corpus, tmp_path / "out", "--max-tokens", "1") == 2
    err = capsys.readouterr().err
    assert "the plan reads nothing: --max-tokens 1 gives no source a quota of even one document (3 sources share " \
           "it); give a larger --max-tokens" in err
    assert "--part" not in err
