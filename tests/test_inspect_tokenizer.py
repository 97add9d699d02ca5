"""tools/inspect_tokenizer.py: vocabulary, special tokens, pieces, bytes per token."""
from __future__ import annotations

import json

import shards
import tokenizer as tk
from tests.conftest import load_tool

inspect_tokenizer = load_tool("inspect_tokenizer")


def run(capsys, *argv):
    code = inspect_tokenizer.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_report_on_a_dataset_dir(capsys, tiny_dataset):
    code, out, _ = run(capsys, tiny_dataset, "--text", "The model", "--json")
    assert code == 0
    r = json.loads(out)
    tok = tk.load(tiny_dataset / "tokenizer.json")
    assert r["vocab_size"] == 300 and r["eot_id"] == 0
    assert r["special_tokens"] == [{"id": 0, "content": "<|endoftext|>"}]
    ids = tok.encode("The model", add_special_tokens=False).ids
    assert [p["id"] for p in r["texts"][0]["pieces"]] == ids
    assert "".join(p["text"] for p in r["texts"][0]["pieces"]) == "The model"
    # the dataset's val documents are the default sample; they round-trip, so the counts are the shards'
    manifest = shards.load_manifest(tiny_dataset)
    assert r["sample"]["texts"] == 40 and r["sample"]["tokens"] == manifest["totals"]["val"]["tokens"] - 40


def test_bytes_per_token_on_a_file(capsys, tiny_dataset, tmp_path):
    sample = tmp_path / "sample.txt"
    sample.write_text("the loss falls slowly", encoding="utf-8")
    code, out, _ = run(capsys, tiny_dataset / "tokenizer.json", "--sample", sample, "--json")
    n = len(tk.load(tiny_dataset / "tokenizer.json").encode("the loss falls slowly").ids)
    assert code == 0 and json.loads(out)["sample"]["bytes_per_token"] == 21 / n


def test_text_output_and_errors(capsys, tiny_dataset, tmp_path):
    code, out, _ = run(capsys, tiny_dataset, "--text", "plain text")
    assert code == 0 and "special tokens: <|endoftext|> = 0" in out and "'plain text' →" in out
    code, out, err = run(capsys, tmp_path)
    assert code == 2 and err == f"error: {tmp_path} has no tokenizer.json; pass a tokenizer.json, a dataset " \
                                f"directory or a run directory\n"
