"""train/generate.py: sampling functions, cache/no-cache equality, the CLI (single, chat, batch) and API."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from train.generate import (
    LLMInference,
    apply_repetition_penalty,
    generate_ids,
    main,
    read_prompts,
    sample_next,
    top_k_filter,
    top_p_filter,
)
from train.model import GPT, ModelConfig

ROOT = Path(__file__).resolve().parents[1]








# ---------------------------------------------------------------------------------------------------
# sampling

def test_top_k_1_is_greedy():
    logits = torch.randn(8, 50, generator=torch.Generator().manual_seed(0))
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(sample_next(logits, temperature=1.5, top_k=1, generator=g), logits.argmax(-1))
    assert torch.equal(sample_next(logits, temperature=0), logits.argmax(-1))


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert torch.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, True, False]]


def test_top_p_filters_the_tail():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # mass before each token: 0, 0.5, 0.8, 0.95; p = 0.75 keeps the first two
    assert torch.isfinite(top_p_filter(logits, 0.75)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_p_filter(logits, 0.4)).tolist() == [[True, False, False, False]]
    assert torch.equal(top_p_filter(logits, 1.0), logits)
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits.expand(2000, 4), top_p=0.75, generator=g)
    assert set(draws.tolist()) == {0, 1}


def test_repetition_penalty_lowers_repeats():
    logits = torch.tensor([[2.0, -1.0, 1.0, 0.5]])
    penalised = apply_repetition_penalty(logits, torch.tensor([[0, 1, 0]]), 2.0)
    assert penalised.tolist() == [[1.0, -2.0, 1.0, 0.5]]
    before, after = logits.softmax(-1)[0], penalised.softmax(-1)[0]
    assert after[0] < before[0] and after[1] < before[1] and after[2] > before[2]
    # sampled: a context token is drawn less often with the penalty than without
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ctx = torch.zeros(4000, 1, dtype=torch.long)
    plain = sample_next(logits.expand(4000, 4), context=ctx, generator=g1)
    penal = sample_next(logits.expand(4000, 4), context=ctx, repetition_penalty=3.0, generator=g2)
    assert (penal == 0).sum() < (plain == 0).sum()


def test_temperature_sharpens():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    hot = sample_next(logits.expand(4000, 3), temperature=2.0, generator=g1)
    cold = sample_next(logits.expand(4000, 3), temperature=0.3, generator=g2)
    assert (cold == 0).sum() > (hot == 0).sum()


# ---------------------------------------------------------------------------------------------------
# decoding

@pytest.mark.parametrize("options", [{}, {"rope": True, "swiglu": True, "rmsnorm": True}])
def test_greedy_is_identical_with_and_without_kv_cache(tmp_path, tiny_dataset, options):
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=300, seq_len=16, n_layers=2, d_model=32, n_heads=2, **options)).eval()
    prompt = torch.randint(0, 300, (3, 5))
    # 40 new tokens from 5 prompt tokens cross the 16-token context twice: the trimming is exercised
    cached, r1 = generate_ids(model, prompt, 40, temperature=0, use_kv_cache=True)
    plain, r2 = generate_ids(model, prompt, 40, temperature=0, use_kv_cache=False)
    assert cached == plain and r1 == r2 == ["length"] * 3
    assert [len(x) for x in cached] == [40, 40, 40]


def test_generation_stops_at_the_separator():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, seq_len=16, n_layers=1, d_model=16, n_heads=2)).eval()
    prompt = torch.zeros(1, 3, dtype=torch.long)
    full, _ = generate_ids(model, prompt, 12, temperature=0)
    stop = full[0][4]  # take the 5th greedy token as the stop token: generation ends at its first occurrence
    ids, reasons = generate_ids(model, prompt, 12, temperature=0, eot_id=stop)
    first = full[0].index(stop)
    assert ids == [full[0][:first]] and reasons == ["eot"]


def test_min_new_tokens_holds_the_separator_back():
    torch.manual_seed(0)
    model = GPT(ModelConfig(vocab_size=20, seq_len=32, n_layers=1, d_model=16, n_heads=2)).eval()
    prompt = torch.zeros(1, 3, dtype=torch.long)
    full, _ = generate_ids(model, prompt, 12, temperature=0)
    stop = full[0][0]  # greedy's first token: without a minimum, generation ends at once
    assert generate_ids(model, prompt, 12, temperature=0, eot_id=stop) == ([[]], ["eot"])
    ids, reasons = generate_ids(model, prompt, 12, temperature=0, eot_id=stop, min_new_tokens=5)
    assert len(ids[0]) >= 5 and stop not in ids[0][:5]
    assert reasons == (["eot"] if len(ids[0]) < 12 else ["length"])


# ---------------------------------------------------------------------------------------------------
# the API and the command line

def test_api_generate_and_cli_agree(capsys, tiny_run):
    llm = LLMInference(tiny_run, device="cpu")
    text = llm.generate("The model", max_new_tokens=20, temperature=0)
    ids, _ = llm.generate_tokens(llm.encode_prompt("The model"), 20, temperature=0)
    assert llm.encode_prompt("The model")[0] == llm.eot_id
    assert text == llm.tok.decode(ids)
    for extra in ([], ["--no-kv-cache"]):
        assert main([str(tiny_run), "--prompt", "The model", "--max-new-tokens", "20", "--temperature", "0",
                     "--json", "--device", "cpu", *extra]) == 0
        r = json.loads(capsys.readouterr().out)
        assert r["completion"] == text and r["tokens"] == len(ids)
    # the same seed gives the same sample
    a = llm.generate("The model", max_new_tokens=20, seed=3)
    assert a == llm.generate("The model", max_new_tokens=20, seed=3)


def test_max_length_is_the_former_name_of_max_new_tokens(tiny_run):
    """The README's old call llm.generate(..., max_length=N) still gives N new tokens (not N in all)."""
    llm = LLMInference(tiny_run, device="cpu")
    prompt = "The model reads tokens from shards"
    new = llm.generate(prompt, max_new_tokens=12, temperature=0, min_new_tokens=12)
    with pytest.warns(DeprecationWarning, match="means max_new_tokens=N"):
        old = llm.generate(prompt, max_length=12, temperature=0, min_new_tokens=12)
    assert old == new
    ids, _ = llm.generate_tokens(llm.encode_prompt(prompt), 12, temperature=0, min_new_tokens=12)
    assert len(ids) == 12 and llm.tok.decode(ids) == new
    with pytest.raises(TypeError, match="not both"):
        llm.generate(prompt, max_new_tokens=5, max_length=5)


