"""The training loop: ``train(cfg, data_dir, run_dir)``.

One process, or one per accelerator under ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU). Each
optimizer step takes ``grad_accum_steps`` micro-batches of ``batch_size`` windows per process.
Logged losses are means over the micro-batches of all processes, so 2 processes x accumulation k
log the same losses as 1 process x accumulation 2k.

The loop never waits on the device for logging between log points: per-step losses and gradient
norms stay on the device and are read in one transfer at each log, evaluation or checkpoint, which
is also where a non-finite loss is detected (naming its exact step) before anything is saved.
SIGINT/SIGTERM stop a single process after the current step; under DDP the processes agree on a stop
at those same points (the flags ride on the losses' all-reduce), so the wait is at most
``log_interval`` steps and a step costs no host synchronisation.

Reading top to bottom: :func:`train` wires the parts together; :func:`setup` builds them (a
:class:`Run`); :func:`restore` continues from a checkpoint (a :class:`TrainState`); :func:`fit` is the
loop, with :func:`train_step`, :func:`due_at` (log / evaluate / checkpoint now?), :func:`read_back`,
:func:`log_train`, :func:`run_eval` and :func:`save` as its named steps.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

import shards
from train import checkpoint as ckpt
from train import memory
from train.config import Config, ConfigError, TrainingConfig
from train.loader import Loader, ValWindows
from train.model import GPT, peak_flops
from train.optim import build_optimizer, set_lr

METRICS_NAME = "metrics.jsonl"
WANDB_ID_NAME = "wandb_run_id"  # the W&B run this directory logs to (logging.wandb=true)
FINISHED = "finished"


class TrainingError(shards.PipelineError):
    """The run cannot go on (non-finite loss, mismatched resume); the message says what to do."""


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> tuple[Dist, bool]:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK in the environment).

    Returns the ranks and whether this call created the group (and so should destroy it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), False
    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    if dist.is_initialized():
        return d, False
    backend = "nccl" if device_name == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(d.local_rank)
    dist.init_process_group(backend=backend)
    return d, True


def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("training.device=cuda but no CUDA GPU is visible; use training.device=cpu")
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX-512 BF16), from Linux's /proc/cpuinfo."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(name: str, device: torch.device) -> str:
    """``auto``: bf16 on CUDA GPUs that support it, else fp16 (with GradScaler); on CPU bf16 where it is
    native (AMX / AVX-512 BF16: 1.6x faster than fp32 for the demo model here, ~8x on a bare matmul), else fp32."""
    if name != "auto":
        if device.type == "cpu" and name == "fp16":
            raise ConfigError("training.precision=fp16 is for CUDA; on CPU use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "fp32"


def steps_for(cfg: Config, world_size: int) -> tuple[int, int]:
    """(tokens per optimizer step, number of optimizer steps)."""
    t = cfg.training
    per_step = t.batch_size * t.grad_accum_steps * world_size * cfg.model.seq_len
    steps = t.max_steps if t.max_steps > 0 else math.ceil(t.token_budget / per_step)
    return per_step, steps


@torch.no_grad()
def evaluate(model, val: ValWindows, batch_size: int, device, autocast, d: Dist) -> float:
    """Mean loss over the fixed validation windows (all ranks together)."""
    model.eval()
    total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, windows)
    for x, y in val.batches(batch_size, device, d.rank, d.world_size):
        with autocast:
            _, loss = model(x, y)
        total += torch.stack([loss.double() * len(x), torch.tensor(len(x), dtype=torch.float64, device=device)])
    if d.world_size > 1:
        dist.all_reduce(total)
    model.train()
    s, n = total.tolist()
    return s / n


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop then checkpoints and exits. One process reads it after every step;
    under DDP the processes agree on it at the next log, evaluation or checkpoint step."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


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
        if key[1] <= last_step:
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
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(f"{record['type']}/{k}", v, record["step"])
        if self.wandb is not None:
            self.wandb.log({f"{record['type']}/{k}": v for k, v in numbers.items()}, step=record["step"])

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


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


# ---------------------------------------------------------------------------------------------------
# the state the loop advances, and the parts it works with

@dataclass
class TrainState:
    """What the loop advances and a checkpoint's ``state.json`` restores (model, optimizer, scaler and
    loader keep their own state dicts)."""
    step: int = 0                          # optimizer steps done
    tokens: int = 0                        # tokens trained on, all processes together
    best_val_loss: float = math.inf
    evals_since_best: int = 0
    last_val_loss: float | None = None
    elapsed_before: float = 0.0            # seconds trained by earlier processes of this run
    started: float = field(default_factory=time.time)  # when this process started training (time.time())

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "best_val_loss": self.best_val_loss,
                "evals_since_best": self.evals_since_best, "last_val_loss": self.last_val_loss,
                "elapsed_s": self.elapsed_s}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.tokens = state["step"], state["tokens"]
        self.best_val_loss, self.evals_since_best = state["best_val_loss"], state["evals_since_best"]
        self.last_val_loss = state.get("last_val_loss")
        self.elapsed_before, self.started = state["elapsed_s"], time.time()


@dataclass
class Run:
    """The parts of one training run, built once by :func:`setup`; the loop's helpers read them."""
    cfg: Config
    d: Dist
    say: Callable[..., None]          # print on rank 0, nothing elsewhere
    data_dir: Path
    run_dir: Path
    manifest: dict
    data_fp: str                      # dataset and tokenizer fingerprints, checked on resume
    tok_fp: str
    device: torch.device
    precision: str
    tokens_per_step: int
    max_steps: int
    resume_from: Path | None          # the checkpoint this run continues from
    model: GPT                        # the plain module: parameters, state dicts
    train_model: torch.nn.Module      # what the loop calls: model inside DDP and/or torch.compile
    ddp: torch.nn.Module              # model inside DDP (its no_sync()), or model itself
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    loader: Loader
    val: ValWindows
    autocast: contextlib.AbstractContextManager
    flops_per_token: float
    peak: float | None                # dense peak FLOP/s of the accelerator, None when unknown
    last_checkpoint: str | None = None  # the newest complete checkpoint, named when the run stops on an error

    @property
    def n_params(self) -> int:
        return self.model.num_params()


