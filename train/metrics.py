"""A run's log: ``RUN/metrics.jsonl`` (one JSON object per line), and TensorBoard and W&B when enabled.

Records: ``train`` (every log interval: loss, lr, grad norm, tokens, tokens/s of the steps and of the
wall clock, MFU on GPUs, peak memory), ``eval`` (val loss, bits per byte, perplexity, task scores,
evaluation time), ``samples`` (the prompts' completions), and, when a process starts, ``run``
(device, processes, precision, parameters, data, where its weights came from) and ``config`` (the
keys a resume changed). A resumed run keeps exactly one record per (type, step) (:func:`keep_metrics`).
"""
from __future__ import annotations

import json
import secrets
from pathlib import Path

import shards
from train.config import Config, ConfigError
from train.process import TrainingError

METRICS_NAME = "metrics.jsonl"
WANDB_ID_NAME = "wandb_run_id"  # the W&B run this directory logs to (logging.wandb=true)


START_RECORDS = ("run", "config")  # metrics.jsonl records a process writes when it starts, at its first step


def keep_metrics(path: Path, last_step: int) -> list[str]:
    """Rewrite ``path`` (metrics.jsonl) to one record per (type, step) for the steps up to ``last_step``,
    the checkpoint a run continues from (0 for a new run): what a killed run logged after it is trained
    and logged again. Lines that do not parse (a write cut short by a crash) are dropped; of repeated
    records the last is kept. Returns notes on the lines dropped as unreadable."""
    if not path.exists():
        return []
    kept: dict[tuple[str, int], str] = {}
    unreadable = []
    for n, line in enumerate(path.read_bytes().decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = (str(record["type"]), int(record["step"]))
        except (ValueError, KeyError, TypeError):
            unreadable.append(n)
            continue
        # a process's own records (run, config) at the step it starts from are written again by the next one
        if key[1] < last_step or (key[1] == last_step and key[0] not in START_RECORDS):
            kept.pop(key, None)  # a repeat replaces the earlier record and takes its place in the order
            kept[key] = line
    shards.atomic_write_bytes(path, "".join(line + "\n" for line in kept.values()).encode("utf-8"))
    if not unreadable:
        return []
    return [f"{path}: dropped {len(unreadable)} line(s) that are not JSON records (line "
            f"{', '.join(map(str, unreadable[:5]))}{', ...' if len(unreadable) > 5 else ''}); a write cut short "
            f"when the previous run stopped leaves one"]


class Metrics:
    """``RUN/metrics.jsonl`` (one JSON object per line), plus TensorBoard and W&B when enabled.

    Opened at ``start_step`` (the checkpoint resumed from, 0 for a new run): the file then holds exactly
    one record per step logged up to it (see :func:`keep_metrics`)."""

    def __init__(self, run_dir: Path, cfg: Config, start_step: int, say=print):
        self.path = run_dir / METRICS_NAME
        for note in keep_metrics(self.path, start_step):
            say(note)
        self.file = open(self.path, "a", encoding="utf-8")
        self.failed = False
        self.tb = self.wandb = None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))
        if cfg.logging.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb=true but wandb is not installed; `pip install wandb` "
                                  "or set logging.wandb=false") from None
            # one W&B run per run directory: a resumed run goes on logging into the same one
            id_file = run_dir / WANDB_ID_NAME
            if not id_file.exists():
                shards.atomic_write_bytes(id_file, (secrets.token_hex(6) + "\n").encode())
            self.wandb = wandb.init(project=cfg.logging.wandb_project, name=cfg.logging.run_name or run_dir.name,
                                    id=id_file.read_text().strip(), resume="allow", dir=str(run_dir),
                                    config=cfg.to_dict())

    def log(self, record: dict) -> None:
        try:
            self.file.write(json.dumps(record) + "\n")
            self.file.flush()
        except OSError as e:
            self.failed = True
            raise TrainingError(f"cannot append to {self.path}: {e.strerror or e}. Free space on that filesystem "
                                f"(or fix its permissions), then rerun the same command: it resumes from the last "
                                f"checkpoint") from None
        if self.tb is None and self.wandb is None:
            return
        kind, step = record["type"], record["step"]
        if kind == "samples":
            table = "\n\n".join(f"**{x['prompt']}**{x['completion']}" for x in record["samples"])
            if self.tb is not None:
                self.tb.add_text("samples", table, step)
            if self.wandb is not None:
                import wandb
                self.wandb.log({"samples": wandb.Table(columns=["prompt", "completion"], data=[
                    [x["prompt"], x["completion"]] for x in record["samples"]])}, step=step)
            return
        if kind not in ("train", "eval"):
            return
        numbers = dict(flat_numbers(record, kind))
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log(numbers, step=step)

    def close(self) -> None:
        try:
            self.file.close()
        except OSError:
            if not self.failed:  # a failed log() already said why; its unwritten line is lost, as reported
                raise
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def flat_numbers(record: dict, prefix: str):
    """("prefix/key", number) for every number in ``record``, nested dicts (task scores) as "prefix/tasks/name/acc"."""
    for key, value in record.items():
        if key in ("type", "step"):
            continue
        if isinstance(value, dict):
            yield from flat_numbers(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}/{key}", value
