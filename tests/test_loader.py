"""The memmap loader: windows, permutation, exact state round trip, rank disjointness, bounded memory."""
import numpy as np
import pytest
import torch

import shards
from train.loader import IGNORE_TARGET, Loader, TokenWindows, ValWindows, permutation


def write_dataset(directory, shard_lengths, dtype="uint16", vocab_size=1 << 16):
    """Shards whose token at stream position p is p mod 65536: every window is identifiable."""
    entries, pos = [], 0
    for i, n in enumerate(shard_lengths):
        tokens = (np.arange(pos, pos + n) % vocab_size).astype(shards.DTYPES[dtype])
        entries.append(shards.write_shard(directory, "train", i, tokens, np.array([0])))
        pos += n
    val = (np.arange(50) % vocab_size).astype(shards.DTYPES[dtype])
    entries.append(shards.write_shard(directory, "val", 0, val, np.array([0])))
    return {"dtype": dtype, "vocab_size": vocab_size, "eot_id": 0, "shards": entries}


def test_windows_tile_each_shard_and_drop_the_tail(tmp_path):
    manifest = write_dataset(tmp_path, [10, 3, 9])  # seq_len 4: shard 0 -> 2 windows, 1 -> 0, 2 -> 2
    w = TokenWindows(tmp_path, manifest, "train", seq_len=4)
    assert w.n_windows == 4
    out = np.empty((4, 5), dtype=np.int64)
    w.gather(np.array([0, 1, 2, 3]), out)
    assert out.tolist() == [[0, 1, 2, 3, 4], [4, 5, 6, 7, 8], [13, 14, 15, 16, 17], [17, 18, 19, 20, 21]]
    w.gather(np.array([3, 0, 2, 1]), out)
    assert out[:, 0].tolist() == [17, 0, 13, 4]


def test_batches_follow_the_seeded_permutation(tmp_path):
    manifest = write_dataset(tmp_path, [4 * 20 + 1])  # 20 windows of seq_len 4
    loader = Loader(tmp_path, manifest, seq_len=4, batch_size=3, seed=7)
    perm0, perm1 = permutation(7, 0, 20), permutation(7, 1, 20)
    firsts = [loader.next_batch()[0][:, 0].tolist() for _ in range(8)]
    loader.close()
    expected = [list(perm0[i:i + 3] * 4) for i in range(0, 18, 3)] + [list(perm1[i:i + 3] * 4) for i in (0, 3)]
    assert firsts == expected  # 6 batches use 18 of 20 windows, then epoch 1 starts
    x, y = Loader(tmp_path, manifest, seq_len=4, batch_size=3, seed=7).next_batch()
    assert x.dtype == torch.int64 and x.shape == (3, 4) and torch.equal(y, x + 1)
    assert sorted(perm0.tolist()) == list(range(20)) and perm0.tolist() != perm1.tolist()


def test_state_round_trip_gives_the_identical_next_batches(tmp_path):
    manifest = write_dataset(tmp_path, [400, 333, 271])
    a = Loader(tmp_path, manifest, seq_len=8, batch_size=5, seed=3, prefetch=2)
    for _ in range(37):  # 49 + 41 + 33 = 123 windows: 24 batches of 5 per epoch, so 13 into epoch 1
        a.next_batch()
    state = a.state_dict()
    assert state == {"seed": 3, "epoch": 1, "position": 65}
    expected = [a.next_batch()[0].clone() for _ in range(30)]
    a.close()
    b = Loader(tmp_path, manifest, seq_len=8, batch_size=5, seed=999)
    b.load_state_dict(state)
    got = [b.next_batch()[0].clone() for _ in range(30)]
    b.close()
    assert all(torch.equal(e, g) for e, g in zip(expected, got, strict=True))


def test_ranks_are_disjoint_and_together_equal_one_process(tmp_path):
    manifest = write_dataset(tmp_path, [4 * 48 + 1])  # 48 windows
    single = Loader(tmp_path, manifest, seq_len=4, batch_size=4, seed=1)
    ranks = [Loader(tmp_path, manifest, seq_len=4, batch_size=2, seed=1, rank=r, world_size=2) for r in (0, 1)]
    seen = []
    for _ in range(12):  # one epoch: 12 batches of 4 windows
        one = single.next_batch()[0][:, 0].tolist()
        parts = [set(r.next_batch()[0][:, 0].tolist()) for r in ranks]
        assert not parts[0] & parts[1]
        assert parts[0] | parts[1] == set(one)
        seen += one
    assert sorted(seen) == [4 * i for i in range(48)]  # every window exactly once per epoch
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()
    for loader in [single] + ranks:
        loader.close()


def test_too_small_dataset_is_a_clear_error(tmp_path):
    manifest = write_dataset(tmp_path, [20])
    with pytest.raises(shards.DatasetError, match="smaller training.global_batch_size"):
        Loader(tmp_path, manifest, seq_len=4, batch_size=8, seed=0)


def test_val_windows_are_fixed_and_spread(tmp_path):
    manifest = write_dataset(tmp_path, [100])
    val = ValWindows(tmp_path, manifest, seq_len=4, n_windows=5)  # 50 val tokens -> 12 windows
    assert val.ids.tolist() == [0, 3, 6, 8, 11]
    batches = [x[:, 0].tolist() for x, _ in val.batches(2, torch.device("cpu"))]
    assert batches == [[0, 12], [24, 32], [44]]
    assert [x[:, 0].tolist() for x, _ in val.batches(2, torch.device("cpu"), rank=1, world_size=2)] == [[12, 32]]


