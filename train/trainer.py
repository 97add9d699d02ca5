"""The training loop: ``train(cfg, data_dir, run_dir)``.

One process, or one per accelerator under ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU). Each
optimizer step takes ``training.global_batch_size`` windows, fixed when the run starts: each process
takes ``grad_accum_steps`` micro-batches of ``batch_size``, the accumulation following from the number
of processes. Logged losses are means over the micro-batches of all processes, so 2 processes x
accumulation k log the same losses as 1 process x accumulation 2k, and a run resumed on another
number of processes goes on as it would have.

The loop never waits on the device for logging between log points: per-step losses and gradient
norms stay on the device and are read in one transfer at each log, evaluation or checkpoint, which
is also where a non-finite loss is detected (naming its exact step) before anything is saved.
SIGINT/SIGTERM stop a single process after the current step; under DDP the processes agree on a stop
at those same points (the flags ride on the losses' all-reduce), so the wait is at most
``log_interval`` steps and a step costs no host synchronisation.

Reading top to bottom: :func:`train` wires the parts together; :func:`setup` builds them (a
:class:`Run`); :func:`restore` continues from a checkpoint (a :class:`TrainState`); :func:`fit` is the
loop, with :func:`train_step`, :func:`due_at` (log / evaluate / checkpoint now?), :func:`read_back`,
:func:`log_train`, :func:`run_eval` and :func:`save` as its named steps. Beside it: the process (ranks,
device, precision, console, signals) in train/process.py; where a run starts (a new run's config, or
the checkpoint and config a resumed one continues with) in train/start.py; its log in
train/metrics.py; its checkpoints (one mapping of named parts, :func:`checkpoint_parts`, written in
the background) in train/checkpoint.py; what an evaluation measures in train/evaluate.py and
train/tasks.py.
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
import torch.distributed as dist

import shards
import tokenizer as tk
from train import checkpoint as ckpt
from train import memory
from train.config import (
    Config,
    ConfigRequest,
    TrainingConfig,
)
from train.evaluate import DEFAULT_PROMPTS, EvaluationError, byte_length_table, complete_prompts, val_metrics
from train.loader import Loader, ValWindows
from train.metrics import Metrics
from train.model import GPT, peak_flops
from train.optim import build_optimizer, set_lr
from train.process import (
    Console,
    Dist,
    StopFlag,
    TrainingError,
    device_name,
    gib,
    on_rank0,
    peak_memory,
    resolve_device,
    resolve_precision,
    setup_distributed,
)
from train.start import Start, check_dirs, find_start, setup_warnings
from train.tasks import Task, load_tasks, score_tasks

FINISHED = "finished"


def steps_for(cfg: Config, world_size: int) -> tuple[int, int]:
    """(tokens per optimizer step, number of optimizer steps)."""
    t = cfg.training
    per_step = t.global_batch_size * cfg.model.seq_len
    steps = t.max_steps if t.max_steps > 0 else math.ceil(t.token_budget / per_step)
    return per_step, steps


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
    last_val_bpb: float | None = None      # of the last evaluation (for the summary; not checkpointed)
    last_tasks: dict | None = None         # the last task scores (for the summary; not checkpointed)
    elapsed_before: float = 0.0            # seconds trained by earlier processes of this run
    started: float = field(default_factory=time.time)  # when this process started training (time.time())
    changes: list[dict] = field(default_factory=list)  # config changes made on resume: {"step", "key", "from", "to"}
    eval_s: float = 0.0                    # seconds spent evaluating (val windows, tasks, samples), the whole run

    @property
    def elapsed_s(self) -> float:
        return self.elapsed_before + time.time() - self.started

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens": self.tokens, "best_val_loss": self.best_val_loss,
                "evals_since_best": self.evals_since_best, "last_val_loss": self.last_val_loss,
                "elapsed_s": self.elapsed_s, "changes": self.changes, "eval_s": self.eval_s}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.tokens = state["step"], state["tokens"]
        self.best_val_loss, self.evals_since_best = state["best_val_loss"], state["evals_since_best"]
        self.last_val_loss = state.get("last_val_loss")
        self.elapsed_before, self.started = state["elapsed_s"], time.time()
        self.changes = list(state.get("changes", []))
        self.eval_s = float(state.get("eval_s", 0.0))


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
    changes: list[dict]               # config keys this process changed from the checkpoint's: {"key", "from", "to"}
    started_from: dict                # the weights the run started from (--init-from's description), {} if none
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
    tok: object | None                # the dataset's tokenizer (tasks, samples); None when it cannot be read
    byte_lengths: torch.Tensor | None  # UTF-8 bytes of each token id (bits per byte); None when unknown
    tasks: list[Task]                 # training.eval_tasks, read once
    last_checkpoint: str | None = None  # the newest complete checkpoint, named when the run stops on an error
    writer: ckpt.Writer = field(default_factory=ckpt.Writer)        # checkpoints, written in the background
    host_copies: ckpt.HostCopies = field(default_factory=ckpt.HostCopies)  # the snapshots' host buffers
    parts: dict = field(default_factory=dict)  # what a checkpoint holds (checkpoint_parts), set by restore()

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

def train(cfg: Config | ConfigRequest, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          dry_run: bool = False, init_from: str | Path | None = None) -> dict:
    """Train per ``cfg`` on the dataset in ``data_dir``, writing ``run_dir``; returns the summary dict.

    Continues from ``run_dir``'s newest complete checkpoint when there is one (``resume`` only makes
    its absence worth a note), with the config that checkpoint was trained with. ``cfg`` is what the
    caller asks for: a :class:`Config` (every key) or a :class:`ConfigRequest` (a command line's
    ``--config`` and ``--set``); on resume it may change only the keys of ``MUTABLE_ON_RESUME``, and
    each change is printed and recorded (ConfigError for any other).

    ``init_from`` starts a new run from other weights (train/init_from.py: a run, a checkpoint or a
    transformers directory): weights only, with a fresh optimizer, schedule and data order; the model
    config is the weights' (``cfg``'s model keys must agree), the tokenizer must be the dataset's. The
    run records where it started from; resuming it with the same ``init_from`` continues it.
    """
    with contextlib.ExitStack() as cleanup:  # on every exit: the loader thread, metrics files, process group
        run = setup(cfg, Path(data_dir), Path(run_dir), resume, cleanup, init_from)
        cleanup.callback(run.writer.join)  # a checkpoint being written is finished, whatever stops the run
        if dry_run:
            return dry_run_report(run)
        state = restore(run)
        metrics = cleanup.enter_context(contextlib.closing(open_run_dir(run, state))) if run.d.main else None
        return fit(run, state, metrics)


def setup(request: Config | ConfigRequest, data_dir: Path, run_dir: Path, resume: bool,
          cleanup: contextlib.ExitStack, init_from: str | Path | None = None) -> Run:
    """Join the process group, open the data, find the checkpoint and config to continue from, build the model."""
    check_dirs(data_dir, run_dir)
    d, owns_group = setup_distributed()
    if owns_group:
        cleanup.callback(dist.destroy_process_group)
    say = Console(d.main)

    manifest = shards.load_manifest(data_dir)
    data_fp, tok_fp = shards.dataset_fingerprint(manifest), manifest["tokenizer_sha256"]
    weights = {}  # rank 0's InitWeights, kept out of the broadcast: DDP hands its parameters to the others

    def start() -> Start:
        begin, weights["init"] = find_start(request, manifest, data_dir, run_dir, data_fp, tok_fp, resume,
                                            d.world_size, say, init_from)
        return begin
    resume_from, config, changes, started_from = on_rank0(d, start)
    cfg = Config.from_dict(config)
    t = cfg.training
    device = resolve_device(t.device, d)
    precision = resolve_precision(t.precision, device)
    tokens_per_step, max_steps = steps_for(cfg, d.world_size)

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(cfg.model)
    if weights.get("init") is not None:
        model.load_state_dict(weights.pop("init").state_dict)
    model.to(device)
    loader = Loader(data_dir, manifest, cfg.model.seq_len, t.batch_size, t.seed, device, d.rank, d.world_size,
                    cfg.data.prefetch, step_windows=t.global_batch_size)
    cleanup.callback(loader.close)
    val = ValWindows(data_dir, manifest, cfg.model.seq_len, t.eval_windows)
    for warning in setup_warnings(cfg, manifest, max_steps, len(val)):
        say(f"warning: {warning}")
    tok, byte_lengths, tasks = eval_parts(cfg, data_dir, device, say)

    # compile the model, then wrap it in DDP (PyTorch's "Where to apply torch.compile?", nanoGPT): dynamo then
    # splits the graph at DDP's gradient buckets (torch._dynamo.config.optimize_ddp) so that the all-reduces
    # overlap backward, and DDP's hooks stay outside the graph
    train_model = ddp = torch.compile(model) if t.compile else model
    if d.world_size > 1:
        train_model = ddp = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    peak = peak_flops(device, amp_dtype or torch.float32)
    if device.type == "cuda" and peak is None:
        say(f"MFU not shown: unknown GPU {torch.cuda.get_device_name(device)}; add its dense peak FLOP/s "
            f"(bf16 and TF32) to PEAK_FLOPS in train/model.py")
    return Run(cfg=cfg, d=d, say=say, data_dir=data_dir, run_dir=run_dir, manifest=manifest, data_fp=data_fp,
               tok_fp=tok_fp, device=device, precision=precision, tokens_per_step=tokens_per_step,
               max_steps=max_steps, resume_from=resume_from, changes=changes, started_from=started_from,
               model=model, train_model=train_model,
               ddp=ddp, optimizer=build_optimizer(model, cfg, device),
               scaler=torch.amp.GradScaler("cuda") if precision == "fp16" else None, loader=loader, val=val,
               autocast=torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext(),
               flops_per_token=model.estimate_flops_per_token(), peak=peak, tok=tok, byte_lengths=byte_lengths,
               tasks=tasks,
               last_checkpoint=str(resume_from) if resume_from else None)


def eval_parts(cfg: Config, data_dir: Path, device: torch.device, say) -> tuple[object, torch.Tensor | None,
                                                                              list[Task]]:
    """What an evaluation needs besides the val windows: the dataset's tokenizer (samples, tasks), its
    byte-length table (bits per byte) and the task files of training.eval_tasks (a TaskError names a bad
    one before anything trains). A dataset whose tokenizer cannot be read trains without the first two."""
    t = cfg.training
    try:
        tok = tk.load(data_dir / shards.TOKENIZER_NAME)
    except tk.TokenizerError as e:
        if t.eval_tasks:
            raise TrainingError(f"training.eval_tasks needs the dataset's tokenizer: {e}") from None
        say(f"note: {e}; this run logs no bits per byte and no samples")
        return None, None, []
    try:
        byte_lengths = byte_length_table(tok, device)
    except EvaluationError as e:
        say(f"note: {e}; this run logs no bits per byte")
        byte_lengths = None
    return tok, byte_lengths, load_tasks(t.eval_tasks)


def dry_run_report(run: Run) -> dict:
    """Print what a run would do (config, size, steps, memory, data) and train nothing."""
    cfg, t, say = run.cfg, run.cfg.training, run.say
    n_windows = run.loader.windows.n_windows
    say(json.dumps(cfg.to_dict(), indent=2))
    say(f"parameters: {run.n_params:,} (plus {cfg.model.seq_len * cfg.model.d_model if not cfg.model.rope else 0:,} "
        f"position embedding)")
    say(f"device {run.device}, precision {run.precision}, {run.d.world_size} process(es)")
    say(f"tokens per step: {run.tokens_per_step:,} = global batch {t.global_batch_size} (micro-batch {t.batch_size} x "
        f"accumulation {t.grad_accum_steps} x {run.d.world_size} process(es)) x seq_len {cfg.model.seq_len}")
    budget = f" (token budget {t.token_budget:,})" if t.max_steps <= 0 else ""
    say(f"steps: {run.max_steps:,}{budget} = {run.max_steps * run.tokens_per_step:,} tokens, "
        f"{run.max_steps * run.tokens_per_step / max(1, n_windows * cfg.model.seq_len):.2f} epochs")
    for line in memory.estimate(cfg, run.precision, run.device.type, run.d.world_size).lines(t.compile):
        say(line)
    say(f"data: {run.data_dir}: {n_windows:,} train windows, {len(run.val)} val windows, fingerprint "
        f"{run.data_fp[:16]}; {'would resume from ' + str(run.resume_from) if run.resume_from else 'new run'}")
    return {"dry_run": True, "params": run.n_params, "max_steps": run.max_steps, "tokens_per_step": run.tokens_per_step}


def checkpoint_parts(run: Run, state: TrainState) -> dict[str, ckpt.Stateful | None]:
    """What a checkpoint holds, by name (train/checkpoint.py stores and restores each); adding a part (EMA
    weights, say) is one line here."""
    d = run.d

    def gather(mine: dict) -> list[dict]:
        ranks = [None] * d.world_size
        dist.all_gather_object(ranks, mine)
        return ranks
    return {
        "model": ckpt.Weights(run.model),
        "optimizer": run.optimizer,
        "scaler": run.scaler,  # fp16 only
        "loader": run.loader,
        "train_state": state,
        "rng": ckpt.RNG(d.rank, gather if d.world_size > 1 else None),
        "fingerprints": ckpt.Record({"dataset_fingerprint": run.data_fp, "tokenizer_fingerprint": run.tok_fp,
                                     "eot_id": run.manifest["eot_id"]}),
        "process": ckpt.Record({"world_size": d.world_size, "precision": run.precision, "device": run.device.type,
                                "torch": torch.__version__}),
        "config": ckpt.Record(run.cfg.to_dict()),
        "init_from": ckpt.Record(run.started_from) if run.started_from else None,
    }


BEST_PARTS = ("model", "config", "train_state", "fingerprints")  # what the best weights between checkpoints hold


def restore(run: Run) -> TrainState:
    """A fresh state, or the one of ``run.resume_from`` with every part of the checkpoint restored."""
    state = TrainState()
    run.parts = checkpoint_parts(run, state)
    if run.resume_from is None:
        return state
    ckpt.load(run.resume_from, run.parts, verified=True)  # resume_checkpoint checked every file, once
    state.changes += [{"step": state.step, **c} for c in run.changes]
    run.say(f"resuming from {run.resume_from} (step {state.step:,}, {state.tokens:,} tokens)")
    return state


def open_run_dir(run: Run, state: TrainState) -> Metrics:
    """Write the run's config and tokenizer (rank 0) and open its metrics at ``state.step``."""
    shards.make_output_dir(run.run_dir)
    try:
        shards.atomic_write_bytes(run.run_dir / ckpt.CONFIG_NAME,
                                  (json.dumps(run.cfg.to_dict(), indent=2) + "\n").encode("utf-8"))
        shards.atomic_write_bytes(run.run_dir / shards.TOKENIZER_NAME,
                                  (run.data_dir / shards.TOKENIZER_NAME).read_bytes())
    except shards.DiskFull as e:
        raise TrainingError(f"{e}; free space there (or use another --out), then rerun the same command") from None
    except OSError as e:
        raise shards.output_error(run.run_dir, "--out", e) from None
    metrics = Metrics(run.run_dir, run.cfg, state.step, run.say)
    metrics.log({"type": "run", "step": state.step, "device": run.device.type, "device_name": device_name(run.device),
                 "world_size": run.d.world_size, "precision": run.precision, "torch": torch.__version__,
                 "params": run.n_params, "flops_per_token": run.flops_per_token,
                 "data_dir": str(run.data_dir.resolve()), "init_from": run.started_from or None})
    if run.changes:
        metrics.log({"type": "config", "step": state.step, "changes": run.changes})
    return metrics


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
                is_best = run_eval(run, metrics, state, lr, last_loss, last=state.step == run.max_steps)
                if t.early_stop_patience and state.evals_since_best >= t.early_stop_patience:
                    stop_reason = f"early stop: no better val loss in {state.evals_since_best} evaluations"
            if signalled:
                stop_reason = (f"stopped by signal {signalled} ({signal.Signals(signalled).name}); continue with "
                               f"--resume")
            if due.checkpoint or stop_reason != FINISHED:
                save(run, state, best=is_best)
            elif is_best:  # the best weights alone, between checkpoints
                save(run, state, best=True, names=BEST_PARTS)
            meter.exclude(time.time() - now)  # evaluation and checkpoint time is not step throughput
            if stop_reason != FINISHED:
                break
    run.last_checkpoint = on_rank0(d, finish_writes(run))
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
            _, loss = run.train_model(x, y, return_logits=False)  # no logits kept for backward
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
            run.writer.join()  # a checkpoint being written (of a finite step) completes: name it
            raise TrainingError(
                f"loss is {loss} at step {step}; stopping. Last good checkpoint: {run.last_checkpoint or 'none'}. "
                f"Lower training.lr, raise training.warmup_steps or use training.precision=fp32/bf16, "
                f"then resume from that checkpoint (or start a new run)")
    return [loss for loss, _ in rows], rows[-1][1], received


