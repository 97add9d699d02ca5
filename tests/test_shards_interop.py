"""Shards are readable by tools that know nothing of this project: plain numpy and the manifest's JSON.

Nothing here goes through ``shards/``'s readers: the manifest is parsed with ``json`` and every file is
opened with ``np.memmap`` / ``np.fromfile``, the way another program would read them.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np

import tokenizer as tk


def read_manifest(directory) -> dict:
    return json.loads((directory / "manifest.json").read_text(encoding="utf-8"))


def test_plain_memmap_gives_the_manifest_token_counts(tiny_dataset):
    manifest = read_manifest(tiny_dataset)
    assert manifest["dtype"] == "uint16"
    entries = manifest["shards"]
    assert len([e for e in entries if e["split"] == "train"]) > 1 and any(e["split"] == "val" for e in entries)
    totals = {"train": 0, "val": 0}
    for entry in entries:
        path = tiny_dataset / entry["file"]
        tokens = np.memmap(path, dtype=np.uint16, mode="r")
        assert len(tokens) == entry["tokens"], entry["file"]
        assert path.stat().st_size == 2 * entry["tokens"]  # no header: two bytes per token, nothing else
        assert hashlib.sha256(tokens.tobytes()).hexdigest() == entry["sha256"]
        assert int(tokens.max()) < manifest["vocab_size"]
        totals[entry["split"]] += len(tokens)
    assert totals == {split: manifest["totals"][split]["tokens"] for split in totals}


def test_document_convention_holds_with_plain_numpy(tiny_dataset):
    """One separator before every document; the .idx holds its offsets; doc i = bin[idx[i]+1 : idx[i+1]]."""
    manifest = read_manifest(tiny_dataset)
    eot = manifest["eot_id"]
    tok = tk.load(tiny_dataset / "tokenizer.json")
    assert tok.token_to_id("<|endoftext|>") == eot
    n_docs = 0
    for entry in manifest["shards"]:
        tokens = np.memmap(tiny_dataset / entry["file"], dtype=np.uint16, mode="r")
        raw = np.fromfile(tiny_dataset / entry["file"].replace(".bin", ".idx"), dtype="<u8")
        assert len(raw) == entry["documents"]
        idx = raw.astype(np.int64)  # uint64 + int is float64 in numpy: index with int64
        assert idx[0] == 0 and np.all(np.diff(idx) > 0)
        # the separators sit exactly at the indexed offsets and nowhere else
        assert np.array_equal(np.flatnonzero(tokens == eot), idx)
        ends = np.append(idx[1:], len(tokens))
        docs = [tokens[a + 1:b] for a, b in zip(idx, ends, strict=True)]
        assert all(len(d) > 0 for d in docs)
        assert sum(len(d) + 1 for d in docs) == entry["tokens"]
        # a document decodes to text that re-encodes to the same ids: the boundaries are real ones
        for d in (docs[0], docs[-1]):
            text = tok.decode(d.tolist())
            assert text.endswith(".") and tok.encode(text).ids == d.tolist()
        n_docs += len(docs)
    assert n_docs == manifest["totals"]["train"]["documents"] + manifest["totals"]["val"]["documents"]
