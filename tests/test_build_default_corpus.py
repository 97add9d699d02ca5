"""The build with no --input: the built-in default corpus through the real Dolma reader."""
from __future__ import annotations

import gzip
import json

import pytest

import shards
import tokenizer as tk
from preprocess.cli import main
from preprocess.default_corpus import default_corpus_dir
from tests.conftest import assert_nothing_lost


@pytest.mark.slow
def test_default_corpus_build(tmp_path, capsys):
    out = tmp_path / "data"
    assert main(["--out", str(out), "--vocab-size", "2000", "--shard-tokens", "300k"]) == 0
    out_text, err = capsys.readouterr()
    assert "no --input given: building on the built-in default corpus" in err
    assert f"dataset {out}" in out_text + err  # the summary
    m = shards.load_manifest(out)
    assert m["source"] == {"source": "default corpus"}
    corpus = default_corpus_dir(out)
    assert [x["kind"] for x in m["inputs"]] == ["jsonl.gz"] * len(m["inputs"]) and len(m["inputs"]) > 1
    assert all(x["status"] == "ok" and x["path"].startswith(str(corpus)) for x in m["inputs"])
    good = []
    for x in m["inputs"]:
        with gzip.open(x["path"], "rt", encoding="utf-8") as f:
            good += [tk.repair_surrogates(json.loads(line)["text"])[0] for line in f]
    assert sum(t["documents"] for t in m["totals"].values()) == len(good) > 1000
    assert m["totals"]["val"]["documents"] > 0 and len(shards.split_shards(m, "train")) > 1
    assert_nothing_lost(out, good)
