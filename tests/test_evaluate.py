"""train/evaluate.py: numbers checked against a hand computation on a tiny model; the CLI report."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import shards
import tokenizer as tk
from tests.conftest import build_dataset, sample_texts
from train.checkpoint import load_model
from train.evaluate import LLMEvaluator, distinct_n, main, repetition_rate, speed_table
from train.model import GPT, ModelConfig


def test_distinct_and_repetition_by_hand():
    seqs = [[1, 2, 1, 2, 1, 2], [3, 4]]
    # unigrams 1,2,1,2,1,2,3,4: 4 distinct of 8; bigrams 12,21,12,21,12,34: 3 distinct of 6
    assert distinct_n(seqs, 1) == 4 / 8 and distinct_n(seqs, 2) == 3 / 6
    # bigrams of the first sequence repeat 3 of 5 times, the second's 1 bigram never
    assert repetition_rate(seqs, 2) == 3 / 6
    assert repetition_rate([[5, 6, 7, 8]], 4) == 0.0 and repetition_rate([[1]], 4) is None


def test_perplexity_matches_a_hand_computation(tiny_dataset):
    # With the final norm's weight at 0 its output is its bias b whatever the input, so every position
    # predicts the same logits z = E @ b (E: the tied embedding): the loss is computable from the targets.
    torch.manual_seed(0)
    tok_path = tiny_dataset / "tokenizer.json"
    model = GPT(ModelConfig(vocab_size=300, seq_len=32, n_layers=1, d_model=16, n_heads=2))
    with torch.no_grad():
        model.norm.weight.zero_()
        model.norm.bias.normal_()
    z = (model.tok_emb.weight @ model.norm.bias).detach().double().numpy()
    manifest = shards.load_manifest(tiny_dataset)
    targets = []
    for entry in shards.split_shards(manifest, "val"):  # loader windows: every 32 tokens, 33 long
        tokens = np.asarray(shards.open_tokens(tiny_dataset, entry, "uint16"), dtype=np.int64)
        n = (len(tokens) - 1) // 32
        targets.append(tokens[1:1 + 32 * n])
    targets = np.concatenate(targets)
    log_z = np.log(np.exp(z - z.max()).sum()) + z.max()
    top5 = np.argsort(-z)[:5]
    r = LLMEvaluator(model, tok_path).calculate_perplexity(tiny_dataset, batch_size=5)
    assert r["tokens"] == len(targets) and r["windows"] == len(targets) // 32
    assert r["loss"] == pytest.approx(log_z - z[targets].mean(), rel=1e-6)
    assert r["perplexity"] == pytest.approx(np.exp(log_z - z[targets].mean()), rel=1e-5)
    assert r["top1_accuracy"] == np.count_nonzero(targets == top5[0]) / len(targets)
    assert r["top5_accuracy"] == np.count_nonzero(np.isin(targets, top5)) / len(targets)


def test_max_windows_spreads_evenly(tiny_dataset, tiny_run):  # noqa: F811
    model, _, tok_path = load_model(tiny_run)
    r = LLMEvaluator(model, tok_path).calculate_perplexity(tiny_dataset, max_windows=10)
    assert r["windows"] == 10 and r["tokens"] == 10 * 32


def test_report_from_the_cli(capsys, tmp_path, tiny_dataset, tiny_run):  # noqa: F811
    (tmp_path / "prompts.txt").write_text("The model\nLoss falls\n", encoding="utf-8")
    out = tmp_path / "report.json"
    assert main([str(tiny_run), "--data", str(tiny_dataset), "--prompts", str(tmp_path / "prompts.txt"),
                 "--max-new-tokens", "12", "--json", "--output", str(out), "--device", "cpu"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert json.loads(out.read_text(encoding="utf-8")) == r
    model, _, tok_path = load_model(tiny_run)
    assert r["perplexity"] == LLMEvaluator(model, tok_path).calculate_perplexity(tiny_dataset)
    assert r["step"] == 1 and r["generation"]["prompts"] == 2
    assert 0 < r["generation"]["mean_length"] <= 12
    assert [(row["batch_size"], row["context"]) for row in r["speed"]] == [(1, 4), (1, 16), (4, 4), (4, 16)]
    assert all(row["decode_tokens_per_s_kv_cache"] > 0 and row["kv_cache_speedup"] > 0 for row in r["speed"])


def test_text_report(capsys, tiny_dataset, tiny_run):  # noqa: F811
    assert main([str(tiny_run), "--data", str(tiny_dataset), "--no-speed", "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "perplexity" in out and "distinct-2" in out


def test_refuses_a_dataset_with_another_tokenizer(capsys, tmp_path, tiny_run):  # noqa: F811
    other = build_dataset(tmp_path / "other", sample_texts(60, seed=5), vocab_size=280)
    theirs = shards.load_manifest(other)["tokenizer_sha256"]
    ours = tk.fingerprint(tiny_run / "tokenizer.json")
    assert main([str(tiny_run), "--data", str(other), "--no-speed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {other} was encoded with tokenizer {theirs[:16]}…, but the model's tokenizer "
                          f"is {ours[:16]}…")


def test_speed_table_on_a_tiny_model(tiny_run):  # noqa: F811
    model, _, _ = load_model(tiny_run)
    rows = speed_table(model, batch_sizes=(2,), prompt_lens=(8,), new_tokens=4, repeats=1)
    assert len(rows) == 1 and rows[0]["batch_size"] == 2 and rows[0]["new_tokens"] == 4