class Due(NamedTuple):
    """What the loop does after a step."""
    log: bool
    eval: bool
    checkpoint: bool


def due_at(step: int, max_steps: int, t: TrainingConfig) -> Due:
    """Log, evaluate, checkpoint after ``step``? Each at its interval, and all three after the last step."""
    last = step == max_steps
    return Due(log=step % t.log_interval == 0 or last,
               eval=(t.eval_interval > 0 and step % t.eval_interval == 0) or last,
               checkpoint=step % t.checkpoint_interval == 0 or last)


# ---------------------------------------------------------------------------------------------------
# train(): wiring

def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          dry_run: bool = False) -> dict:
    """Train per ``cfg`` on the dataset in ``data_dir``, writing ``run_dir``; returns the summary dict.

    Continues from ``run_dir``'s newest complete checkpoint when there is one (``resume`` only makes
    its absence worth a note).
    """
    with contextlib.ExitStack() as cleanup:  # on every exit: the loader thread, metrics files, process group
        run = setup(cfg, Path(data_dir), Path(run_dir), resume, cleanup)
        if dry_run:
            return dry_run_report(run)
        state = restore(run)
        metrics = cleanup.enter_context(contextlib.closing(open_run_dir(run, state))) if run.d.main else None
        return fit(run, state, metrics)


def check_dirs(data_dir: Path, run_dir: Path) -> None:
    """The run directory must not be the dataset directory (the run writes config.json, tokenizer.json
    and checkpoints/ into it)."""
    if Path(run_dir).resolve() == Path(data_dir).resolve():
        raise ConfigError(f"--out {run_dir} is the dataset directory (--data {data_dir}); the run would write its "
                          f"config.json, tokenizer.json and checkpoints/ among the shards. Use another --out, "
                          f"e.g. runs/NAME")


