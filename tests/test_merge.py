"""--part I/N builds merged with `python -m preprocess merge` hold exactly a single build's documents."""
from __future__ import annotations

import pytest

import shards
import tokenizer as tk
from preprocess.cli import main
from tests.conftest import FAST, assert_nothing_lost, decoded_documents, make_corpus, sample_texts


@pytest.fixture
def corpus_and_tokenizer(tmp_path):
    corpus = tmp_path / "corpus"
    texts = make_corpus(corpus, n_files=5, docs_per_file=30)
    assert main(["--tokenizer-only", "--input", str(corpus), "--out", str(tmp_path / "tok"), *FAST]) == 0
    return corpus, tmp_path / "tok" / "tokenizer.json", texts


def _part(corpus, tok, out, part, *extra):
    return main(["--input", str(corpus), "--tokenizer", str(tok), "--out", str(out), "--part", part, *FAST, *extra])


def test_merged_parts_hold_the_documents_of_a_single_build(tmp_path, corpus_and_tokenizer):
    corpus, tok, texts = corpus_and_tokenizer
    assert main(["--input", str(corpus), "--tokenizer", str(tok), "--out", str(tmp_path / "single"), *FAST]) == 0
    for i in (1, 2, 3):
        assert _part(corpus, tok, tmp_path / f"p{i}", f"{i}/3") == 0
    assert [len(shards.load_manifest(tmp_path / f"p{i}")["inputs"]) for i in (1, 2, 3)] == [2, 2, 1]
    # parts in any order
    assert main(["merge", str(tmp_path / "p3"), str(tmp_path / "p1"), str(tmp_path / "p2"),
                 "--out", str(tmp_path / "merged")]) == 0
    merged, single = tmp_path / "merged", tmp_path / "single"
    assert decoded_documents(merged) == decoded_documents(single)
    assert_nothing_lost(merged, texts)
    m, s = shards.load_manifest(merged), shards.load_manifest(single)
    assert m["totals"] == s["totals"] and m["tokenizer_sha256"] == s["tokenizer_sha256"] == tk.fingerprint(tok)
    assert sorted(x["path"] for x in m["inputs"]) == sorted(x["path"] for x in s["inputs"])
    assert m["options"] == s["options"]
    assert [e["file"] for e in shards.split_shards(m, "train")] == [
        shards.shard_file_name("train", i) for i in range(len(shards.split_shards(m, "train")))]


def test_merge_refuses_mismatched_or_missing_parts(tmp_path, corpus_and_tokenizer, capsys):
    corpus, tok, _ = corpus_and_tokenizer
    assert _part(corpus, tok, tmp_path / "p1", "1/2") == 0
    assert _part(corpus, tok, tmp_path / "p2", "2/2") == 0
    assert _part(corpus, tok, tmp_path / "p2x", "2/2", "--val-fraction", "0.3") == 0
    other = tmp_path / "other.json"
    tk.save(tk.train_bpe(sample_texts(80, seed=9), vocab_size=290), other)
    assert _part(corpus, other, tmp_path / "p2t", "2/2") == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "p1"), "--out", str(tmp_path / "m")]) == 2
    assert "missing 2/2" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "p1"), str(tmp_path / "p2x"), "--out", str(tmp_path / "m")]) == 2
    assert "--val-fraction 0.2 then, 0.3 now" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "p1"), str(tmp_path / "p2t"), "--out", str(tmp_path / "m")]) == 2
    assert "same tokenizer" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_part_without_tokenizer_is_refused(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=2, docs_per_file=5)
    assert main(["--input", str(corpus), "--out", str(tmp_path / "p"), "--part", "1/2", *FAST]) == 2
    assert "--tokenizer-only" in capsys.readouterr().err


def test_merging_onto_a_full_disk_names_the_file_and_the_space_and_loses_nothing(tmp_path, corpus_and_tokenizer,
                                                                                 capsys):
    import re

    from tests.conftest import file_hashes
    from tests.test_build_faults import _tmpfs

    corpus, tok, texts = corpus_and_tokenizer
    parts = [str(tmp_path / f"p{i}") for i in (1, 2)]
    for i, p in enumerate(parts, 1):
        assert _part(corpus, tok, p, f"{i}/2") == 0
    assert main(["merge", *parts, "--out", str(tmp_path / "reference")]) == 0
    reference = file_hashes(tmp_path / "reference")
    size = sum((tmp_path / "reference" / name).stat().st_size for name in reference)
    before = {p: file_hashes(p) for p in parts}
    with _tmpfs(tmp_path / "disk", f"{size // 2}") as disk:  # another filesystem: the shards are copied
        out = disk / "merged"
        assert main(["merge", *parts, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert re.search(rf"error: no space left on the device holding {out}/\S+ \(it needed about \d+ [kM]B, \d+ "
                         rf"[kM]?B are free there\)\. The parts are untouched", err), err
        assert "Traceback" not in err and not (out / shards.MANIFEST_NAME).exists()
        assert not [p.name for p in out.iterdir() if p.name.endswith(".copy")]
    assert {p: file_hashes(p) for p in parts} == before  # nothing of the parts lost
    assert main(["merge", *parts, "--out", str(tmp_path / "again")]) == 0
    assert file_hashes(tmp_path / "again") == reference
    assert_nothing_lost(tmp_path / "again", texts)
