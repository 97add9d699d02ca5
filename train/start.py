"""Where a run starts: a new run's config, or the checkpoint and config a resumed run continues with.

:func:`find_start` runs on rank 0 (through ``on_rank0``): it picks the checkpoint to continue from
(:func:`resume_point`: the newest intact one, its dataset and tokenizer fingerprints checked), then the
config: a new run's as asked for (from ``--init-from``'s weights when given), a resumed run's its own
(:func:`resumed_start`: changed only where MUTABLE_ON_RESUME allows, each change printed), its global
batch fixed for any number of processes.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

import shards
from train import checkpoint as ckpt
from train.config import MUTABLE_ON_RESUME, Config, ConfigError, ConfigRequest, resolve_batch, resume_changes
from train.init_from import InitWeights, load_init_weights
from train.model import ModelConfig
from train.process import TrainingError


def check_dirs(data_dir: Path, run_dir: Path) -> None:
    """The run directory must not be the dataset directory (the run writes config.json, tokenizer.json
    and checkpoints/ into it)."""
    if Path(run_dir).resolve() == Path(data_dir).resolve():
        raise ConfigError(f"--out {run_dir} is the dataset directory (--data {data_dir}); the run would write its "
                          f"config.json, tokenizer.json and checkpoints/ among the shards. Use another --out, "
                          f"e.g. runs/NAME")


def setup_warnings(cfg: Config, manifest: dict, max_steps: int, val_windows: int) -> list[str]:
    """What in a valid config and dataset makes a run do less than its user likely expects."""
    t, warnings = cfg.training, []
    if val_windows == 0:
        val_tokens = sum(s["tokens"] for s in shards.split_shards(manifest, "val"))
        why = ("the dataset has no val split" if val_tokens == 0 else
               f"its val split holds {val_tokens:,} tokens, no shard of it a whole window of model.seq_len + 1 = "
               f"{cfg.model.seq_len + 1}")
        warnings.append(f"nothing to validate on: {why}. The run will not evaluate, keep best weights or stop early; "
                        f"rebuild the dataset with a larger --val-fraction, or lower model.seq_len")
    if t.warmup_steps > max_steps:
        warnings.append(f"training.warmup_steps={t.warmup_steps} exceeds the run's {max_steps:,} steps: the learning "
                        f"rate never reaches its peak ({t.lr:g}). Lower training.warmup_steps")
    return warnings


class Start(NamedTuple):
    """Where a run starts: the checkpoint it continues from (None for a new run), the config it trains
    with (``Config.to_dict()``), the keys that config changes from the checkpoint's, and the weights the
    run started from (--init-from's description; {} for a run from random weights)."""
    checkpoint: Path | None
    config: dict
    changes: list[dict]
    started_from: dict


def find_start(request: Config | ConfigRequest, manifest: dict, data_dir: Path, run_dir: Path, data_fp: str,
               tok_fp: str, resume: bool, world_size: int, say,
               init_from: str | Path | None = None) -> tuple[Start, InitWeights | None]:
    """The checkpoint to continue from and the config to train with, and the weights a new run starts
    from (``init_from``); runs on rank 0 only.

    A new run trains with what ``request`` asks for, its global batch fixed for ``world_size`` processes
    (with ``init_from``, the weights' model config, which ``request``'s model keys must agree with). A
    resumed one with its checkpoint's config and global batch, changed only where ``request`` asks for a
    change that may be made mid-run (each printed); its accumulation follows from ``world_size``."""
    checkpoint = resume_point(data_dir, run_dir, data_fp, tok_fp, resume, say)
    if checkpoint is not None:
        return resumed_start(request, manifest, checkpoint, run_dir, world_size, say, init_from), None
    init = None
    if init_from is not None:
        init = load_init_weights(init_from)
        init.check_dataset(data_dir, manifest)
        base = Config()
        base.model = ModelConfig(**dataclasses.asdict(init.model_config))
        cfg = request.resolve(base) if isinstance(request, ConfigRequest) else Config.from_dict(request.to_dict())
    else:
        cfg = request.resolve() if isinstance(request, ConfigRequest) else Config.from_dict(request.to_dict())
    cfg.model.vocab_size = int(manifest["vocab_size"])
    cfg.validate()
    resolve_batch(cfg, world_size, new_run=True)
    if init is None:
        return Start(None, cfg.to_dict(), [], {}), None
    init.check_model(cfg.model)
    d = init.description
    what = (f"step {d['step']:,} of {d['checkpoint']}" if d["kind"] == "checkpoint" else
            f"{d['architecture']}, max |logit diff| {d['max_abs_logit_diff']:.1e}")
    say(f"init: weights from {init.source} ({d['kind']}: {what}); a fresh optimizer, schedule and data order")
    for note in init.notes:
        say(f"init: {note}")
    return Start(None, cfg.to_dict(), [], d), init


def resumed_start(request: Config | ConfigRequest, manifest: dict, checkpoint: Path, run_dir: Path,
                  world_size: int, say, init_from: str | Path | None) -> Start:
    """Where a run with a checkpoint goes on: its own config, changed only as MUTABLE_ON_RESUME allows."""
    saved = Config.from_dict(ckpt.read_config(checkpoint), f"{checkpoint / ckpt.CONFIG_NAME}")
    index = ckpt.read_index(checkpoint)
    started_from = ckpt.read_part(checkpoint, "init_from", index) if "init_from" in index["parts"] else {}
    if init_from is not None and Path(init_from).resolve() != Path(started_from.get("path", "")):
        where = f"from {started_from['path']}" if started_from else "from random weights"
        raise TrainingError(f"refusing --init-from {init_from}: {run_dir} holds a run (its checkpoint "
                            f"{checkpoint.name}) that started {where}; it continues from its checkpoint. Rerun "
                            f"without --init-from to continue it, or start the new run in another --out")
    cfg = request.resolve(saved) if isinstance(request, ConfigRequest) else Config.from_dict(request.to_dict())
    cfg.model.vocab_size = int(manifest["vocab_size"])
    cfg.validate()
    saved_world = int(ckpt.read_part(checkpoint, "process", index).get("world_size") or 1)
    if saved.training.global_batch_size == 0:  # saved before the global batch was recorded: what it trained with
        resolve_batch(saved, saved_world, new_run=True)
    if cfg.training.global_batch_size == 0:  # not asked for: the run's own
        cfg.training.global_batch_size = saved.training.global_batch_size
    changes = resume_changes(saved, cfg, str(run_dir))
    resolve_batch(cfg, world_size, new_run=False)
    for c in changes:
        say(f"resume: {c['key']} changes from {c['from']!r} to {c['to']!r} ({MUTABLE_ON_RESUME[c['key']]}); "
            f"recorded in the run")
    if world_size != saved_world:
        t = cfg.training
        say(f"resume: the run was trained by {saved_world} process(es), now {world_size}: each takes "
            f"{t.grad_accum_steps} micro-batch(es) of {t.batch_size} a step, so the global batch stays "
            f"{t.global_batch_size} sequences ({t.global_batch_size * cfg.model.seq_len:,} tokens) and the data order "
            f"is the same")
    return Start(checkpoint, cfg.to_dict(), changes, started_from)


def resume_point(data_dir: Path, run_dir: Path, data_fp: str, tok_fp: str, resume: bool, say) -> Path | None:
    """The checkpoint of ``run_dir`` to continue from, checked against this data; None for a new run.
    Falls back past a missing or damaged newest checkpoint to the newest intact one, saying so;
    refuses (CheckpointError) when checkpoints are there but none is usable. Runs on rank 0 only."""
    ckpt_dir, passed_over = ckpt.resume_checkpoint(run_dir)
    if ckpt_dir is None:
        if resume:
            say(f"--resume: no checkpoint in {run_dir}, starting from scratch")
        return None
    for path, problem in passed_over:
        note = f"checkpoint {path.name} passed over: {problem}"
        if path.is_dir() and path.name > ckpt_dir.name:  # newer: renamed, so that saving its step again
            note += f"; moved to {ckpt.set_aside(path)}"  # writes a fresh one instead of keeping it
        say(note)
    if passed_over:
        ckpt.point_latest(ckpt_dir)
        say(f"falling back to {ckpt_dir.name}, the newest intact checkpoint; the steps after it are trained again")
    if ckpt.recorded_checksums(ckpt_dir) is None:
        say(f"note: {ckpt_dir} has no {ckpt.CHECKSUMS_NAME} (written before checkpoints recorded checksums); "
            f"resuming from it unverified")
    fingerprints = ckpt.read_part(ckpt_dir, "fingerprints")
    for what, saved, now in (("dataset", fingerprints["dataset_fingerprint"], data_fp),
                             ("tokenizer", fingerprints["tokenizer_fingerprint"], tok_fp)):
        if saved != now:
            raise TrainingError(
                f"refusing to resume {run_dir}: its checkpoint {ckpt_dir.name} was trained on {what} "
                f"fingerprint {saved}, but {data_dir} has {what} fingerprint {now}. Use the original "
                f"dataset, or start a new run with a different --out")
    return ckpt_dir