class Throughput:
    """Tokens/s between two log points: of the steps alone (evaluation and checkpoint time left out: what
    MFU is computed from) and by the wall clock (everything in: what the user gets), and the ETA."""

    def __init__(self, state: TrainState):
        state.started = self.since = self.wall_since = time.time()
        self.tokens, self.step = state.tokens, state.step

    def read(self, state: TrainState, max_steps: int, now: float) -> tuple[float, float, float]:
        """(step tokens/s, wall-clock tokens/s, seconds left at the wall-clock pace) since the last read;
        the next read counts from ``now``."""
        tokens = state.tokens - self.tokens
        tok_s, wall_tok_s = tokens / max(now - self.since, 1e-9), tokens / max(now - self.wall_since, 1e-9)
        eta = (max_steps - state.step) * (now - self.wall_since) / max(1, state.step - self.step)
        self.since = self.wall_since = now
        self.tokens, self.step = state.tokens, state.step
        return tok_s, wall_tok_s, eta

    def exclude(self, seconds: float) -> None:
        self.since += seconds


def log_train(run: Run, metrics: Metrics | None, state: TrainState, meter: Throughput, now: float, lr: float,
              loss: float, grad_norm: float) -> None:
    tok_s, wall_tok_s, eta = meter.read(state, run.max_steps, now)
    record = {"type": "train", "step": state.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
              "tokens": state.tokens, "tokens_per_s": tok_s, "wall_tokens_per_s": wall_tok_s,
              "elapsed_s": state.elapsed_before + now - state.started}
    record["peak_mem_device"], record["peak_mem_host"] = peak_memory(run.device)
    line = (f"step {state.step:>7,}/{run.max_steps:,} | loss {loss:.4f} | lr {lr:.2e} | "
            f"grad norm {grad_norm:.3f} | {tok_s:,.0f} tok/s ({wall_tok_s:,.0f} wall) | ETA {_fmt_time(eta)}")
    if run.peak:
        record["mfu"] = run.flops_per_token * tok_s / run.d.world_size / run.peak
        line += f" | MFU {100 * record['mfu']:.1f}%"
    line += f" | mem {gib(record['peak_mem_device'] or record['peak_mem_host'])}"
    run.say(line, flush=True)
    if metrics:
        metrics.log(record)


