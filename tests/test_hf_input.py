"""``hf:`` inputs through the real ``datasets`` library, offline, on local directories.

``hf:NAME[:CONFIG][:SPLIT]`` passes NAME to ``datasets.load_dataset``, which takes a hub id or a local
directory of data files (read with its packaged json/parquet builders); tests use the latter.
"""
from __future__ import annotations

import json
import os

# Before anything imports `datasets`: it reads these once. Tests must never reach the hub.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import pytest  # noqa: E402

from preprocess.readers import BadInputFile, Record, Skipped, probe, read_records, resolve_inputs  # noqa: E402


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


def test_local_jsonl_directory(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    rows = [{"id": 1, "text": "one"}, {"id": 2, "text": ""}, {"id": 3, "text": "three"}]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    [inp] = resolve_inputs([f"hf:{d}"])
    assert (inp.kind, inp.size) == ("hf", None)
    assert list(read_records(inp)) == [Record("one", "1", 1), Skipped("empty_text", 2, "empty"),
                                       Record("three", "3", 3)]
    probe(inp)


def test_local_parquet_directory_with_split_and_text_field(tmp_path):
    d = tmp_path / "pq"
    d.mkdir()
    pq.write_table(pa.table({"content": ["a", "b"]}), d / "validation.parquet")
    [inp] = resolve_inputs([f"hf:{d}::validation"])
    assert list(read_records(inp, text_field="content")) == [Record("a", None, 1), Record("b", None, 2)]
    assert list(read_records(inp)) == [Skipped("missing_text", 1, "no 'text' field"),
                                       Skipped("missing_text", 2, "no 'text' field")]


def test_missing_dataset_is_a_clear_error(tmp_path):
    spec = "hf:no-such-org/no-such-dataset:en"
    [inp] = resolve_inputs([spec])
    with pytest.raises(BadInputFile) as exc:
        list(read_records(inp))
    msg = str(exc.value)
    assert exc.value.path == spec
    assert msg.startswith(f"{spec}: cannot open Hugging Face dataset 'no-such-org/no-such-dataset', config 'en', "
                          f"split 'train'")
    assert "huggingface.co/datasets/no-such-org/no-such-dataset" in msg and "--fallback-input" in msg
    with pytest.raises(BadInputFile, match="cannot open Hugging Face dataset"):
        probe(inp)
    missing_split = tmp_path / "c"
    missing_split.mkdir()
    (missing_split / "train.jsonl").write_text('{"text": "x"}\n')
    with pytest.raises(BadInputFile, match="split 'test'"):
        list(read_records(resolve_inputs([f"hf:{missing_split}::test"])[0]))