def setup(cfg: Config, data_dir: Path, run_dir: Path, resume: bool, cleanup: contextlib.ExitStack) -> Run:
    """Join the process group, open the data, find the checkpoint to continue from, build the model."""
    cfg.validate()
    check_dirs(data_dir, run_dir)
    t = cfg.training
    d, owns_group = setup_distributed("cuda" if t.device == "cuda" or
                                      (t.device == "auto" and torch.cuda.is_available()) else "cpu")
    if owns_group:
        cleanup.callback(dist.destroy_process_group)
    say = print if d.main else (lambda *a, **k: None)
    device = resolve_device(t.device, d)
    precision = resolve_precision(t.precision, device)

    manifest = shards.load_manifest(data_dir)
    cfg.model.vocab_size = int(manifest["vocab_size"])
    data_fp, tok_fp = shards.dataset_fingerprint(manifest), manifest["tokenizer_sha256"]
    tokens_per_step, max_steps = steps_for(cfg, d.world_size)
    resume_from = on_rank0(d, lambda: resume_point(cfg, data_dir, run_dir, data_fp, tok_fp, resume, say))

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(cfg.model).to(device)
    loader = Loader(data_dir, manifest, cfg.model.seq_len, t.batch_size, t.seed, device, d.rank, d.world_size,
                    cfg.data.prefetch)
    cleanup.callback(loader.close)
    val = ValWindows(data_dir, manifest, cfg.model.seq_len, t.eval_windows)

    train_model = ddp = model
    if d.world_size > 1:
        train_model = ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    if t.compile:
        train_model = torch.compile(train_model)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    peak = peak_flops(device, amp_dtype or torch.float32)
    if device.type == "cuda" and peak is None:
        say(f"MFU not shown: unknown GPU {torch.cuda.get_device_name(device)}; add its dense peak FLOP/s "
            f"(bf16 and TF32) to PEAK_FLOPS in train/model.py")
    return Run(cfg=cfg, d=d, say=say, data_dir=data_dir, run_dir=run_dir, manifest=manifest, data_fp=data_fp,
               tok_fp=tok_fp, device=device, precision=precision, tokens_per_step=tokens_per_step,
               max_steps=max_steps, resume_from=resume_from, model=model, train_model=train_model, ddp=ddp,
               optimizer=build_optimizer(model, cfg, device),
               scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None, loader=loader, val=val,
               autocast=torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext(),
               flops_per_token=model.estimate_flops_per_token(), peak=peak,
               last_checkpoint=str(resume_from) if resume_from else None)