def run_eval(run: Run, metrics: Metrics | None, state: TrainState, lr: float, loss: float, last: bool) -> bool:
    """Evaluate: loss, perplexity and bits per byte on the val windows (every rank), the tasks when due
    (every rank), samples (rank 0); update the best val loss, log, and return whether this one is the best."""
    t, d = run.cfg.training, run.d
    start = time.time()
    # one shape for every batch (padded), so a compiled model compiles its evaluation graph once
    m = val_metrics(run.train_model, run.val, t.batch_size, run.device, run.autocast, d.rank, d.world_size,
                    run.byte_lengths, pad=True)
    tasks = None
    if run.tasks and (last or t.eval_tasks_interval == 0 or state.step % t.eval_tasks_interval == 0):
        tasks = score_tasks(run.model, run.tasks, run.tok, run.device, run.autocast, d.rank, d.world_size,
                            t.batch_size)
    samples = None
    if d.main and run.tok is not None and t.sample_tokens:
        samples = complete_prompts(run.model, run.tok, t.sample_prompts or DEFAULT_PROMPTS, t.sample_tokens,
                                   run.device, run.autocast)
    seconds = time.time() - start
    state.eval_s += seconds
    val_loss = m["val_loss"]
    is_best = val_loss < state.best_val_loss
    state.last_val_loss = val_loss
    state.best_val_loss, state.evals_since_best = ((val_loss, 0) if is_best else
                                                   (state.best_val_loss, state.evals_since_best + 1))
    state.last_val_bpb, state.last_tasks = m["val_bpb"], tasks or state.last_tasks
    line = f"step {state.step:>7,} | val loss {val_loss:.4f}"
    if m["val_bpb"] is not None:
        line += f" | bpb {m['val_bpb']:.4f}"
    line += f" | ppl {m['val_ppl']:.2f}{' (best)' if is_best else ''}"
    for name, score in (tasks or {}).items():
        line += f" | {name} {score_text(score)}"
    run.say(line + f" | {seconds:.1f} s", flush=True)
    for sample in samples or []:
        completion = " ".join(sample["completion"].split())
        run.say(f"    {sample['prompt']!r} -> {completion[:100]!r}{'...' if len(completion) > 100 else ''}")
    if metrics:
        record = {"type": "eval", "step": state.step, "loss": loss, "lr": lr, "tokens": state.tokens,
                  "val_loss": val_loss, "val_bpb": m["val_bpb"], "val_ppl": m["val_ppl"],
                  "best_val_loss": state.best_val_loss, "eval_s": seconds}
        if tasks:
            record["tasks"] = tasks
        metrics.log(record)
        if samples:
            metrics.log({"type": "samples", "step": state.step,
                         "samples": [{"prompt": x["prompt"], "completion": x["completion"]} for x in samples]})
    return is_best


