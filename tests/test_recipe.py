"""The modern recipe: its model options, Muon + AdamW, the WSD schedule, and training with them
(exact resume after kill -9, DDP on gloo, torch.compile)."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TINY, check_two_ranks_match_one_with_double_accumulation, losses, wait_for
from train.checkpoint import find_checkpoint, load_model
from train.config import ConfigError, load_config
from train.generate import generate_ids
from train.model import GPT, ModelConfig
from train.optim import MuonAdamW, build_optimizer, get_lr, peak_lr, set_lr
from train.trainer import train

# every part of the modern recipe, on a tiny model
MODERN = dict(rope=True, rmsnorm=True, qk_norm=True, relu2=True, embed_norm=True, untied_head=True, zero_init=True,
              logit_softcap=15.0, bias=False)
# TINY's model and schedule on the demo_modern preset, with Muon's lr at the tiny model's scale
TINY_MODERN = TINY + ["training.muon_lr=0.02", "training.embed_lr=3e-3", "training.head_lr=3e-3"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def tiny(**kw) -> ModelConfig:
    return ModelConfig(**{**dict(vocab_size=97, seq_len=16, n_layers=2, d_model=32, n_heads=4), **kw})


def randomize(model: GPT, seed: int = 0) -> GPT:
    """Every parameter drawn at random (zero_init's zeros would make all logits equal, and any test of them vacuous)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3 + (1.0 if "norm" in name else 0.0))
    return model


# ---------------------------------------------------------------------------------------------------
# model options

@pytest.mark.parametrize("opts", [MODERN, {**MODERN, "untied_head": False, "relu2": False},
                                  {"qk_norm": True, "rope": True, "swiglu": True, "rmsnorm": True}])
def test_options_train_and_decode_with_the_kv_cache_as_without(opts):
    torch.manual_seed(0)
    model = GPT(tiny(**opts))
    idx = torch.randint(0, 97, (3, 16))
    logits, loss = model(idx, idx)
    assert logits.shape == (3, 16, 97) and loss.shape == ()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    model = randomize(model).eval()
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    # 30 new tokens from 4 prompt tokens cross the 16-token context: the trimming is exercised too
    cached, _ = generate_ids(model, prompt, 30, temperature=0, use_kv_cache=True)
    plain, _ = generate_ids(model, prompt, 30, temperature=0, use_kv_cache=False)
    assert cached == plain
    assert len({tuple(row) for row in cached}) == 2 and len(set(cached[0])) > 3  # not one token repeated
    with torch.no_grad():
        full, _ = model(idx)
        cache = model.new_kv_cache(3, 16)
        a, _ = model(idx[:, :9], kv_cache=cache, start_pos=0)
        b, _ = model(idx[:, 9:], kv_cache=cache, start_pos=9)
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, rtol=1e-5, atol=1e-5)


def test_zero_init_starts_every_block_as_the_identity_and_the_logits_uniform():
    torch.manual_seed(0)
    model = GPT(tiny(**MODERN))
    for block in model.blocks:
        assert not block.attn.proj.weight.any() and not block.mlp.proj.weight.any()
    assert not model.lm_head.weight.any()
    assert model.blocks[0].attn.qkv.weight.std() > 0.01  # the rest is drawn as before
    idx = torch.randint(0, 97, (2, 16))
    _, loss = model(idx, idx)
    assert loss.item() == pytest.approx(math.log(97), abs=1e-6)
    plain = GPT(tiny(**{**MODERN, "zero_init": False}))
    assert plain.blocks[0].mlp.proj.weight.std() > 0.001 and plain.lm_head.weight.std() > 0.01


def test_untied_head_has_its_own_matrix_and_is_counted_instead_of_the_embedding():
    tied, untied = GPT(tiny(rope=True)), GPT(tiny(rope=True, untied_head=True))
    assert untied.lm_head.weight.shape == (97, 32) and tied.lm_head is None
    extra = 97 * 32
    assert untied.num_params(non_embedding=False) == tied.num_params(non_embedding=False) + extra
    assert untied.num_params() == tied.num_params()  # a lookup table is not compute; the head is
    with torch.no_grad():
        untied.tok_emb.weight[5].zero_()
    logits, _ = untied(torch.zeros(1, 4, dtype=torch.long))
    assert logits[0, :, 5].abs().min() > 0  # the output row of token 5 is not its embedding row