def resume_point(cfg: Config, data_dir: Path, run_dir: Path, data_fp: str, tok_fp: str, resume: bool,
                 say) -> Path | None:
    """The checkpoint of ``run_dir`` to continue from, checked against this data and config; None for a
    new run. Falls back past a missing or damaged newest checkpoint to the newest intact one, saying so;
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
    state = ckpt.read_state(ckpt_dir)
    for what, saved, now in (("dataset", state["dataset_fingerprint"], data_fp),
                             ("tokenizer", state["tokenizer_fingerprint"], tok_fp)):
        if saved != now:
            raise TrainingError(
                f"refusing to resume {run_dir}: its checkpoint {ckpt_dir.name} was trained on {what} "
                f"fingerprint {saved}, but {data_dir} has {what} fingerprint {now}. Use the original "
                f"dataset, or start a new run with a different --out")
    saved_model = ckpt.read_config(ckpt_dir)["model"]
    diff = {k: (v, getattr(cfg.model, k)) for k, v in saved_model.items() if getattr(cfg.model, k) != v}
    if diff:
        raise TrainingError(f"refusing to resume {run_dir}: the model config differs from its checkpoint "
                            f"(key: (checkpoint, now)) {diff}; use the same --config/--set, or a new --out")
    return ckpt_dir


def on_rank0(d: Dist, fn: Callable[[], object]):
    """``fn()`` on rank 0 alone (it reads or writes the run directory), its result handed to every rank.
    An error it raises is raised on every rank: one left waiting in a collective would hang."""
    result = error = None
    if d.main:
        try:
            result = fn()
        except Exception as e:  # re-raised below, on this rank as it is
            error = e
    if d.world_size > 1:
        box = [result, None if error is None else (error if isinstance(error, shards.PipelineError) else
                                                    TrainingError(f"rank 0 failed: {type(error).__name__}: {error}"))]
        dist.broadcast_object_list(box, src=0)
        if not d.main:
            result, error = box
    if error is not None:
        raise error
    return result


def dry_run_report(run: Run) -> dict:
    """Print what a run would do (config, size, steps, memory, data) and train nothing."""
    cfg, t, say = run.cfg, run.cfg.training, run.say
    n_windows = run.loader.windows.n_windows
    say(json.dumps(cfg.to_dict(), indent=2))
    say(f"parameters: {run.n_params:,} (plus {cfg.model.seq_len * cfg.model.d_model if not cfg.model.rope else 0:,} "
        f"position embedding)")
    say(f"device {run.device}, precision {run.precision}, {run.d.world_size} process(es)")
    say(f"tokens per step: {run.tokens_per_step:,} = batch {t.batch_size} x accumulation {t.grad_accum_steps} x "
        f"{run.d.world_size} process(es) x seq_len {cfg.model.seq_len}")
    budget = f" (token budget {t.token_budget:,})" if t.max_steps <= 0 else ""
    say(f"steps: {run.max_steps:,}{budget} = {run.max_steps * run.tokens_per_step:,} tokens, "
        f"{run.max_steps * run.tokens_per_step / max(1, n_windows * cfg.model.seq_len):.2f} epochs")
    for line in memory.estimate(cfg, run.precision, run.device.type, run.d.world_size).lines(t.compile):
        say(line)
    say(f"data: {run.data_dir}: {n_windows:,} train windows, {len(run.val)} val windows, fingerprint "
        f"{run.data_fp[:16]}; {'would resume from ' + str(run.resume_from) if run.resume_from else 'new run'}")
    return {"dry_run": True, "params": run.n_params, "max_steps": run.max_steps, "tokens_per_step": run.tokens_per_step}


def restore(run: Run) -> TrainState:
    """A fresh state, or the one of ``run.resume_from`` with model, optimizer, scaler, loader and RNGs."""
    state = TrainState()
    if run.resume_from is None:
        return state
    saved, rng = ckpt.load_training_state(run.resume_from, run.model, run.optimizer, run.scaler, run.d.rank)
    state.load_state_dict(saved)
    run.loader.load_state_dict(saved["loader"])
    if rng:
        ckpt.set_rng_state(rng)
    run.say(f"resuming from {run.resume_from} (step {state.step:,}, {state.tokens:,} tokens)")
    return state


def open_run_dir(run: Run, state: TrainState) -> Metrics:
    """Write the run's config and tokenizer (rank 0) and open its metrics at ``state.step``."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    (run.run_dir / ckpt.CONFIG_NAME).write_text(json.dumps(run.cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(run.data_dir / shards.TOKENIZER_NAME, run.run_dir / shards.TOKENIZER_NAME)
    return Metrics(run.run_dir, run.cfg, state.step, run.say)


# ---------------------------------------------------------------------------------------------------
# the loop

def fit(run: Run, state: TrainState, metrics: Metrics | None) -> dict:
    """Train from ``state.step`` to ``run.max_steps``, or until early stopping or SIGINT/SIGTERM."""
    t, d = run.cfg.training, run.d
    run.say(f"training {run.n_params:,} parameters on {run.device} ({run.precision}, {d.world_size} process(es)) "
            f"for {run.max_steps:,} steps of {run.tokens_per_step:,} tokens; run dir {run.run_dir}")
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, loss, grad norm) not yet read back
    meter = Throughput(state)
    last_loss, stop_reason = None, FINISHED
    with StopFlag() as stop:
        while state.step < run.max_steps:
            lr = set_lr(run.optimizer, state.step, t, run.max_steps)  # every group's, from its own peak
            loss, grad_norm = train_step(run)
            state.step += 1
            state.tokens += run.tokens_per_step
            pending.append((state.step, loss, grad_norm))

            due = due_at(state.step, run.max_steps, t)
            # one process reads its stop flag every step for free; several agree on theirs only where
            # they synchronise anyway, so a step costs no host sync
            if not (any(due) or (d.world_size == 1 and stop.signal is not None)):
                continue
            losses, grad_norm, signalled = read_back(run, pending, stop)  # stops on a non-finite loss
            pending.clear()
            last_loss = sum(losses) / len(losses)  # the mean since the last read, as logged
            now = time.time()
            if due.log:
                log_train(run, metrics, state, meter, now, lr, last_loss, grad_norm)
            is_best = False
            if due.eval and len(run.val):
                is_best = run_eval(run, metrics, state, lr, last_loss)
                if t.early_stop_patience and state.evals_since_best >= t.early_stop_patience:
                    stop_reason = f"early stop: no better val loss in {state.evals_since_best} evaluations"
            if signalled:
                stop_reason = f"stopped by signal {signalled}; continue with --resume"
            if due.checkpoint or is_best or stop_reason != FINISHED:
                save(run, state, is_best)
            meter.exclude(time.time() - now)  # evaluation and checkpoint time is not training throughput
            if stop_reason != FINISHED:
                break
    return summarize(run, state, last_loss, stop_reason)


