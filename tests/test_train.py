"""The trainer end to end on a tiny dataset: config, CLI, exact resume after kill -9, signals, refusals."""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import shards
from tests.conftest import build_dataset, sample_texts
from train.checkpoint import find_checkpoint, load_model
from train.config import Config, ConfigError, load_config
from train.optim import get_lr
from train.trainer import TrainingError, train

TINY = ["model.seq_len=32", "model.n_layers=2", "model.d_model=64", "model.n_heads=2", "training.batch_size=4",
        "training.warmup_steps=5", "training.lr=3e-3", "training.log_interval=1", "training.eval_interval=10",
        "training.eval_windows=8", "training.device=cpu", "training.precision=fp32"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(data, out, *overrides, extra=()):
    args = [sys.executable, "-m", "train", "--data", str(data), "--out", str(out), "--config", "demo"]
    for o in TINY + list(overrides):
        args += ["--set", o]
    return args + list(extra)


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["type"] == "train"}


# ---------------------------------------------------------------------------------------------------
# config

def test_overrides_coerce_and_reject_unknown_keys():
    cfg = load_config("demo", ["training.lr=1", "training.max_steps=5e3", "model.rope=true", "logging.run_name=x"])
    assert cfg.training.lr == 1.0 and isinstance(cfg.training.lr, float)
    assert cfg.training.max_steps == 5000 and cfg.model.rope is True and cfg.logging.run_name == "x"
    with pytest.raises(ConfigError, match="valid keys in training: max_steps, token_budget"):
        load_config("demo", ["training.learning_rate=1"])
    with pytest.raises(ConfigError, match="valid sections: model, training, data, logging"):
        load_config(None, ["optim.lr=1"])
    with pytest.raises(ConfigError, match="expected int"):
        load_config(None, ["training.batch_size=big"])
    with pytest.raises(ConfigError, match="comes from the dataset manifest"):
        load_config(None, ["model.vocab_size=100"])
    with pytest.raises(ConfigError, match="presets: 75m_dolma, 75m_dolma_modern, default, demo, demo_modern, small"):
        load_config("nope")


def test_presets_load_and_round_trip():
    for name in ("demo", "small", "75m_dolma", "default"):
        cfg = load_config(name)
        assert Config.from_dict(cfg.to_dict()) == cfg
    c = load_config("75m_dolma")
    assert (c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.seq_len) == (10, 640, 10, 1024)
    assert (c.training.batch_size, c.training.grad_accum_steps, c.training.lr) == (12, 4, 5e-4)


def test_wandb_logs_to_one_run_per_directory_across_resumes(tiny_dataset, tmp_path, monkeypatch):
    """Real W&B in offline mode (no network): the run's metrics go into RUN/wandb, and a resumed run
    logs to the same W&B run id."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    for steps in (10, 20):
        cfg = load_config("demo", TINY + [f"training.max_steps={steps}", "training.checkpoint_interval=10",
                                          "logging.wandb=true"])
        train(cfg, tiny_dataset, run)
    run_id = (run / "wandb_run_id").read_text().strip()
    logs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(logs) == 2 and all(p.name.endswith(f"-{run_id}") for p in logs)
    for p in logs:
        data = (p / f"run-{run_id}.wandb").read_bytes()
        assert b"train/loss" in data and b"eval/val_loss" in data


@pytest.mark.slow
def test_compiled_training_matches_eager_and_its_checkpoint_loads_plain(tiny_dataset, tmp_path):
    """training.compile=true through torch.compile's CPU backend (the GPU runs take the same path):
    the losses are eager's, and the checkpoint of the compiled model loads into a plain one."""
    curves = {}
    for compiled in ("false", "true"):
        cfg = load_config("demo", TINY + ["training.max_steps=10", "training.checkpoint_interval=5",
                                          f"training.compile={compiled}"])
        train(cfg, tiny_dataset, tmp_path / compiled)
        curves[compiled] = losses(tmp_path / compiled)
    assert sorted(curves["true"]) == list(range(1, 11))
    assert all(abs(curves["true"][s] - curves["false"][s]) < 1e-3 for s in curves["false"])
    model, _, _ = load_model(tmp_path / "true")
    plain, _, _ = load_model(tmp_path / "false")
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-3), name


def test_lr_schedule():
    assert get_lr(0, 1.0, 10, 110, 0.1) == 0.1
    assert get_lr(9, 1.0, 10, 110, 0.1) == 1.0
    assert get_lr(10, 1.0, 10, 110, 0.1) == 1.0
    assert math.isclose(get_lr(60, 1.0, 10, 110, 0.1), 0.55)
    assert math.isclose(get_lr(110, 1.0, 10, 110, 0.1), 0.1)


# ---------------------------------------------------------------------------------------------------
# training in process