def test_batch_to_json_and_jsonl(capsys, tmp_path, tiny_run):
    prompts = ["The model", "loss falls", "shards and"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts) + "\n\n", encoding="utf-8")
    llm = LLMInference(tiny_run, device="cpu")
    expected = [llm.generate(p, max_new_tokens=8, temperature=0) for p in prompts]
    for name in ("out.jsonl", "out.json"):
        out = tmp_path / name
        assert main([str(tiny_run), "--prompts", str(tmp_path / "prompts.txt"), "--output", str(out),
                     "--max-new-tokens", "8", "--temperature", "0", "--device", "cpu"]) == 0
        text = out.read_text(encoding="utf-8")
        records = [json.loads(line) for line in text.splitlines()] if name.endswith("l") else json.loads(text)
        assert [r["prompt"] for r in records] == prompts
        assert [r["completion"] for r in records] == expected
        assert "3 completions" in capsys.readouterr().err
    assert read_prompts(tmp_path / "out.jsonl") == prompts  # a results file is also a prompts file


def test_chat_through_stdin(tiny_run):
    llm = LLMInference(tiny_run, device="cpu")
    # what the chat should answer: the conversation so far, each turn a line, greedily continued
    history = [llm.eot_id] + llm.encoder.encode("hello\n")
    first, reason = llm.generate_tokens(history, 6, temperature=0)
    history += first + ([llm.eot_id] if reason == "eot" else []) + llm.encoder.encode("the loss\n")
    second, _ = llm.generate_tokens(history[-(32 - 6):], 6, temperature=0)
    r = subprocess.run([sys.executable, "-m", "train.generate", str(tiny_run), "--chat", "--temperature", "0",
                        "--max-new-tokens", "6", "--device", "cpu"], input="hello\nthe loss\n/reset\n/quit\n",
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    turns = r.stdout.split("> ")
    assert turns[0].startswith("chat with 2-layer model (context 32 tokens)")
    assert turns[1].rstrip("\n") == llm.tok.decode(first).rstrip("\n")
    assert turns[2].rstrip("\n") == llm.tok.decode(second).rstrip("\n")
    assert turns[3] == "(conversation forgotten)\n" and len(turns) == 5


def test_errors_are_one_line(capsys, tmp_path, tiny_run):
    assert main([str(tmp_path / "nope"), "--prompt", "x"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'nope'} has no complete checkpoint") and "Traceback" not in err
    (tmp_path / "p.txt").write_text("a\n", encoding="utf-8")
    assert main([str(tiny_run), "--prompts", str(tmp_path / "p.txt"), "--output", str(tmp_path / "o.csv")]) == 2
    assert "name the file .json" in capsys.readouterr().err
    assert main([str(tiny_run), "--top-p", "1.5"]) == 2
    assert capsys.readouterr().err == "error: --top-p must be in (0, 1], got 1.5\n"
    assert main([str(tiny_run), "--temperature", "nan"]) == 2
    assert capsys.readouterr().err == "error: --temperature must be a finite number >= 0 (0 = greedy), got nan\n"
    assert main([str(tiny_run), "--device", "gpu"]) == 2
    assert capsys.readouterr().err == "error: --device 'gpu' is not a device; use auto, cpu, cuda or cuda:N\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message given where CUDA is missing")
def test_device_cuda_without_cuda_is_an_error(capsys, tiny_run):
    assert main([str(tiny_run), "--prompt", "x", "--device", "cuda"]) == 2
    assert capsys.readouterr().err.startswith("error: --device cuda: no CUDA GPU is visible to PyTorch here")


def test_damaged_weights_are_refused_naming_the_file(capsys, tmp_path, tiny_run):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    weights = run / "checkpoints" / "step_00000001" / "model.safetensors"
    with open(weights, "r+b") as f:  # one flipped bit in the weights' data
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)[0]
        f.seek(-1, 1)
        f.write(bytes([byte ^ 4]))
    assert main([str(run), "--prompt", "x", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {weights} does not match the sha256 recorded when the checkpoint was written")