def train_step(run: Run) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step (its groups' lr already set) over ``grad_accum_steps`` micro-batches; returns
    (mean loss, grad norm before clipping), both still on the device."""
    t, optimizer, scaler = run.cfg.training, run.optimizer, run.scaler
    step_loss = torch.zeros((), device=run.device)
    for micro in range(t.grad_accum_steps):
        x, y = run.loader.next_batch()
        sync = micro == t.grad_accum_steps - 1 or run.d.world_size == 1  # DDP all-reduces on the last one
        with (contextlib.nullcontext() if sync else run.ddp.no_sync()), run.autocast:
            _, loss = run.train_model(x, y)
            loss = loss / t.grad_accum_steps
        (scaler.scale(loss) if scaler else loss).backward()
        step_loss += loss.detach()
    if scaler:
        scaler.unscale_(optimizer)
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
    if scaler:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return step_loss, norm


def read_back(run: Run, pending: list[tuple[int, torch.Tensor, torch.Tensor]],
              stop: StopFlag) -> tuple[list[float], float, int | None]:
    """The pending steps' losses (means over the processes), the last step's grad norm, and the signal
    any process has received (None if none). Raises TrainingError at the first non-finite loss, naming its step.

    Under DDP one all-reduce carries the losses and the signals: each process writes its signal number
    (0 for none) into its own slot, so the sum holds every process's."""
    values = torch.stack([torch.stack([lo, nm.float()]) for _, lo, nm in pending]).float()  # (n, 2)
    received = stop.signal
    if run.d.world_size > 1:
        signals = torch.zeros(run.d.world_size, device=values.device)
        signals[run.d.rank] = stop.signal or 0
        summed = torch.cat([values[:, 0], signals])  # (n + world_size,)
        dist.all_reduce(summed)
        values[:, 0] = summed[:len(pending)] / run.d.world_size
        received = int(summed[len(pending):].max().item()) or None
    rows = values.tolist()
    for (step, _, _), (loss, _) in zip(pending, rows, strict=True):
        if not math.isfinite(loss):
            raise TrainingError(
                f"loss is {loss} at step {step}; stopping. Last good checkpoint: {run.last_checkpoint or 'none'}. "
                f"Lower training.lr, raise training.warmup_steps or use training.precision=fp32/bf16, "
                f"then resume from that checkpoint (or start a new run)")
    return [loss for loss, _ in rows], rows[-1][1], received


class Throughput:
    """Tokens/s and the ETA between two log points, leaving out evaluation and checkpoint time."""

    def __init__(self, state: TrainState):
        state.started = self.since = time.time()
        self.tokens, self.step = state.tokens, state.step

    def read(self, state: TrainState, max_steps: int, now: float) -> tuple[float, float]:
        """(tokens/s, seconds left) since the last read; the next read counts from ``now``."""
        tok_s = (state.tokens - self.tokens) / max(now - self.since, 1e-9)
        eta = (max_steps - state.step) * (now - self.since) / max(1, state.step - self.step)
        self.since, self.tokens, self.step = now, state.tokens, state.step
        return tok_s, eta

    def exclude(self, seconds: float) -> None:
        self.since += seconds


def log_train(run: Run, metrics: Metrics | None, state: TrainState, meter: Throughput, now: float, lr: float,
              loss: float, grad_norm: float) -> None:
    tok_s, eta = meter.read(state, run.max_steps, now)
    record = {"type": "train", "step": state.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
              "tokens": state.tokens, "tokens_per_s": tok_s, "elapsed_s": state.elapsed_before + now - state.started}
    line = (f"step {state.step:>7,}/{run.max_steps:,} | loss {loss:.4f} | lr {lr:.2e} | "
            f"grad norm {grad_norm:.3f} | {tok_s:,.0f} tok/s | ETA {_fmt_time(eta)}")
    if run.peak:
        record["mfu"] = run.flops_per_token * tok_s / run.d.world_size / run.peak
        line += f" | MFU {100 * record['mfu']:.1f}%"
    run.say(line, flush=True)
    if metrics:
        metrics.log(record)


def run_eval(run: Run, metrics: Metrics | None, state: TrainState, lr: float, loss: float) -> bool:
    """Evaluate on the val windows, update the best val loss and log; returns whether this one is the best."""
    val_loss = evaluate(run.train_model, run.val, run.cfg.training.batch_size, run.device, run.autocast, run.d)
    is_best = val_loss < state.best_val_loss
    state.last_val_loss = val_loss
    state.best_val_loss, state.evals_since_best = ((val_loss, 0) if is_best else
                                                   (state.best_val_loss, state.evals_since_best + 1))
    ppl = math.exp(min(val_loss, 50))
    run.say(f"step {state.step:>7,} | val loss {val_loss:.4f} | ppl {ppl:.2f}{' (best)' if is_best else ''}",
            flush=True)
    if metrics:
        metrics.log({"type": "eval", "step": state.step, "loss": loss, "lr": lr, "tokens": state.tokens,
                     "val_loss": val_loss, "val_ppl": ppl, "best_val_loss": state.best_val_loss})
    return is_best


def save(run: Run, state: TrainState, is_best: bool) -> None:
    """Write a checkpoint of the model, optimizer, loader, RNGs (every rank's) and ``state`` (rank 0)."""
    d = run.d
    rngs = [ckpt.rng_state()]
    if d.world_size > 1:
        rngs = [None] * d.world_size
        dist.all_gather_object(rngs, ckpt.rng_state())

    def write() -> str:
        saved = {**state.state_dict(), "loader": run.loader.state_dict(), "dataset_fingerprint": run.data_fp,
                 "tokenizer_fingerprint": run.tok_fp, "eot_id": run.manifest["eot_id"], "precision": run.precision,
                 "world_size": d.world_size}
        return str(ckpt.save_checkpoint(run.run_dir, state.step, run.model, run.optimizer, run.scaler, saved,
                                        run.cfg.to_dict(), rngs, run.cfg.training.keep_checkpoints, is_best))
    # no rank runs ahead of the checkpoint, and all of them learn where it is (or why it failed)
    run.last_checkpoint = on_rank0(d, write)


def summarize(run: Run, state: TrainState, last_loss: float | None, stop_reason: str) -> dict:
    """Print and return how the run ended."""
    elapsed = state.elapsed_s
    best = state.best_val_loss if math.isfinite(state.best_val_loss) else None
    summary = {"steps": state.step, "tokens": state.tokens, "final_loss": last_loss,
               "final_val_loss": state.last_val_loss, "best_val_loss": best, "elapsed_s": elapsed,
               "checkpoint": run.last_checkpoint, "stop_reason": stop_reason}

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    run.say(f"\n{stop_reason} after {state.step:,} steps, {state.tokens:,} tokens in {_fmt_time(elapsed)}")
    run.say(f"final train loss {fmt(last_loss)}, val loss {fmt(state.last_val_loss)}, best val loss {fmt(best)}")
    run.say(f"checkpoints: {run.run_dir / ckpt.CHECKPOINT_DIR} (latest {run.last_checkpoint})")
    return summary
