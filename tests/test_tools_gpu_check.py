"""tools/gpu_check.py without a GPU: its synthetic dataset is a valid dataset directory, its sync counter
sorts a sync by where it happened, and the whole check runs on CPU with tiny models (the parts that apply
there must pass: two graphs per preset, no graph break, an exact resume)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import pytest

import shards
import tokenizer as tk
from tests.conftest import ROOT, load_tool


@pytest.fixture(scope="module")
def gpu_check():
    return load_tool("gpu_check")


def test_the_synthetic_dataset_is_a_dataset_directory_of_its_text(gpu_check, tmp_path):
    data = tmp_path / "data"
    note = gpu_check.synthesize_dataset(data, vocab_size=1000, train_tokens=60_000, val_tokens=10_000, n_words=2000,
                                        shard_tokens=25_000)
    assert "a 1,000-token BPE trained on it" in note
    assert load_tool("inspect_shards").verify(data)["ok"]
    manifest = shards.load_manifest(data)
    assert manifest["vocab_size"] == 1000 and len(shards.split_shards(manifest, "train")) == 3
    tok = tk.load(data / shards.TOKENIZER_NAME)
    entry = shards.split_shards(manifest, "val")[0]
    tokens = shards.open_tokens(data, entry, manifest["dtype"])
    third = int(shards.open_index(data, entry)[2])
    text = tok.decode(tokens[:third].tolist(), skip_special_tokens=False)
    documents = text.split(tk.EOT_TOKEN)[1:]
    assert len(documents) >= 2
    for doc in documents[:2]:
        assert re.fullmatch(r"( [a-z]+){200}\.", doc), doc[:200]


def test_the_sync_counter_sorts_syncs_by_where_they_happen(gpu_check):
    trainer = f"{ROOT.as_posix()}/train/trainer.py"
    torch_file = "/venv/lib/python3.11/site-packages/torch/nn/utils/clip_grad.py"
    compiling = "/venv/lib/python3.11/site-packages/torch/_inductor/compile_fx.py"
    classify = gpu_check.SyncCounter.classify
    assert classify([(trainer, "train", 1), (trainer, "fit", 2), (trainer, "train_step", 3),
                     (torch_file, "clip_grad_norm_", 4)], True) == "between log points"
    assert classify([(trainer, "fit", 2), (trainer, "read_back", 3)], True) == "at log points"
    assert classify([(trainer, "fit", 2), (trainer, "run_eval", 3), (trainer, "evaluate", 4)], True) == "at log points"
    assert classify([(trainer, "fit", 2), (trainer, "train_step", 3), (compiling, "compile_fx", 4)],
                    True) == "compiling"
    assert classify([(trainer, "train", 1), (trainer, "restore", 2)], True) == "outside the loop"
    assert classify([(trainer, "fit", 2), (trainer, "train_step", 3)], False) == "other threads"


def test_the_sync_counter_counts_each_sync_warning_and_passes_others_on(gpu_check):
    """The warnings set_sync_debug_mode("warn") raises on CUDA, raised here by hand (there is no GPU)."""
    with warnings.catch_warnings(record=True) as others:
        warnings.simplefilter("always")
        with gpu_check.SyncCounter(enabled=True) as counter:
            for _ in range(3):
                warnings.warn(gpu_check.SYNC_WARNING, UserWarning, stacklevel=1)
            warnings.warn("something else", UserWarning, stacklevel=1)
    assert counter.counts == {"outside the loop": 3}
    assert [str(w.message) for w in others] == ["something else"]


def test_syncs_in_the_loop_count_against_the_target_after_its_first_log_point(gpu_check, monkeypatch):
    """A start-up sync in the first interval is counted apart; the same sync after a log point is a miss."""
    counter = gpu_check.SyncCounter(enabled=True)
    where = iter(["outside the loop", "between log points", "at log points", "between log points"])
    monkeypatch.setattr(counter, "classify", lambda stack, main_thread: next(where))
    for _ in range(4):
        counter._seen(gpu_check.SYNC_WARNING, UserWarning, __file__, 1)
    assert counter.counts == {"outside the loop": 1, "first interval": 1, "at log points": 1,
                              "between log points": 1}
    assert sum(counter.places.values()) == 1


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_cpu(tiny_dataset, tmp_path):
    """--tiny on the tests' dataset (the tiny models of the compile tests: inductor's cache serves their graphs)."""
    done = subprocess.run([sys.executable, "tools/gpu_check.py", "--tiny", "--steps", "8", "--data", str(tiny_dataset),
                           "--work", str(tmp_path / "work")], cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    out = done.stdout
    assert re.search(r"^preset +tok/s step +tok/s wall +MFU +peak mem +vs bare +opt share +syncs +graphs +breaks "
                     r"+resume$", out, re.M), out
    for preset in ("75m_dolma", "75m_dolma_modern"):
        row = rf"^{preset} +[\d,]+ +[\d,]+ +n/a +n/a +[\d.]+x +-?[\d.]+% +n/a +2 +0 +0\.0e\+00$"
        assert re.search(row, out, re.M), out
        assert f"[ok] {preset}: 2 graphs for GPT.forward (training, evaluation), no graph break: 2 graphs, 0 " in out
        assert f"[ok] {preset}: resumed at step 4, losses as the uninterrupted run's (exactly): 0.0e+00" in out
        assert f"[n/a] {preset}: MFU >= 40% on an H100: no GPU here" in out
    assert "MISS" not in out
