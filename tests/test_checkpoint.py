"""Checkpoints: one mapping of named parts, written in the background, atomic under kill -9, retention,
lookup, compiled/plain state dict round trip, format 1 still loading."""
import hashlib
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from safetensors.torch import load_file

from train import checkpoint
from train.checkpoint import (
    CheckpointError,
    clean_state_dict,
    find_checkpoint,
    load_model,
    load_model_state,
    unwrap,
)
from train.config import Config
from train.model import GPT, ModelConfig

CFG = ModelConfig(vocab_size=50, seq_len=8, n_layers=1, d_model=16, n_heads=2)


def parts(model, step=1, optimizer=None):
    return {"model": checkpoint.Weights(model), "optimizer": optimizer or torch.optim.AdamW(model.parameters()),
            "rng": checkpoint.RNG(), "train_state": checkpoint.Record({"step": step}),
            "config": checkpoint.Record(Config(model=model.cfg).to_dict())}


def save(run, step, model, is_best=False, keep=2):
    snap = checkpoint.snapshot(parts(model, step), True, checkpoint.HostCopies())
    return checkpoint.write(run, step, snap, keep, ("latest", "best") if is_best else ("latest",))


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))

def test_keeps_last_k_and_best_and_finds_them(tmp_path):
    model = GPT(CFG)
    with pytest.raises(CheckpointError, match="has no complete checkpoint"):
        find_checkpoint(tmp_path)
    for step in range(1, 6):
        save(tmp_path, step, model, is_best=step == 2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["best", "latest", "step_00000002", "step_00000004", "step_00000005"]
    assert find_checkpoint(tmp_path).name == "step_00000005"
    assert find_checkpoint(tmp_path, "best").name == "step_00000002"
    assert find_checkpoint(tmp_path / "checkpoints" / "step_00000004").name == "step_00000004"
    shutil.copyfile(__file__, tmp_path / "tokenizer.json")  # load_model only needs the path to exist
    loaded, cfg, tok = load_model(tmp_path, which="latest")
    assert cfg == CFG and tok == tmp_path / "tokenizer.json"
    assert same_weights(loaded, model)


def test_compiled_state_dict_loads_into_plain_model_and_back(tmp_path):
    torch.manual_seed(0)
    plain = GPT(CFG)
    compiled = torch.compile(GPT(CFG))  # a real OptimizedModule; it is never run, so nothing compiles
    keys = list(compiled.state_dict())
    assert keys and all(k.startswith("_orig_mod.") for k in keys)
    load_model_state(plain, compiled.state_dict())
    assert same_weights(plain, unwrap(compiled))
    torch.manual_seed(1)
    other = GPT(CFG)
    load_model_state(compiled, other.state_dict())
    assert same_weights(other, unwrap(compiled))
    path = save(tmp_path, 1, compiled)
    assert set(load_file(str(path / "model.safetensors"))) == set(other.state_dict())
    assert clean_state_dict({"module._orig_mod.a": 1}) == {"a": 1}


SAVER = textwrap.dedent("""
    import sys, torch
    from train import checkpoint as ckpt
    from train.config import Config
    from train.model import GPT, ModelConfig
    cfg = ModelConfig(vocab_size=4096, seq_len=64, n_layers=4, d_model=384, n_heads=4)  # ~9M params, 36 MB
    model = GPT(cfg)
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    opt.step()  # the optimizer has state to save
    writer, copies = ckpt.Writer(), ckpt.HostCopies()
    parts = {"model": ckpt.Weights(model), "optimizer": opt, "rng": ckpt.RNG(),
             "config": ckpt.Record(Config(model=cfg).to_dict())}
    for step in range(1, 10_000):
        with torch.no_grad():
            model.tok_emb.weight[0, 0] = step  # each checkpoint identifies itself
        writer.wait()  # as the trainer does: one write in flight
        print(step - 1, flush=True)
        snap = ckpt.snapshot(parts, True, copies)
        writer.submit(lambda snap=snap, step=step: ckpt.write(sys.argv[1], step, snap, 2))
        with torch.no_grad():  # training goes on while the writer writes: the snapshot must not see it
            model.tok_emb.weight[0, 0] = -1
""")


@pytest.mark.slow
def test_kill_during_save_leaves_the_previous_checkpoint_loadable(tmp_path):
    shutil.copyfile(__file__, tmp_path / "tokenizer.json")
    for delay in (0.05, 0.13, 0.29):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
        proc.stdout.readline()  # a first checkpoint is complete
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        path = find_checkpoint(tmp_path)
        model, _, _ = load_model(path)
        assert model.tok_emb.weight[0, 0].item() == int(path.name[len("step_"):])
        checkpoint.load(path, {"optimizer": torch.optim.AdamW(model.parameters()), "rng": checkpoint.RNG()})


def test_every_file_is_checksummed_and_checked_on_load(tmp_path):
    model = GPT(CFG)
    ckpt = save(tmp_path, 1, model)
    shutil.copyfile(__file__, tmp_path / "tokenizer.json")
    recorded = json.loads((ckpt / "checksums.json").read_text())["sha256"]
    assert sorted(recorded) == ["config.json", "model.safetensors", "optimizer.pt", "rng.pt", "state.json",
                                "train_state.json"]
    assert all(recorded[name] == hashlib.sha256((ckpt / name).read_bytes()).hexdigest() for name in recorded)
    load_model(ckpt)
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10  # one bit of the last tensor's data: safetensors alone would load it
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{weights} does not match the sha256 recorded"):
        load_model(ckpt)


def test_a_damaged_header_without_checksums_is_named_without_weights_only_advice(tmp_path):
    model = GPT(CFG)
    ckpt = save(tmp_path, 1, model)
    shutil.copyfile(__file__, tmp_path / "tokenizer.json")
    (ckpt / "checksums.json").unlink()  # as written before checksums were recorded
    with pytest.warns(UserWarning, match="loading it unverified"):
        load_model(ckpt)
    weights = ckpt / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8  # the JSON header's first bytes
    weights.write_bytes(bytes(data))
    with pytest.warns(UserWarning), pytest.raises(CheckpointError) as e:
        load_model(ckpt)
    assert str(e.value).startswith(f"{weights} cannot be read") and "weights_only" not in str(e.value)
    with open(ckpt / "rng.pt", "r+b") as f:
        f.truncate(100)
    with pytest.raises(CheckpointError) as e:
        checkpoint.load(ckpt, {"rng": checkpoint.RNG()})
    assert "cannot be read" in str(e.value) and "weights_only" not in str(e.value)