def score_text(score: dict) -> str:
    """A task's score as the log line shows it: normalised accuracy where the task defines it."""
    if score.get("acc_norm") is not None:
        return f"acc_norm {score['acc_norm']:.3f}"
    return f"acc {score['acc']:.3f}"


def finish_writes(run: Run) -> Callable[[], str | None]:
    """(For on_rank0.) Wait for the checkpoint being written, if any; its error is raised here (on every rank,
    through on_rank0). Returns the newest complete checkpoint."""
    def wait() -> str | None:
        run.writer.wait()
        return run.last_checkpoint
    return wait


def save(run: Run, state: TrainState, best: bool = False, names: tuple[str, ...] | None = None) -> None:
    """Checkpoint ``state`` and the run's parts (``names`` of them; all by default) without stalling training.

    Every rank takes part (the RNG states are gathered); rank 0 first waits for the previous write (its
    failure is raised on every rank), then copies the parts to host memory and hands them to the
    background writer. A full checkpoint becomes ``latest`` (and ``best`` if ``best``); the best weights
    alone (``names=BEST_PARTS``) are written as ``best_step_*`` and become ``best``."""
    t = run.cfg.training
    run.last_checkpoint = on_rank0(run.d, finish_writes(run))  # one write in flight; its buffers are free again
    parts = run.parts if names is None else {name: run.parts[name] for name in names}
    snap = ckpt.snapshot(parts, run.d.main, run.host_copies)
    if not run.d.main:
        return
    full = names is None
    pointers = ("latest", "best") if full and best else ("latest",) if full else ("best",)
    prefix = ckpt.STEP_PREFIX if full else ckpt.BEST_PREFIX

    def job() -> None:
        path = ckpt.write(run.run_dir, state.step, snap, t.keep_checkpoints, pointers, prefix)
        if full:
            run.last_checkpoint = str(path)
    run.writer.submit(job)