def test_padded_val_batches_have_one_shape_and_ignore_the_padding(tmp_path):
    """pad=True (what the trainer's evaluation uses, so a compiled model sees one shape): the tail batch is
    filled up with its first window, whose targets are all IGNORE_TARGET, and the cross-entropy over a
    padded batch is the mean over its real windows exactly."""
    manifest = write_dataset(tmp_path, [100])
    val = ValWindows(tmp_path, manifest, seq_len=4, n_windows=5)  # windows starting at 0, 12, 24, 32, 44
    padded = list(val.batches(2, torch.device("cpu"), pad=True))
    plain = list(val.batches(2, torch.device("cpu")))
    assert [tuple(x.shape) + tuple(y.shape) for x, y in padded] == [(2, 4, 2, 4)] * 3
    assert [(y.stride(), x.stride()) for x, y in padded] == [((4, 1), (5, 1))] * 3  # one layout: no recompile
    for (x, y), (px, py) in zip(plain[:2], padded[:2], strict=True):
        assert torch.equal(x, px) and torch.equal(y, py)
    x, y = padded[2]
    assert x.tolist() == [[44, 45, 46, 47]] * 2 and y.tolist() == [[45, 46, 47, 48], [IGNORE_TARGET] * 4]
    logits = torch.randn(2, 4, 60)
    mean = torch.nn.functional.cross_entropy(logits.view(-1, 60), y.reshape(-1))
    assert torch.allclose(mean, torch.nn.functional.cross_entropy(logits[0], y[0]))
    assert [len(x) for x, _ in val.batches(4, torch.device("cpu"), rank=1, world_size=2, pad=True)] == [4]


def _memory_kib():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = int(value.split()[0]) if value.strip().endswith("kB") else None
    return fields["RssAnon"], fields["RssFile"]


@pytest.mark.slow
def test_memory_stays_flat_over_100k_random_batches(tmp_path):
    manifest = write_dataset(tmp_path, [8 << 20, 8 << 20])  # 2 x 16 MiB of uint16 tokens
    release = 4 << 20
    w = TokenWindows(tmp_path, manifest, "train", seq_len=64, release_bytes=release)
    rng = np.random.default_rng(0)
    out = np.empty((8, 65), dtype=np.int64)
    w.gather(rng.integers(0, w.n_windows, 8), out)
    anon0, file0 = _memory_kib()
    for _ in range(100_000):
        w.gather(rng.integers(0, w.n_windows, 8), out)
    anon1, file1 = _memory_kib()
    assert anon1 - anon0 < 2048, "private memory grew"
    # without madvise the touched pages of the 32 MiB of shards would all count (~32,000 KiB)
    assert file1 - file0 < 2 * release // 1024, "mapped pages were not released"


def test_window_count_is_the_loaders(tmp_path):
    assert [shards.window_count(n, 4) for n in (0, 1, 4, 5, 8, 9, 10)] == [0, 0, 0, 1, 1, 2, 2]
    manifest = write_dataset(tmp_path, [10, 3, 9, 5])
    w = TokenWindows(tmp_path, manifest, "train", seq_len=4)
    assert w.counts.tolist() == [2, 2, 1]  # the 3-token shard holds none


def test_a_shard_damaged_after_the_build_is_named(tmp_path):
    manifest = write_dataset(tmp_path, [400, 333, 271], vocab_size=1000)  # ids p mod 1000: all valid
    w = TokenWindows(tmp_path, manifest, "train", seq_len=8)
    out = np.empty((3, 9), dtype=np.int64)
    w.gather(np.arange(w.n_windows)[:3], out)
    damaged = tmp_path / "train_000001.bin"
    with open(damaged, "r+b") as f:  # token 100 of the second shard becomes 65000, as a stray write leaves it
        f.seek(100 * 2)
        f.write(np.array([65000], dtype="<u2").tobytes())
    w = TokenWindows(tmp_path, manifest, "train", seq_len=8)
    window = int(w.first[1]) + 100 // 8  # the window holding it
    with pytest.raises(shards.DatasetError, match=rf"{damaged} holds token id 65000 at token 100, but the "
                                                  rf"vocabulary has 1,000 ids .* `python tools/inspect_shards.py "
                                                  rf"verify {tmp_path}`"):
        w.gather(np.array([0, window, 1]), out)
    with open(damaged, "r+b") as f:  # and cut short: refused when opened, before any batch
        f.truncate(332 * 2)
    with pytest.raises(shards.DatasetError, match=rf"{damaged} holds 664 bytes, but the manifest lists 333 uint16 "
                                                  rf"tokens \(666 bytes\): the shard was truncated"):
        TokenWindows(tmp_path, manifest, "train", seq_len=8)


def test_ids_are_checked_only_where_the_dtype_can_exceed_the_vocabulary(tmp_path):
    manifest = write_dataset(tmp_path, [100])
    assert not TokenWindows(tmp_path, manifest, "train", seq_len=8).check_ids  # vocab 65,536 in uint16
    assert TokenWindows(tmp_path, {**manifest, "vocab_size": 300}, "train", seq_len=8).check_ids
