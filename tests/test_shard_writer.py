"""ShardWriter: documents added in blocks of any size give exactly the shards of the plain rule
(a shard closes after the document that brings it to at least shard_tokens), written without joins."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import shards

EOT = 0


def expected_shards(docs: list[list[int]], shard_tokens: int) -> list[tuple[list[int], list[int]]]:
    """The rule, written the obvious way: (tokens, separator offsets) of every shard."""
    out, tokens, offsets = [], [], []
    for doc in docs:
        offsets.append(len(tokens))
        tokens += [EOT] + doc
        if len(tokens) >= shard_tokens:
            out.append((tokens, offsets))
            tokens, offsets = [], []
    if offsets:
        out.append((tokens, offsets))
    return out


def block(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    tokens = np.array([t for d in docs for t in [EOT] + d], dtype=np.uint16)
    return tokens, np.array([len(d) for d in docs], dtype=np.int64)


@settings(max_examples=150, deadline=None)
@given(lengths=st.lists(st.integers(1, 30), min_size=1, max_size=60), shard_tokens=st.integers(1, 120),
       cuts=st.lists(st.integers(0, 60), max_size=6), data=st.data())
def test_blocks_of_any_size_give_the_rule_s_shards(tmp_path_factory, lengths, shard_tokens, cuts, data):
    docs = [data.draw(st.lists(st.integers(1, 65535), min_size=n, max_size=n)) for n in lengths]
    directory = tmp_path_factory.mktemp("w")
    w = shards.ShardWriter(directory, "train", "uint16", EOT, shard_tokens)
    entries = []
    bounds = sorted({0, len(docs), *[min(c, len(docs)) for c in cuts]})
    for a, b in itertools.pairwise(bounds):
        entries += w.add_block(*block(docs[a:b]))
    last = w.flush()
    entries += [last] if last else []
    want = expected_shards(docs, shard_tokens)
    assert len(entries) == len(want)
    for i, (entry, (tokens, offsets)) in enumerate(zip(entries, want, strict=True)):
        assert entry["file"] == shards.shard_file_name("train", i)
        got = np.fromfile(directory / entry["file"], dtype=np.uint16)
        assert got.tolist() == tokens and entry["tokens"] == len(tokens) and entry["documents"] == len(offsets)
        idx = np.fromfile(directory / shards.index_file_name(entry["file"]), dtype=np.uint64)
        assert idx.tolist() == offsets


def test_pending_and_restore_round_trip(tmp_path):
    docs = [[5, 6, 7], [8], [9, 10]]
    w = shards.ShardWriter(tmp_path, "val", "uint16", EOT, 100)
    assert w.add_block(*block(docs)) == []
    parts, offsets = w.pending_parts()
    tokens = np.concatenate(parts)
    assert tokens.tolist() == [0, 5, 6, 7, 0, 8, 0, 9, 10] and offsets.tolist() == [0, 4, 6]
    w2 = shards.ShardWriter(tmp_path, "val", "uint16", EOT, 100)
    w2.restore(tokens, offsets)
    w2.add([11, 12])
    entry = w2.flush()
    assert entry["documents"] == 4 and entry["tokens"] == 12
    assert np.fromfile(tmp_path / entry["file"], dtype=np.uint16).tolist()[-3:] == [0, 11, 12]


def test_bad_blocks_and_shards_are_refused(tmp_path):
    w = shards.ShardWriter(tmp_path, "train", "uint16", EOT, 10)
    with pytest.raises(ValueError, match="needs 5 uint16 tokens, got 4"):
        w.add_block(np.zeros(4, np.uint16), np.array([2, 1]))
    with pytest.raises(ValueError, match="needs"):
        w.add_block(np.zeros(3, np.uint32), np.array([2]))
    with pytest.raises(ValueError, match="beyond the shard"):
        shards.write_shard(tmp_path, "train", 0, np.zeros(3, np.uint16), np.array([0, 3]))
    with pytest.raises(ValueError, match="share one dtype"):
        shards.write_shard(tmp_path, "train", 0, [np.zeros(2, np.uint16), np.zeros(2, np.uint32)], np.array([0]))
    entry = shards.write_shard(tmp_path, "train", 0, [np.array([0, 1], np.uint16), np.array([2], np.uint16)],
                               np.array([0]))
    assert np.fromfile(tmp_path / entry["file"], dtype=np.uint16).tolist() == [0, 1, 2]
    assert entry["sha256"] == shards.sha256_file(tmp_path / entry["file"])
