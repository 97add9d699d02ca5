"""train/evaluate.py: numbers checked against a hand computation on a tiny model (loss, bits per byte);
samples; the CLI report, with tasks."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import shards
import tokenizer as tk
from tests.conftest import build_dataset, sample_texts
from tests.test_tasks import task_files
from train.checkpoint import load_model
from train.evaluate import (
    DEFAULT_PROMPTS,
    EvaluationError,
    LLMEvaluator,
    byte_length_table,
    complete_prompts,
    distinct_n,
    main,
    repetition_rate,
    speed_table,
    val_metrics,
)
from train.generate import LLMInference
from train.loader import ValWindows
from train.model import GPT, ModelConfig
from train.tasks import load_tasks, score_tasks


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


# ---------------------------------------------------------------------------------------------------
# bits per byte

def constant_logits_model(seed: int = 0) -> tuple[GPT, np.ndarray]:
    """A model whose every position predicts the same logits z (final norm weight 0: its output is its
    bias b, so z = E @ b): the loss of any target is computable by hand. Returns (model, z)."""
    torch.manual_seed(seed)
    model = GPT(ModelConfig(vocab_size=300, seq_len=32, n_layers=1, d_model=16, n_heads=2))
    with torch.no_grad():
        model.norm.weight.zero_()
        model.norm.bias.normal_()
    return model, (model.tok_emb.weight @ model.norm.bias).detach().double().numpy()


def test_bits_per_byte_matches_a_hand_count(tiny_dataset):
    model, z = constant_logits_model()
    log_z = np.log(np.exp(z - z.max()).sum()) + z.max()
    tok = tk.load(tiny_dataset / "tokenizer.json")
    eot = tk.eot_id(tok)
    manifest = shards.load_manifest(tiny_dataset)
    nats_all = nats_text = n_targets = n_bytes = separators = 0
    for entry in shards.split_shards(manifest, "val"):  # the loader's windows: every 32 tokens, 33 long
        tokens = np.asarray(shards.open_tokens(tiny_dataset, entry, "uint16"), dtype=np.int64)
        for w in range((len(tokens) - 1) // 32):
            targets = tokens[w * 32 + 1:(w + 1) * 32 + 1]
            nats = log_z - z[targets]
            nats_all += nats.sum()
            n_targets += len(targets)
            text = targets != eot
            separators += (~text).sum()
            nats_text += nats[text].sum()
            # the bytes the window's targets stand for, counted on the decoded text (the corpus is ASCII,
            # so every token decodes whole; decode drops the separator)
            n_bytes += len(tok.decode(targets.tolist()).encode("utf-8"))
    assert separators > 0  # the separator's exclusion is exercised
    val = ValWindows(tiny_dataset, manifest, 32, 10**9)
    m = val_metrics(model, val, 5, torch.device("cpu"), byte_lengths=byte_length_table(tok))
    assert m["tokens"] == n_targets and m["bytes"] == n_bytes
    assert m["val_loss"] == pytest.approx(nats_all / n_targets, rel=1e-6)
    assert m["val_ppl"] == pytest.approx(np.exp(nats_all / n_targets), rel=1e-5)
    assert m["val_bpb"] == pytest.approx(nats_text / np.log(2) / n_bytes, rel=1e-6)
    assert m["val_bpb"] != pytest.approx(nats_all / np.log(2) / n_bytes, rel=1e-4)
    # the trainer's batches of one shape (the last one padded with ignored targets) give the same figures
    assert len(val) % 5 != 0
    padded = val_metrics(model, val, 5, torch.device("cpu"), byte_lengths=byte_length_table(tok), pad=True)
    assert padded["tokens"] == n_targets and padded["bytes"] == n_bytes
    assert padded["val_loss"] == pytest.approx(m["val_loss"], rel=1e-9)
    assert padded["val_bpb"] == pytest.approx(m["val_bpb"], rel=1e-9)
    r = LLMEvaluator(model, tiny_dataset / "tokenizer.json").calculate_perplexity(tiny_dataset, batch_size=7)
    assert r["bits_per_byte"] == pytest.approx(m["val_bpb"], rel=1e-9) and r["bytes"] == n_bytes
    assert val_metrics(model, val, 5, torch.device("cpu"))["val_bpb"] is None


def test_byte_lengths_add_up_to_the_utf8_bytes_of_any_text():
    texts = ["Hello wörld 😀 日本語 naïve café", "the quick brown fox", "👍🏽 \x00\x1b ½ ∑ ok"]
    tok = tk.train_bpe(texts * 20, vocab_size=300, min_frequency=1)
    lengths = tk.token_byte_lengths(tok)
    enc = tk.Encoder(tok, "hf")
    for text in texts + ["unseen: Ωμέγα 🚀 and more ascii", "<|endoftext|> as text"]:
        assert sum(lengths[i] for i in enc.encode(text)) == len(text.encode("utf-8"))
    assert lengths[tk.eot_id(tok)] == 0 and len(lengths) == tok.get_vocab_size()
    # partial characters: a byte-level token can hold part of one, and counts just those bytes
    assert min(lengths[i] for i in range(len(lengths)) if i != tk.eot_id(tok)) == 1


def test_a_tokenizer_that_is_not_byte_level_has_no_bits_per_byte():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    tok = Tokenizer(models.WordLevel({"<|endoftext|>": 0, "hello": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()
    with pytest.raises(tk.TokenizerError, match="bits per byte needs a byte-level BPE"):
        tk.token_byte_lengths(tok)
    with pytest.raises(EvaluationError, match="bits per byte needs a byte-level BPE"):
        byte_length_table(tok)


# ---------------------------------------------------------------------------------------------------
# samples

def test_samples_are_greedy_deterministic_and_leave_the_rng_alone(tiny_run):
    model, _, tok_path = load_model(tiny_run)
    tok = tk.load(tok_path)
    model.train()
    state = torch.get_rng_state()
    first = complete_prompts(model, tok, ["The model", "Loss"], max_new_tokens=10)
    assert model.training and torch.equal(torch.get_rng_state(), state)
    assert [s["prompt"] for s in first] == ["The model", "Loss"]
    assert first == complete_prompts(model, tok, ["The model", "Loss"], max_new_tokens=10)
    llm = LLMInference(tiny_run, device="cpu")
    assert [s["completion"] for s in first] == [llm.generate(p, max_new_tokens=10, temperature=0)
                                                for p in ("The model", "Loss")]
    assert all(0 < s["tokens"] <= 10 and s["stop_reason"] in ("eot", "length") for s in first)
    state = torch.get_rng_state()  # building LLMInference's model drew from it
    sampled = complete_prompts(model, tok, DEFAULT_PROMPTS[:2], max_new_tokens=10, temperature=1.0, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert sampled == complete_prompts(model, tok, DEFAULT_PROMPTS[:2], max_new_tokens=10, temperature=1.0, seed=3)
    assert sampled != complete_prompts(model, tok, DEFAULT_PROMPTS[:2], max_new_tokens=10, temperature=1.0, seed=4)


# ---------------------------------------------------------------------------------------------------
# tasks from the command line

def test_tasks_from_the_cli(capsys, tmp_path, tiny_dataset, tiny_run):
    files = task_files(tmp_path / "tasks", n=6)
    args = [str(tiny_run), "--tasks", files["hellaswag"], "--tasks", "mc:" + files["mc"], "--tasks", files["lambada"],
            "--no-speed", "--max-new-tokens", "4", "--device", "cpu"]
    assert main(args + ["--json", "--task-limit", "5"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["dataset"] is None and "perplexity" not in r and r["generation"]["prompts"] == len(DEFAULT_PROMPTS)
    model, _, tok_path = load_model(tiny_run)
    tasks = load_tasks([files["hellaswag"], "mc:" + files["mc"], files["lambada"]], limit=5)
    expected = score_tasks(model, tasks, tk.load(tok_path), torch.device("cpu"))
    assert list(r["tasks"]) == ["hellaswag", "mc", "lambada"]
    for name, scores in expected.items():
        got = r["tasks"][name]
        assert got.pop("seconds") >= 0 and scores.pop("seconds") >= 0
        assert got == {**scores, "kind": name, "path": str(tasks[list(expected).index(name)].path)}
    assert main(args + ["--data", str(tiny_dataset)]) == 0
    out = capsys.readouterr().out
    assert "val bits per byte" in out and "hellaswag" in out and "acc_norm" in out


def test_cli_task_errors_are_one_line(capsys, tmp_path, tiny_run):
    assert main([str(tiny_run), "--no-speed"]) == 2
    assert "nothing to evaluate on: give --data DIR" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"context": "a", "choices": ["b"], "gold": 0}\n{"context": "a"}\n', encoding="utf-8")
    assert main([str(tiny_run), "--tasks", str(bad), "--no-speed"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}:2: 'choices' must be a list of strings, got missing\n"


def test_python_m_train_evaluate_with_tasks(tmp_path, tiny_dataset, tiny_run):
    files = task_files(tmp_path / "tasks", n=4)
    done = subprocess.run([sys.executable, "-m", "train.evaluate", str(tiny_run), "--data", str(tiny_dataset),
                           "--tasks", files["arc"], "--tasks", files["lambada"], "--no-speed", "--max-new-tokens", "4"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    assert "val bits per byte" in done.stdout
    assert [line.split()[:3] for line in done.stdout.splitlines() if line.strip().startswith(("arc ", "lambada "))] \
        == [["arc", "arc", "4"], ["lambada", "lambada", "4"]]