def summarize(run: Run, state: TrainState, last_loss: float | None, stop_reason: str) -> dict:
    """Print and return how the run ended."""
    elapsed = state.elapsed_s
    best = state.best_val_loss if math.isfinite(state.best_val_loss) else None
    device_peak, host_peak = peak_memory(run.device)
    summary = {"steps": state.step, "tokens": state.tokens, "final_loss": last_loss,
               "final_val_loss": state.last_val_loss, "final_val_bpb": state.last_val_bpb, "best_val_loss": best,
               "tasks": state.last_tasks, "elapsed_s": elapsed, "eval_s": state.eval_s,
               "peak_mem_device": device_peak, "peak_mem_host": host_peak,
               "checkpoint": run.last_checkpoint, "stop_reason": stop_reason,
               "preempted": stop_reason.startswith("stopped by signal")}

    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    run.say(f"\n{stop_reason} after {state.step:,} steps, {state.tokens:,} tokens in {_fmt_time(elapsed)} "
            f"({state.tokens / max(elapsed, 1e-9):,.0f} tokens/s by the wall clock; evaluation "
            f"{_fmt_time(state.eval_s)}, {100 * state.eval_s / max(elapsed, 1e-9):.1f}% of it)")
    run.say(f"final train loss {fmt(last_loss)}, val loss {fmt(state.last_val_loss)}, val bits per byte "
            f"{fmt(state.last_val_bpb)}, best val loss {fmt(best)}")
    if state.last_tasks:
        run.say("tasks: " + ", ".join(f"{name} {score_text(score)} ({score['items']:,} items)"
                                       for name, score in state.last_tasks.items()))
    memory = f"{gib(host_peak)} of host memory (this process)"
    if device_peak is not None:
        memory = f"{gib(device_peak)} on {run.device}, {memory}"
    run.say(f"peak memory: {memory}")
    run.say(f"checkpoints: {run.run_dir / ckpt.CHECKPOINT_DIR} (latest {run.last_checkpoint})")
    return summary