def test_softcap_bounds_the_logits_and_is_tanh():
    model = randomize(GPT(tiny(rope=True, untied_head=True, logit_softcap=2.0)), seed=1).eval()
    uncapped = GPT(tiny(rope=True, untied_head=True))
    uncapped.load_state_dict(model.state_dict())
    idx = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        capped, raw = model(idx)[0], uncapped.eval()(idx)[0]
    assert raw.abs().max() > 4.0 and capped.abs().max() < 2.0
    torch.testing.assert_close(capped, 2.0 * torch.tanh(raw / 2.0))


def test_qk_norm_bounds_the_attention_logits():
    model = randomize(GPT(tiny(rope=True, qk_norm=True)), seed=2)
    q, k, _ = model.blocks[0].attn.heads(torch.randn(2, 16, 32) * 100)
    rms = lambda t: t.pow(2).mean(-1).sqrt()  # noqa: E731
    torch.testing.assert_close(rms(q), torch.ones(2, 4, 16), atol=1e-4, rtol=0)
    torch.testing.assert_close(rms(k), torch.ones(2, 4, 16), atol=1e-4, rtol=0)


def test_embed_norm_gives_the_blocks_a_unit_rms_input():
    model = randomize(GPT(tiny(rope=True, embed_norm=True)))  # rows of RMS 0.3, where eps (1e-6) is negligible
    x, _ = model.embed(torch.randint(0, 97, (2, 16)), torch.arange(16))
    torch.testing.assert_close(x.pow(2).mean(-1).sqrt(), torch.ones(2, 16), atol=1e-4, rtol=0)


def test_bad_option_combinations_are_refused_naming_the_key():
    with pytest.raises(ValueError, match="model.swiglu and model.relu2 are two kinds of MLP"):
        GPT(tiny(swiglu=True, relu2=True))
    with pytest.raises(ConfigError, match="model.swiglu and model.relu2"):
        load_config("demo_modern", ["model.swiglu=true"])
    with pytest.raises(ConfigError, match=r"model.logit_softcap=-1.0: must be a finite number >= 0"):
        load_config("demo", ["model.logit_softcap=-1"])
    with pytest.raises(ConfigError, match="training.optimizer='sgd': must be one of adamw, muon"):
        load_config("demo", ["training.optimizer=sgd"])
    with pytest.raises(ConfigError, match="training.schedule='linear': must be one of cosine, wsd"):
        load_config("demo", ["training.schedule=linear"])
    with pytest.raises(ConfigError, match=r"training.decay_fraction=0.0: must be a number in \(0, 1\]"):
        load_config("demo", ["training.decay_fraction=0"])


def test_presets_keep_the_demo_shape_and_the_flagship_shape():
    demo, modern = load_config("demo"), load_config("demo_modern")
    for key in ("seq_len", "n_layers", "d_model", "n_heads"):
        assert getattr(modern.model, key) == getattr(demo.model, key), key
    assert (modern.training.batch_size, modern.training.grad_accum_steps) == (16, 1)
    flagship, big = load_config("75m_dolma"), load_config("75m_dolma_modern")
    for key in ("seq_len", "n_layers", "d_model", "n_heads"):
        assert getattr(big.model, key) == getattr(flagship.model, key), key
    assert big.training.token_budget == 5_000_000_000 and big.training.max_steps == 0
    for cfg in (modern, big):
        assert cfg.training.optimizer == "muon" and cfg.training.schedule == "wsd"
        assert all(getattr(cfg.model, k) for k in ("rope", "rmsnorm", "qk_norm", "embed_norm"))
    assert flagship.training.optimizer == "adamw" and not flagship.model.qk_norm  # the seed's recipe stays


# ---------------------------------------------------------------------------------------------------
# optimizer and schedule

