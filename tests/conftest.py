"""Shared fixtures: tiny dataset directories built through the real tokenizer and shard writer."""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

import shards
import tokenizer as tk

# Small, varied English-like text so a BPE of a few hundred tokens has something to learn.
_WORDS = ("the model reads tokens from shards and learns to predict the next one while the loss "
          "falls slowly over many steps of training on a small corpus of plain text documents").split()


def sample_texts(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` deterministic pseudo-random documents of 5..60 words."""
    texts = []
    for i in range(n):
        h = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        length = 5 + h[0] % 56
        words = [_WORDS[(h[j % 32] + j * 7) % len(_WORDS)] for j in range(length)]
        texts.append(" ".join(words).capitalize() + ".")
    return texts


def build_dataset(out: Path, texts: list[str], vocab_size: int = 300, val_every: int = 10,
                  shard_tokens: int = 2000, dtype: str = "uint16") -> Path:
    """Write a dataset directory for ``texts``: every ``val_every``-th document goes to val.

    Uses the project's tokenizer and shard writer directly (not the preprocess pipeline), so tests
    of later stages do not depend on the builder.
    """
    out.mkdir(parents=True, exist_ok=True)
    tok = tk.train_bpe(texts, vocab_size=vocab_size, min_frequency=1)
    tok_sha = tk.save(tok, out / shards.TOKENIZER_NAME)
    eot = tk.eot_id(tok)
    enc = tk.make_encoder(tok)
    writers = {s: shards.ShardWriter(out, s, dtype, eot, shard_tokens) for s in shards.SPLITS}
    entries = []
    for i, text in enumerate(texts):
        split = "val" if i % val_every == val_every - 1 else "train"
        entry = writers[split].add(enc.encode(text))
        if entry:
            entries.append(entry)
    for w in writers.values():
        entry = w.flush()
        if entry:
            entries.append(entry)
    totals = {s: {"tokens": sum(e["tokens"] for e in entries if e["split"] == s),
                  "documents": sum(e["documents"] for e in entries if e["split"] == s)} for s in shards.SPLITS}
    shards.write_manifest(out, {
        "format_version": shards.FORMAT_VERSION, "dtype": dtype, "vocab_size": tok.get_vocab_size(),
        "eot_id": eot, "tokenizer_sha256": tok_sha, "shards": entries, "totals": totals,
        "inputs": [], "skipped": {}, "options": {"fixture": True},
    })
    return out




@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A ~20k-token dataset (vocab 300, uint16, several train shards and one val shard). Read-only: copy
    it (``copy_dataset``) before changing anything in it."""
    return build_dataset(tmp_path_factory.mktemp("tiny") / "data", sample_texts(400))


@pytest.fixture
def copy_dataset(tmp_path, tiny_dataset):
    def _copy() -> Path:
        dst = tmp_path / "data_copy"
        shutil.copytree(tiny_dataset, dst)
        return dst
    return _copy