def test_train_writes_a_self_contained_run(tiny_dataset, tmp_path):
    cfg = load_config("demo", TINY + ["training.max_steps=20", "training.checkpoint_interval=10",
                                      "logging.tensorboard=true"])
    summary = train(cfg, tiny_dataset, tmp_path / "run")
    run = tmp_path / "run"
    assert summary["steps"] == 20 and summary["tokens"] == 20 * 4 * 32
    curve = losses(run)
    assert sorted(curve) == list(range(1, 21))
    assert curve[20] < curve[1] - 1.0  # it learns
    assert abs(curve[1] - math.log(300)) < 0.3  # starts near ln(vocab)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r["type"] == "eval"]
    assert [r["step"] for r in evals] == [10, 20]
    assert {"step", "loss", "lr", "tokens", "val_loss"} <= set(evals[0])
    assert json.loads((run / "config.json").read_text())["model"]["vocab_size"] == 300
    assert (run / "tokenizer.json").read_bytes() == (tiny_dataset / "tokenizer.json").read_bytes()
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert find_checkpoint(run, "latest").name == "step_00000020"
    model, mcfg, tok = load_model(run, which="best")
    assert mcfg.vocab_size == 300 and tok == run / "tokenizer.json" and not model.training
    ckpt = find_checkpoint(run)
    for name in ("trainer_state.pt", "rng.pt"):
        torch.load(ckpt / name, weights_only=True)  # no pickled objects


def test_nan_loss_stops_naming_step_and_checkpoint(tiny_dataset, tmp_path):
    # lr 1e30 blows the weights up after the first update; the norms then overflow to inf/NaN
    cfg = load_config("demo", TINY + ["training.max_steps=10", "training.warmup_steps=0", "training.lr=1e30",
                                      "training.grad_clip=0", "training.checkpoint_interval=1"])
    with pytest.raises(TrainingError, match=r"loss is nan at step 2; stopping. Last good checkpoint: .*step_00000001"):
        train(cfg, tiny_dataset, tmp_path / "run")
    assert find_checkpoint(tmp_path / "run").name == "step_00000001"


def test_early_stop_after_patience_evaluations_without_a_better_val_loss(tiny_dataset, tmp_path):
    # lr 0: the weights never change, so every evaluation after the first ties it (a tie is no better)
    cfg = load_config("demo", TINY + ["training.max_steps=20", "training.lr=0", "training.eval_interval=2",
                                      "training.early_stop_patience=2", "training.checkpoint_interval=100"])
    summary = train(cfg, tiny_dataset, tmp_path / "run")
    assert summary["steps"] == 6
    assert summary["stop_reason"] == "early stop: no better val loss in 2 evaluations"
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    vals = [r["val_loss"] for r in records if r["type"] == "eval"]
    assert len(vals) == 3 and vals[0] == vals[1] == vals[2]
    assert find_checkpoint(tmp_path / "run", "best").name == "step_00000002"
    assert find_checkpoint(tmp_path / "run", "latest").name == "step_00000006"


def test_resume_on_other_dataset_is_refused(tiny_dataset, tmp_path):
    cfg = load_config("demo", TINY + ["training.max_steps=2"])
    train(cfg, tiny_dataset, tmp_path / "run")
    other = build_dataset(tmp_path / "other", sample_texts(400, seed=1))
    with pytest.raises(TrainingError) as e:
        train(load_config("demo", TINY + ["training.max_steps=4"]), other, tmp_path / "run")
    old = shards.dataset_fingerprint(shards.load_manifest(tiny_dataset))
    new = shards.dataset_fingerprint(shards.load_manifest(other))
    assert f"dataset fingerprint {old}" in str(e.value) and f"dataset fingerprint {new}" in str(e.value)


def test_dry_run_trains_nothing(tiny_dataset, tmp_path, capsys):
    cfg = load_config("demo", TINY + ["training.max_steps=0", "training.token_budget=100000"])
    summary = train(cfg, tiny_dataset, tmp_path / "run", dry_run=True)
    out = capsys.readouterr().out
    assert summary["max_steps"] == math.ceil(100000 / 128) and "tokens per step: 128" in out
    assert "estimated memory per process" in out and not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------
# the CLI in subprocesses: exact resume after kill -9, SIGTERM

def wait_for(predicate, proc, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}: {proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.005)


@pytest.mark.slow
def test_exact_resume_after_kill_9(tiny_dataset, tmp_path):
    n = 60
    args = ["training.max_steps=60", "training.checkpoint_interval=10", "model.d_model=128", "model.n_heads=4",
            "model.dropout=0.1"]  # dropout: the torch RNG state must be restored too
    straight = subprocess.run(cli(tiny_dataset, tmp_path / "a", *args), env=ENV, capture_output=True, text=True)
    assert straight.returncode == 0, straight.stderr
    run = tmp_path / "b"
    proc = subprocess.Popen(cli(tiny_dataset, run, *args), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    latest = run / "checkpoints" / "latest"
    wait_for(lambda: latest.exists() and latest.read_text().strip() == "step_00000020", proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    killed_at = max(losses(run))
    assert 20 <= killed_at < n
    resumed = subprocess.run(cli(tiny_dataset, run, *args, extra=["--resume"]), env=ENV, capture_output=True,
                             text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stdout
    assert losses(run) == losses(tmp_path / "a")  # identical floats, every step 1..60


@pytest.mark.slow
def test_sigterm_checkpoints_and_exits_cleanly(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(cli(tiny_dataset, run, "training.max_steps=100000", "training.checkpoint_interval=1000"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(losses(run)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "stopped by signal 15; continue with --resume" in out
    last = max(losses(run))
    assert find_checkpoint(run).name == f"step_{last:08d}"