def test_wsd_schedule():
    lr = lambda s: get_lr(s, 1.0, 10, 110, 0.1, "wsd", 0.5)  # noqa: E731  decays over the last 55 steps
    assert lr(0) == 0.1 and lr(9) == 1.0
    assert lr(10) == lr(54) == lr(55) == 1.0
    assert math.isclose(lr(56), 0.1 + 0.9 * 54 / 55)
    assert math.isclose(lr(83), 0.1 + 0.9 * 27 / 55)
    assert math.isclose(lr(109), 0.1 + 0.9 / 55) and lr(110) == 0.1
    assert get_lr(99, 1.0, 0, 100, 0.0, "wsd", 0.2) == pytest.approx(1 / 20)


def test_muon_groups_cover_every_parameter_once_each_with_its_lr():
    cfg = load_config("demo_modern", ["training.muon_lr=0.05", "training.lr=1e-3", "training.embed_lr=7e-3",
                                      "training.head_lr=4e-3", "training.warmup_steps=0", "training.decay_fraction=0.4",
                                      "training.min_lr_ratio=0"])
    cfg.model.vocab_size = 97
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    assert isinstance(opt, MuonAdamW) and isinstance(opt.muon, torch.optim.Muon)
    names = {id(p): n for n, p in model.named_parameters()}
    members = {g["name"]: sorted(names[id(p)] for p in g["params"]) for g in opt.param_groups}
    everything = sorted(n for ps in members.values() for n in ps)
    assert everything == sorted(names.values())  # each parameter in exactly one group
    assert members["muon"] == sorted(n for n, p in model.named_parameters() if n.startswith("blocks.") and p.dim() == 2)
    assert members["embedding"] == ["tok_emb.weight"] and members["head"] == ["lm_head.weight"]
    assert all(n.endswith("norm1.weight") or n.endswith("norm2.weight") or n == "norm.weight"
               for n in members["vectors"])
    logged = set_lr(opt, 0, cfg.training, 100)
    assert logged == 1e-3
    assert {g["name"]: g["lr"] for g in opt.param_groups} == {"muon": 0.05, "embedding": 7e-3, "head": 4e-3,
                                                              "vectors": 1e-3}
    assert {g["name"]: g["weight_decay"] for g in opt.param_groups} == {"muon": cfg.training.weight_decay,
                                                                        "embedding": 0.0, "head": 0.0, "vectors": 0.0}
    set_lr(opt, 99, cfg.training, 100)  # the wsd decay scales every group alike
    assert {g["name"]: g["lr"] for g in opt.param_groups} == pytest.approx(
        {"muon": 0.05 / 40, "embedding": 7e-3 / 40, "head": 4e-3 / 40, "vectors": 1e-3 / 40})


