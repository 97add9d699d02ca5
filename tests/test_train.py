"""The trainer end to end on a tiny dataset: config, CLI, exact resume after kill -9, signals, refusals."""
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import shards
from tests.conftest import TINY, build_dataset, losses, sample_texts, val_losses, wait_for
from train.checkpoint import CheckpointError, find_checkpoint, load_model, read_index, verify
from train.config import Config, ConfigError, load_config
from train.loader import Loader
from train.optim import get_lr
from train.trainer import TrainingError, train

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(data, out, *overrides, extra=()):
    args = [sys.executable, "-m", "train", "--data", str(data), "--out", str(out), "--config", "demo"]
    for o in TINY + list(overrides):
        args += ["--set", o]
    return args + list(extra)


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


@pytest.mark.parametrize("overrides, message", [
    (["training.lr=-1"], "training.lr=-1.0: must be a finite number >= 0"),
    (["training.lr=nan"], "training.lr=nan: must be a finite number >= 0"),
    (["model.dropout=2"], "model.dropout=2.0: must be a number in [0, 1)"),
    (["training.beta1=1.5"], "training.beta1=1.5: must be a number in [0, 1)"),
    (["training.seed=-1"], "training.seed=-1: must be an integer in [0, 9223372036854775807]"),
    (["training.warmup_steps=-10"], "training.warmup_steps=-10: must be an integer >= 0"),
    (["training.eval_interval=-1"], "training.eval_interval=-1: must be an integer >= 0"),
    (["training.keep_checkpoints=-1"], "training.keep_checkpoints=-1: must be an integer >= 1"),
    (["data.prefetch=-1"], "data.prefetch=-1: must be an integer >= 1"),
    (["training.min_lr_ratio=-3", "training.weight_decay=-1"],
     "2 config values are invalid:\n  training.min_lr_ratio=-3.0: must be a number in [0, 1]\n"
     "  training.weight_decay=-1.0: must be a finite number >= 0"),
    (["model.rope=true", "model.d_model=66", "model.n_heads=2"],
     "model.rope=true needs an even head size, but model.d_model / model.n_heads = 33; change one of them"),
])
def test_out_of_range_values_are_one_message_per_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        load_config("demo", overrides)
    assert str(e.value) == message


def test_every_config_key_has_a_range_rule():
    """A new config field needs its row in train/config.py's RULES."""
    from train.config import RULES
    cfg = Config()
    keys = {f"{section}.{f.name}" for section in ("model", "training", "data", "logging")
            for f in dataclasses.fields(getattr(cfg, section))}
    assert keys == set(RULES)
    cfg.validate()  # the defaults are valid, and so is every preset
    for name in ("demo", "small", "75m_dolma", "default"):
        load_config(name)


def test_cli_mistakes_are_one_line_errors(tiny_dataset, tmp_path, capsys):
    from train.__main__ import main
    (tmp_path / "latin1.json").write_bytes('{"model": {"n_layers": 2}} # caf\xe9'.encode("latin-1"))
    cases = [(["--config", str(tmp_path)], f"--config {tmp_path}: {tmp_path} is a directory"),
             (["--config", str(tmp_path / "latin1.json")], f"{tmp_path / 'latin1.json'} is not UTF-8 text"),
             (["--set", "training.lr=nan"], "training.lr=nan: must be a finite number >= 0"),
             (["--out", str(tiny_dataset)], f"--out {tiny_dataset} is the dataset directory")]
    for args, message in cases:
        argv = ["--data", str(tiny_dataset), "--out", str(tmp_path / "run")] + args
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 1 and err.startswith(f"error: {message}"), err
    assert not (tiny_dataset / ".lock").exists() and not (tiny_dataset / "checkpoints").exists()


def test_presets_load_and_round_trip():
    for name in ("demo", "small", "75m_dolma", "default"):
        cfg = load_config(name)
        assert Config.from_dict(cfg.to_dict()) == cfg
    c = load_config("75m_dolma")
    assert (c.model.n_layers, c.model.d_model, c.model.n_heads, c.model.seq_len) == (10, 640, 10, 1024)
    assert (c.training.batch_size, c.training.grad_accum_steps, c.training.lr) == (12, 4, 5e-4)


def test_wandb_logs_to_one_run_per_directory_across_resumes(tiny_dataset, tmp_path):
    """Real W&B in offline mode (no network): the run's metrics go into RUN/wandb, and a resumed run
    logs to the same W&B run id. Each run is its own process, as a resume is (a second wandb.init in
    one process drops its records about half the time with wandb 0.31 offline)."""
    env = {**ENV, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    run = tmp_path / "run"
    for steps in (10, 20):
        done = subprocess.run(cli(tiny_dataset, run, f"training.max_steps={steps}", "training.checkpoint_interval=10",
                                  "logging.wandb=true"), env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
    run_id = (run / "wandb_run_id").read_text().strip()
    logs = sorted((run / "wandb").glob("offline-run-*"))
    assert len(logs) == 2 and all(p.name.endswith(f"-{run_id}") for p in logs)
    for p in logs:
        data = (p / f"run-{run_id}.wandb").read_bytes()
        assert b"train/loss" in data and b"eval/val_loss" in data


@pytest.mark.slow
def test_compiled_training_evaluation_and_resume(tiny_dataset, tmp_path, compiled):
    """training.compile=true through inductor on CPU (the GPU runs take the same path): train and val losses
    are eager's; the run compiles two graphs, training and evaluation, and nothing after the first
    evaluation, though the last val batch holds 2 of 10 windows (padded to the batch's shape); no graph
    break; a resumed compiled run continues with the same losses, compiling nothing new; the checkpoint of
    the compiled model loads into a plain one."""
    overrides = TINY + ["training.max_steps=10", "training.checkpoint_interval=5", "training.eval_interval=4",
                        "training.eval_windows=10"]  # evaluations at steps 4, 8, 10 in batches of 4, 4, 2
    # one thread, as every exact-resume test runs: with two, inductor's CPU kernels for the evaluation's
    # logits differ from call to call in the last bits (val loss 1e-9 apart, measured)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        check_compiled_training(overrides, tiny_dataset, tmp_path, compiled)
    finally:
        torch.set_num_threads(threads)


def check_compiled_training(overrides, tiny_dataset, tmp_path, compiled):
    for compile_ in ("false", "true"):
        train(load_config("demo", overrides + [f"training.compile={compile_}"]), tiny_dataset, tmp_path / compile_)
    eager, run = tmp_path / "false", tmp_path / "true"
    assert compiled.graphs() == 2 and compiled.graph_breaks() == {}
    assert sorted(losses(run)) == list(range(1, 11)) and sorted(val_losses(run)) == [4, 8, 10]
    assert all(abs(losses(run)[s] - losses(eager)[s]) < 1e-3 for s in losses(eager))
    assert all(math.isclose(val_losses(run)[s], val_losses(eager)[s], rel_tol=1e-4) for s in val_losses(eager))
    model, _, _ = load_model(run)
    plain, _, _ = load_model(eager)
    for (name, a), (_, b) in zip(model.state_dict().items(), plain.state_dict().items(), strict=True):
        assert torch.allclose(a, b, atol=1e-3), name

    straight = losses(run), val_losses(run)
    shutil.rmtree(run / "checkpoints" / "step_00000010")  # as a run stopped after step 5's checkpoint leaves it
    train(load_config("demo", overrides + ["training.compile=true"]), tiny_dataset, run)
    assert (losses(run), val_losses(run)) == straight  # identical floats, every step
    assert compiled.graphs() == 2


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
    for name in ("optimizer.pt", "rng.pt"):
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
    # the best evaluation fell between checkpoints: its weights alone were written (no full checkpoint)
    best = find_checkpoint(tmp_path / "run", "best")
    assert best.name == "best_step_00000002"
    assert sorted(p.name for p in best.iterdir()) == ["checksums.json", "config.json", "fingerprints.json",
                                                      "model.safetensors", "state.json", "train_state.json"]
    load_model(tmp_path / "run", which="best")
    assert find_checkpoint(tmp_path / "run", "latest").name == "step_00000006"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step_*")) == ["step_00000006"]


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
def test_sigterm_checkpoints_and_exits_with_the_preempted_status(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.Popen(cli(tiny_dataset, run, "training.max_steps=100000", "training.checkpoint_interval=1000"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(losses(run)) >= 3, proc)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 75, out  # EXIT_PREEMPTED: a scheduler reads "preempted, resume me"
    assert "stopped by signal 15 (SIGTERM); continue with --resume" in out
    last = max(losses(run))
    assert find_checkpoint(run).name == f"step_{last:08d}"


# ---------------------------------------------------------------------------------------------------
# damaged or missing checkpoints: never trained on, never a silent restart

def flip_bit(path: Path, offset: int) -> None:
    """Flip the lowest bit of the byte at ``offset`` of a real file, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 1]))


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def one_record_per_step(run: Path) -> bool:
    keys = [(r["type"], r["step"]) for r in records(run)]
    return len(keys) == len(set(keys))


LONG = TINY + ["training.max_steps=30", "training.checkpoint_interval=10", "training.keep_checkpoints=3"]


@pytest.fixture(scope="module")
def run_30(tiny_dataset, tmp_path_factory) -> Path:
    """A finished 30-step run with checkpoints at steps 10, 20, 30 (copy it before changing it)."""
    run = tmp_path_factory.mktemp("run30") / "run"
    train(load_config("demo", LONG), tiny_dataset, run)
    return run


def test_a_missing_newest_checkpoint_falls_back_to_the_previous_one(tiny_dataset, tmp_path, capsys, run_30):
    run = tmp_path / "run"
    shutil.copytree(run_30, run)
    shutil.rmtree(run / "checkpoints" / "step_00000030")  # `latest` still names it
    capsys.readouterr()
    train(load_config("demo", LONG), tiny_dataset, run)
    out = capsys.readouterr().out
    assert "checkpoint step_00000030 passed over: " in out and "names step_00000030, which is missing" in out
    assert "falling back to step_00000020" in out and "step_00000020 (step 20, " in out
    assert losses(run) == losses(run_30) and one_record_per_step(run)  # steps 21..30 trained again, once
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == [f"step_000000{s}0" for s in (1, 2, 3)]


def test_a_flipped_bit_in_the_optimizer_state_is_caught_and_the_run_falls_back(tiny_dataset, tmp_path, capsys,
                                                                              run_30):
    run = tmp_path / "run"
    shutil.copytree(run_30, run)
    # as a run killed between its checkpoints at steps 20 and 30 leaves it
    shutil.rmtree(run / "checkpoints" / "step_00000030")
    (run / "checkpoints" / "latest").write_text("step_00000020\n")
    damaged = run / "checkpoints" / "step_00000020" / "optimizer.pt"
    flip_bit(damaged, damaged.stat().st_size // 2)  # inside the AdamW moments
    capsys.readouterr()
    train(load_config("demo", LONG), tiny_dataset, run)
    out = capsys.readouterr().out
    assert f"{damaged} does not match the sha256 recorded when the checkpoint was written" in out
    assert f"moved to {run / 'checkpoints' / 'damaged_step_00000020'}" in out
    assert "falling back to step_00000010" in out
    assert losses(run) == losses(run_30) and one_record_per_step(run)
    # step 20 was written afresh, not kept damaged
    assert sorted(p.name for p in (run / "checkpoints").glob("*step_*")) == [
        "damaged_step_00000020", "step_00000010", "step_00000020", "step_00000030"]
    load_model(run / "checkpoints" / "step_00000020")


def test_no_usable_checkpoint_is_a_refusal_not_a_restart(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    train(load_config("demo", TINY + ["training.max_steps=20", "training.checkpoint_interval=10"]), tiny_dataset, run)
    for step in (10, 20):
        weights = run / "checkpoints" / f"step_{step:08d}" / "model.safetensors"
        flip_bit(weights, weights.stat().st_size - 3)
    with pytest.raises(CheckpointError, match=r"refusing to start .* from scratch: it holds checkpoints, but none "
                                              r"is usable \(step_00000020: .*model.safetensors does not match"):
        train(load_config("demo", TINY + ["training.max_steps=30"]), tiny_dataset, run)
    assert (run / "checkpoints" / "step_00000010").is_dir() and max(losses(run)) == 20


def test_a_checkpoint_without_checksums_that_does_not_parse_is_named(tiny_dataset, tmp_path, capsys):
    """A checkpoint from before checksums (checksums.json absent) loads unverified; a truncated file in
    it is an error naming the file, never PyTorch's advice to load with weights_only=False."""
    run = tmp_path / "run"
    train(load_config("demo", TINY + ["training.max_steps=10"]), tiny_dataset, run)
    ckpt = run / "checkpoints" / "step_00000010"
    (ckpt / "checksums.json").unlink()
    with open(ckpt / "optimizer.pt", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    with pytest.raises(CheckpointError) as e:
        train(load_config("demo", TINY + ["training.max_steps=20"]), tiny_dataset, run)
    assert str(e.value).startswith(f"{ckpt / 'optimizer.pt'} cannot be read") and "weights_only" not in str(e.value)
    assert "has no checksums.json" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------------
# metrics.jsonl after a failure: one record per step, whatever was on disk

def test_a_half_written_last_line_does_not_stop_the_resume(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    train(load_config("demo", TINY + ["training.max_steps=10", "training.checkpoint_interval=10"]), tiny_dataset, run)
    line = json.dumps({"type": "train", "step": 11, "loss": 3.25, "lr": 0.001})
    n = len((run / "metrics.jsonl").read_text().splitlines()) + 1  # the line the cut write is
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line[: len(line) // 2])  # the process died in the middle of this write
    capsys.readouterr()
    train(load_config("demo", TINY + ["training.max_steps=12", "training.checkpoint_interval=10"]), tiny_dataset, run)
    assert f"metrics.jsonl: dropped 1 line(s) that are not JSON records (line {n})" in capsys.readouterr().out
    assert sorted(losses(run)) == list(range(1, 13)) and one_record_per_step(run)


@pytest.mark.slow
def test_a_run_killed_before_its_first_checkpoint_logs_each_step_once(tiny_dataset, tmp_path, capsys):
    run = tmp_path / "run"
    proc = subprocess.Popen(cli(tiny_dataset, run, "training.max_steps=1000", "training.checkpoint_interval=1000"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for(lambda: (run / "metrics.jsonl").exists() and len(losses(run)) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL and not (run / "checkpoints" / "latest").exists()
    with open(run / "metrics.jsonl", "r+b") as f:  # and its last write was cut short
        f.truncate(f.seek(0, 2) - 20)
    train(load_config("demo", TINY + ["training.max_steps=6"]), tiny_dataset, run)
    assert [r["step"] for r in records(run) if r["type"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert one_record_per_step(run)


def test_a_token_id_beyond_the_vocabulary_stops_the_run_naming_the_shard(copy_dataset, tmp_path):
    data = copy_dataset()
    manifest = shards.load_manifest(data)
    loader = Loader(data, manifest, 32, 4, seed=1337)
    window = int(loader.windows_for(0, 0)[0][2])  # one the first batch reads
    k = int(np.searchsorted(loader.windows.first, window, side="right") - 1)
    damaged, offset = loader.windows.files[k], (window - int(loader.windows.first[k])) * 32 + 7
    with open(damaged, "r+b") as f:
        f.seek(offset * 2)
        f.write(np.array([60000], dtype="<u2").tobytes())
    with pytest.raises(shards.DatasetError, match=rf"{damaged} holds token id 60000 at token {offset:,}, but the "
                                                  rf"vocabulary has 300 ids .*inspect_shards.py verify {data}"):
        train(load_config("demo", TINY + ["training.max_steps=5"]), data, tmp_path / "run")


# ---------------------------------------------------------------------------------------------------
# a full disk: a real filesystem of a few MB, mounted for the test

@pytest.fixture
def small_fs(tmp_path):
    """A 2400 KiB tmpfs: room for a tiny run's files and one of its checkpoints (1.5 MB), not two."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "fs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2400k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    done = subprocess.run(["umount", str(mount)], capture_output=True, text=True)
    assert done.returncode == 0, f"{done.stderr.strip()}: a file on it is still open"


def test_a_full_disk_while_checkpointing_names_the_space_and_keeps_the_last_checkpoint(tiny_dataset, small_fs):
    run = small_fs / "run"
    cfg = load_config("demo", TINY + ["training.max_steps=20", "training.checkpoint_interval=5",
                                      "training.eval_interval=0", "training.keep_checkpoints=3"])
    with pytest.raises(CheckpointError) as e:
        train(cfg, tiny_dataset, run)
    message = str(e.value)
    root = run / "checkpoints"
    assert message.startswith(f"no space left on the filesystem of {root} for checkpoint step_00000010: "
                              f"it needs about 1.4 MiB, ")
    assert "training.keep_checkpoints=3" in message and "it resumes from step_00000005, which is intact" in message
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000005"]  # no partial directory left
    verify(root / "step_00000005", read_index(root / "step_00000005")["parts"].values())
    assert find_checkpoint(run).name == "step_00000005"


def test_a_full_disk_while_logging_is_named(tiny_dataset, small_fs):
    run = small_fs / "run"
    run.mkdir()
    free = shutil.disk_usage(small_fs).free
    (small_fs / "filler").write_bytes(b"\0" * (free - 16 * 1024))  # leaves room for the run's files and a few lines
    cfg = load_config("demo", TINY + ["training.max_steps=400", "training.checkpoint_interval=1000",
                                      "training.eval_interval=0"])
    with pytest.raises(TrainingError, match=rf"cannot append to {run / 'metrics.jsonl'}: No space left on device. "
                                            r"Free space on that filesystem"):
        train(cfg, tiny_dataset, run)


def test_any_error_mid_run_closes_the_loader_thread_and_the_metrics_file(copy_dataset, tmp_path):
    """A val shard damaged after the build fails the first evaluation, in the main thread, while the
    loader thread is running: both it and RUN/metrics.jsonl are closed on the way out."""
    data = copy_dataset()
    val = next(data / e["file"] for e in shards.load_manifest(data)["shards"] if e["split"] == "val")
    with open(val, "r+b") as f:
        f.write(np.full(200, 65000, dtype="<u2").tobytes())  # its first 200 tokens: every val window reads one
    run = tmp_path / "run"
    before = set(threading.enumerate())  # other tests may leave loaders of their own running
    with pytest.raises(shards.DatasetError, match=rf"{val} holds token id 65000"):
        train(load_config("demo", TINY + ["training.max_steps=20", "training.eval_interval=5"]), data, run)
    assert max(losses(run)) == 5
    assert not [t for t in set(threading.enumerate()) - before if t.name == "loader" and t.is_alive()]
    if Path("/proc/self/fd").is_dir():  # Linux: this process's open files
        open_files = [os.readlink(fd) for fd in Path("/proc/self/fd").iterdir() if fd.is_symlink()]
        assert str(run / "metrics.jsonl") not in open_files