def test_adamw_groups_are_the_gpt2_recipes():
    cfg = load_config("demo")
    cfg.model.vocab_size = 97
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    assert type(opt) is torch.optim.AdamW and [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    assert all(p.dim() >= 2 for p in opt.param_groups[0]["params"])
    assert set_lr(opt, 10, cfg.training, 600) == get_lr(10, 2e-3, 50, 600, 0.1)
    assert all(g["lr"] == get_lr(10, 2e-3, 50, 600, 0.1) for g in opt.param_groups)


def test_muon_state_round_trips_through_torch_load_weights_only(tmp_path):
    cfg = load_config("demo_modern")
    cfg.model = tiny(**MODERN)
    model = GPT(cfg.model)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    set_lr(opt, 0, cfg.training, 10)
    for _ in range(2):
        _, loss = model(torch.randint(0, 97, (2, 16)), torch.randint(0, 97, (2, 16)))
        loss.backward()
        opt.step()
        opt.zero_grad()
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    saved = torch.load(tmp_path / "opt.pt", weights_only=True)
    assert len(saved["muon"]["state"]) == len(opt.muon.param_groups[0]["params"])
    assert all("momentum_buffer" in s for s in saved["muon"]["state"].values())
    again = build_optimizer(GPT(cfg.model), cfg, torch.device("cpu"))
    again.load_state_dict(saved)
    for a, b in zip(again.muon.state.values(), opt.muon.state.values(), strict=True):
        assert torch.equal(a["momentum_buffer"], b["momentum_buffer"])
    assert [g["lr"] for g in again.param_groups] == [g["lr"] for g in opt.param_groups]
    with pytest.raises(ValueError, match="not saved by training.optimizer=muon"):
        again.load_state_dict(torch.optim.AdamW(model.parameters()).state_dict())


def test_muon_updates_are_orthogonalized_whatever_the_gradients_scale():
    """A step from zero momentum moves a hidden matrix by lr * sqrt(max(1, rows / cols)) * (the gradient
    orthogonalized: its largest singular value near 1), the same for the loss and for 1000 x the loss."""
    cfg = load_config("demo_modern", ["training.weight_decay=0"])
    cfg.model = tiny(rope=True)
    idx, targets = torch.randint(0, 97, (4, 16)), torch.randint(0, 97, (4, 16))
    moves = []
    for scale in (1.0, 1000.0):
        torch.manual_seed(0)
        model = GPT(cfg.model)
        opt = build_optimizer(model, cfg, torch.device("cpu"))
        for group in opt.param_groups:
            group["lr"] = peak_lr(cfg.training, group)
        w = model.blocks[0].mlp.fc.weight  # (128, 32): Muon scales its lr by sqrt(128 / 32) = 2
        before = w.detach().clone()
        _, loss = model(idx, targets)
        (loss * scale).backward()
        opt.step()
        moves.append((w.detach() - before) / (-cfg.training.muon_lr * 2))
    # torch's Newton-Schulz runs in bf16: the two differ by 5-7% (relative norm, measured over 5 batches)
    assert (moves[0] - moves[1]).norm() < 0.15 * moves[0].norm()
    top = torch.linalg.svdvals(moves[0])[0]
    assert 0.9 < top < 1.3, top  # measured 1.12-1.14


# ---------------------------------------------------------------------------------------------------
# training with the recipe

def cli(data, out, *overrides, extra=()):
    args = [sys.executable, "-m", "train", "--data", str(data), "--out", str(out), "--config", "demo_modern"]
    for o in TINY_MODERN + list(overrides):
        args += ["--set", o]
    return args + list(extra)


def test_modern_recipe_learns_and_checkpoints_muon_state(tiny_dataset, tmp_path):
    cfg = load_config("demo_modern", TINY_MODERN + ["training.max_steps=20", "training.checkpoint_interval=10"])
    summary = train(cfg, tiny_dataset, tmp_path / "run")
    curve = losses(tmp_path / "run")
    assert abs(curve[1] - math.log(300)) < 1e-3  # zero-init head: uniform logits at the first step
    assert curve[20] < curve[1] - 1.0 and summary["final_val_loss"] < math.log(300) - 1.0
    state = torch.load(find_checkpoint(tmp_path / "run") / "optimizer.pt", weights_only=True)
    assert set(state) == {"muon", "adamw"} and state["muon"]["state"]
    model, mcfg, _ = load_model(tmp_path / "run")
    assert mcfg.qk_norm and mcfg.untied_head and model.lm_head.weight.any()


@pytest.mark.slow
def test_exact_resume_after_kill_9_with_muon(tiny_dataset, tmp_path):
    """As tests/test_train.py's kill -9 test, with Muon's momentum, the WSD schedule and every model option."""
    n = 60
    args = ["training.max_steps=60", "training.checkpoint_interval=10", "model.d_model=128", "model.n_heads=4",
            "model.dropout=0.1"]
    straight = subprocess.run(cli(tiny_dataset, tmp_path / "a", *args), env=ENV, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "b"
    proc = subprocess.Popen(cli(tiny_dataset, run, *args), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    latest = run / "checkpoints" / "latest"
    wait_for(lambda: latest.exists() and latest.read_text().strip() == "step_00000020", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert 20 <= max(losses(run)) < n
    resumed = subprocess.run(cli(tiny_dataset, run, *args, extra=["--resume"]), env=ENV, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert losses(run) == losses(tmp_path / "a")  # identical floats, every step 1..60


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process_with_double_accumulation_with_muon(tiny_dataset, tmp_path):
    check_two_ranks_match_one_with_double_accumulation(tiny_dataset, tmp_path, "demo_modern", TINY_MODERN)


@pytest.mark.slow
def test_compiled_modern_training_matches_eager(tiny_dataset, tmp_path, compiled):
    """As tests/test_train.py's compile test, with the modern recipe: two graphs (training, evaluation), no
    graph break. Muon's matrices are compared to how far they moved: its Newton-Schulz runs in bf16, where
    the last-bit differences of compiled and eager gradients round differently (measured: 4-7% of the
    movement after 8 steps, AdamW's groups < 0.3%)."""
    curves = {}
    for compile_ in ("false", "true"):
        cfg = load_config("demo_modern", TINY_MODERN + ["training.max_steps=8", "training.checkpoint_interval=8",
                                                        "training.eval_interval=4", "training.eval_windows=10",
                                                        f"training.compile={compile_}"])
        train(cfg, tiny_dataset, tmp_path / compile_)
        curves[compile_] = losses(tmp_path / compile_)
    assert compiled.graphs() == 2 and compiled.graph_breaks() == {}
    assert sorted(curves["true"]) == list(range(1, 9))
    assert all(abs(curves["true"][s] - curves["false"][s]) < 1e-3 for s in curves["false"])
    model, mcfg, _ = load_model(tmp_path / "true")
    plain, _, _ = load_model(tmp_path / "false")
    torch.manual_seed(cfg.training.seed)
    init = GPT(mcfg).state_dict()  # the trainer's initial weights
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items(), strict=True):
        if name.startswith("blocks.") and a.dim() == 2:
            assert (a - b).norm() < 0.15 * (b - init[name]).norm(), name
        else:
            assert torch.allclose(a, b, atol=1e-3), name


@pytest.mark.slow
def test_bench_recipe_runs_and_prints_every_row(tmp_path):
    """tools/bench_recipe.py end to end on tiny settings: the stdlib dataset built by the real preprocess
    CLI, every run, every table row. Nothing about speed or ratios is asserted."""
    root = Path(__file__).resolve().parents[1]
    sets = ["model.n_layers=1", "model.d_model=32", "model.n_heads=2", "model.seq_len=32", "training.batch_size=2",
            "training.warmup_steps=2", "training.precision=fp32", "training.device=cpu"]
    args = [sys.executable, "tools/bench_recipe.py", "--out", str(tmp_path / "bench"), "--steps", "10",
            "--fractions", "0.3,0.5", "--eval-windows", "4", "--eval-interval", "5", "--vocab-size", "512",
            "--timing-steps", "2", "--plot", str(tmp_path / "curves.png")]
    for s in sets:
        args += ["--set", s]
    done = subprocess.run(args, cwd=root, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    from tests.conftest import load_tool
    ABLATION = load_tool("bench_recipe").ABLATION
    for row in ["GPT-2 recipe, 1.0x", "modern, 0.3x", "modern, 0.4x", "modern, 0.5x", "ratio (modern tokens",
                "GPT-2 recipe ", "modern recipe ", "modern / GPT-2 (target <= 1.15)", "plot written to"] + \
            [label for label, _ in ABLATION]:
        assert row in out, row
    assert (tmp_path / "curves.png").stat().st_size > 10_000
    manifest = json.loads((tmp_path / "bench" / "data-stdlib-512" / "manifest.json").read_text())
    assert manifest["vocab_size"] == 512 and manifest["totals"]["train"]["tokens"] > 5_000_000
    # the same command again reuses every finished run: nothing trains, the tables are the same
    trained = [line for line in done.stderr.splitlines() if " tokens (" in line]
    assert len(trained) == 1 + 3 + len(ABLATION) - 1, trained
    again = subprocess.run(args, cwd=root, env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not [line for line in again.stderr.splitlines() if " tokens (" in line], again.stderr[-3000:]
    tables = out.split("\ntime per token")[0]
    assert again.stdout.split("\ntime per token")[0] == tables
    # another config into the same --out is refused: a finished run is never deleted to make room
    other = subprocess.run(args + ["--set", "training.seed=7"], cwd=root, env=ENV, capture_output=True, text=True,
                           timeout=600)
    assert other.returncode == 1 and "holds a finished run of another config" in other.stderr, other.stderr[-3000:]
    assert json.loads((tmp_path / "bench" / "gpt2-1.0x" / "bench_result.json").read_text())["config"] \
        ["training"]["seed"] == 1337
