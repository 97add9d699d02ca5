"""The training loop: ``train(cfg, data_dir, run_dir)``.

One process, or one per accelerator under ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU). Each
optimizer step takes ``grad_accum_steps`` micro-batches of ``batch_size`` windows per process.
Logged losses are means over the micro-batches of all processes, so 2 processes x accumulation k
log the same losses as 1 process x accumulation 2k.

The loop never waits on the device for logging between log points: per-step losses and gradient
norms stay on the device and are read in one transfer at each log, evaluation or checkpoint, which
is also where a non-finite loss is detected (naming its exact step) before anything is saved.
"""
from __future__ import annotations

import contextlib
import json
import secrets
import math
import os
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import shards
from train import checkpoint as ckpt
from train.config import Config, ConfigError
from train.loader import Loader, ValWindows
from train.model import GPT, peak_flops
from train.optim import build_optimizer, set_lr

METRICS_NAME = "metrics.jsonl"
WANDB_ID_NAME = "wandb_run_id"  # the W&B run this directory logs to (logging.wandb=true)


class TrainingError(Exception):
    """The run cannot go on (non-finite loss, mismatched resume); the message says what to do."""


@dataclass
class Dist:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_name: str) -> Dist:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK in the environment)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    if not dist.is_initialized():
        backend = "nccl" if device_name == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend=backend)
    return d


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


def estimate_memory_bytes(cfg: Config, n_params: int, precision: str) -> int:
    """Rough accelerator memory of one process: fp32 weights, grads and AdamW moments (16 B/param) plus
    activations (~34 values per layer per token per d_model, Korthikanti et al. 2022) and fp32 logits."""
    m, t = cfg.model, cfg.training
    act_bytes = 2 if precision in ("bf16", "fp16") else 4
    tokens = t.batch_size * m.seq_len
    layers = 2 if m.grad_checkpointing else m.n_layers
    activations = layers * tokens * m.d_model * 34 * act_bytes // 2
    logits = 3 * tokens * m.vocab_size * 4
    return 16 * n_params + activations + logits


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
    """Set by SIGINT/SIGTERM; the loop checkpoints and exits at the end of the current step."""

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


class Metrics:
    """``RUN/metrics.jsonl`` (one JSON object per line), plus TensorBoard and W&B when enabled."""

    def __init__(self, run_dir: Path, cfg: Config, resume_step: int | None):
        self.path = run_dir / METRICS_NAME
        if resume_step is not None and self.path.exists():
            # drop what a killed run logged after its last checkpoint: those steps are trained again
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and json.loads(line)["step"] <= resume_step]
            shards.atomic_write_bytes(self.path, "".join(line + "\n" for line in kept).encode("utf-8"))
        self.file = open(self.path, "a", encoding="utf-8")
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
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        numbers = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if self.tb is not None:
            for k, v in numbers.items():
                self.tb.add_scalar(f"{record['type']}/{k}", v, record["step"])
        if self.wandb is not None:
            self.wandb.log({f"{record['type']}/{k}": v for k, v in numbers.items()}, step=record["step"])

    def close(self) -> None:
        self.file.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _fmt_time(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def train(cfg: Config, data_dir: str | Path, run_dir: str | Path, resume: bool = False,
          dry_run: bool = False) -> dict:
    """Train per ``cfg`` on the dataset in ``data_dir``, writing ``run_dir``; returns the summary dict.

    Continues from ``run_dir``'s newest complete checkpoint when there is one (``resume`` only makes
    its absence worth a note).
    """
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    d = setup_distributed("cuda" if cfg.training.device == "cuda" or
                          (cfg.training.device == "auto" and torch.cuda.is_available()) else "cpu")
    say = print if d.main else (lambda *a, **k: None)
    device = resolve_device(cfg.training.device, d)
    precision = resolve_precision(cfg.training.precision, device)
    t = cfg.training

    manifest = shards.load_manifest(data_dir)
    cfg.model.vocab_size = int(manifest["vocab_size"])
    data_fp, tok_fp = shards.dataset_fingerprint(manifest), manifest["tokenizer_sha256"]
    tokens_per_step, max_steps = steps_for(cfg, d.world_size)

    # a previous run in this directory: its newest checkpoint, checked against this data and config
    ckpt_dir = None
    try:
        ckpt_dir = ckpt.find_checkpoint(run_dir, "latest")
    except ckpt.CheckpointError:
        if resume:
            say(f"--resume: no checkpoint in {run_dir}, starting from scratch")
    if ckpt_dir is not None:
        state = ckpt.read_state(ckpt_dir)
        for what, saved, now in (("dataset", state["dataset_fingerprint"], data_fp),
                                 ("tokenizer", state["tokenizer_fingerprint"], tok_fp)):
            if saved != now:
                raise TrainingError(
                    f"refusing to resume {run_dir}: its checkpoint {ckpt_dir.name} was trained on {what} "
                    f"fingerprint {saved}, but {data_dir} has {what} fingerprint {now}. Use the original "
                    f"dataset, or start a new run with a different --out")
        saved_model = json.loads((ckpt_dir / ckpt.CONFIG_NAME).read_text())["model"]
        diff = {k: (v, getattr(cfg.model, k)) for k, v in saved_model.items() if getattr(cfg.model, k) != v}
        if diff:
            raise TrainingError(f"refusing to resume {run_dir}: the model config differs from its checkpoint "
                                f"(key: (checkpoint, now)) {diff}; use the same --config/--set, or a new --out")

    torch.manual_seed(t.seed)  # the same initial weights on every rank
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = GPT(cfg.model).to(device)
    n_params = model.num_params()

    loader = Loader(data_dir, manifest, cfg.model.seq_len, t.batch_size, t.seed, device, d.rank, d.world_size,
                    cfg.data.prefetch)
    val = ValWindows(data_dir, manifest, cfg.model.seq_len, t.eval_windows)

    if dry_run:
        say(json.dumps(cfg.to_dict(), indent=2))
        say(f"parameters: {n_params:,} (plus {cfg.model.seq_len * cfg.model.d_model if not cfg.model.rope else 0:,} "
            f"position embedding)")
        say(f"device {device}, precision {precision}, {d.world_size} process(es)")
        say(f"tokens per step: {tokens_per_step:,} = batch {t.batch_size} x accumulation {t.grad_accum_steps} x "
            f"{d.world_size} process(es) x seq_len {cfg.model.seq_len}")
        budget = f" (token budget {t.token_budget:,})" if t.max_steps <= 0 else ""
        say(f"steps: {max_steps:,}{budget} = {max_steps * tokens_per_step:,} tokens, "
            f"{max_steps * tokens_per_step / max(1, loader.windows.n_windows * cfg.model.seq_len):.2f} epochs")
        say(f"estimated memory per process: {estimate_memory_bytes(cfg, n_params, precision) / 2**30:.2f} GiB")
        say(f"data: {data_dir}: {loader.windows.n_windows:,} train windows, {len(val)} val windows, "
            f"fingerprint {data_fp[:16]}; {'would resume from ' + str(ckpt_dir) if ckpt_dir else 'new run'}")
        loader.close()
        return {"dry_run": True, "params": n_params, "max_steps": max_steps, "tokens_per_step": tokens_per_step}

    optimizer = build_optimizer(model, cfg, device)
    scaler = torch.amp.GradScaler("cuda") if precision == "fp16" else None
    start_step, tokens, best_val, evals_since_best, elapsed_before = 0, 0, float("inf"), 0, 0.0
    if ckpt_dir is not None:
        state, rng = ckpt.load_training_state(ckpt_dir, model, optimizer, scaler, d.rank)
        start_step, tokens = state["step"], state["tokens"]
        best_val, evals_since_best = state["best_val_loss"], state["evals_since_best"]
        elapsed_before = state["elapsed_s"]
        loader.load_state_dict(state["loader"])
        if rng:
            ckpt.set_rng_state(rng)
        say(f"resuming from {ckpt_dir} (step {start_step:,}, {tokens:,} tokens)")
    if d.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ckpt.CONFIG_NAME).write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", encoding="utf-8")
        shutil.copyfile(data_dir / shards.TOKENIZER_NAME, run_dir / shards.TOKENIZER_NAME)
    metrics = Metrics(run_dir, cfg, start_step if ckpt_dir else None) if d.main else None

    train_model = ddp = model
    if d.world_size > 1:
        train_model = ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    if t.compile:
        train_model = torch.compile(train_model)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext())
    flops_per_token = model.estimate_flops_per_token()
    peak = peak_flops(device, amp_dtype or torch.float32)
    last_good = str(ckpt_dir) if ckpt_dir else None

    def save(step: int, is_best: bool = False) -> None:
        nonlocal last_good
        rngs = [ckpt.rng_state()]
        if d.world_size > 1:
            rngs = [None] * d.world_size
            dist.all_gather_object(rngs, ckpt.rng_state())
        if d.main:
            state = {"step": step, "tokens": tokens, "loader": loader.state_dict(), "dataset_fingerprint": data_fp,
                     "tokenizer_fingerprint": tok_fp, "eot_id": manifest["eot_id"], "best_val_loss": best_val,
                     "evals_since_best": evals_since_best, "last_val_loss": last_val, "precision": precision,
                     "world_size": d.world_size, "elapsed_s": elapsed_before + time.time() - t_start}
            path = ckpt.save_checkpoint(run_dir, step, model, optimizer, scaler, state, cfg.to_dict(), rngs,
                                        t.keep_checkpoints, is_best)
            last_good = str(path)
        if d.world_size > 1:
            dist.barrier()

    say(f"training {n_params:,} parameters on {device} ({precision}, {d.world_size} process(es)) for "
        f"{max_steps:,} steps of {tokens_per_step:,} tokens; run dir {run_dir}")
    step, last_val, last_loss, stop_reason = start_step, None, None, "finished"
    pending: list[tuple[int, torch.Tensor, torch.Tensor]] = []  # (step, loss, grad norm) not yet read back
    t_start = t_log = time.time()
    tokens_at_log, step_at_log = tokens, step
    stop = StopFlag()
    with stop:
        while step < max_steps:
            lr = set_lr(optimizer, step, t, max_steps)
            step_loss = torch.zeros((), device=device)
            for micro in range(t.grad_accum_steps):
                x, y = loader.next_batch()
                sync = micro == t.grad_accum_steps - 1 or d.world_size == 1
                with (contextlib.nullcontext() if sync else ddp.no_sync()), autocast:
                    _, loss = train_model(x, y)
                    loss = loss / t.grad_accum_steps
                (scaler.scale(loss) if scaler else loss).backward()
                step_loss += loss.detach()
            if scaler:
                scaler.unscale_(optimizer)
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip if t.grad_clip > 0 else math.inf)
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += tokens_per_step
            pending.append((step, step_loss, norm))

            do_log = step % t.log_interval == 0 or step == max_steps
            do_eval = (t.eval_interval > 0 and step % t.eval_interval == 0) or step == max_steps
            do_ckpt = step % t.checkpoint_interval == 0 or step == max_steps
            interrupted = stop.signal is not None
            if d.world_size > 1:
                flag = torch.tensor(float(interrupted), device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                interrupted = bool(flag.item())
            if not (do_log or do_eval or do_ckpt or interrupted):
                continue

            # read back the pending steps' losses (one transfer) and stop on the first non-finite one
            values = torch.stack([torch.stack([lo, nm.float()]) for _, lo, nm in pending]).float()
            if d.world_size > 1:
                losses = values[:, 0].contiguous()
                dist.all_reduce(losses)
                values[:, 0] = losses / d.world_size
            rows = values.tolist()
            for (s, _, _), (lo, _) in zip(pending, rows):
                if not math.isfinite(lo):
                    loader.close()
                    if metrics:
                        metrics.close()
                    raise TrainingError(
                        f"loss is {lo} at step {s}; stopping. Last good checkpoint: {last_good or 'none'}. "
                        f"Lower training.lr, raise training.warmup_steps or use training.precision=fp32/bf16, "
                        f"then resume from that checkpoint (or start a new run)")
            interval_loss = sum(r[0] for r in rows) / len(rows)
            last_loss, grad_norm = interval_loss, rows[-1][1]  # the mean since the last read, as logged
            pending.clear()

            now = time.time()
            if do_log:
                tok_s = (tokens - tokens_at_log) / max(now - t_log, 1e-9)
                eta = (max_steps - step) * (now - t_log) / max(1, step - step_at_log)
                record = {"type": "train", "step": step, "loss": interval_loss, "lr": lr, "grad_norm": grad_norm,
                          "tokens": tokens, "tokens_per_s": tok_s, "elapsed_s": elapsed_before + now - t_start}
                line = (f"step {step:>7,}/{max_steps:,} | loss {interval_loss:.4f} | lr {lr:.2e} | "
                        f"grad norm {grad_norm:.3f} | {tok_s:,.0f} tok/s | ETA {_fmt_time(eta)}")
                if peak:
                    record["mfu"] = flops_per_token * tok_s / d.world_size / peak
                    line += f" | MFU {100 * record['mfu']:.1f}%"
                say(line, flush=True)
                if metrics:
                    metrics.log(record)
                t_log, tokens_at_log, step_at_log = now, tokens, step

            is_best = False
            if do_eval and len(val):
                last_val = evaluate(train_model, val, t.batch_size, device, autocast, d)
                is_best = last_val < best_val
                best_val, evals_since_best = (last_val, 0) if is_best else (best_val, evals_since_best + 1)
                say(f"step {step:>7,} | val loss {last_val:.4f} | ppl {math.exp(min(last_val, 50)):.2f}"
                    f"{' (best)' if is_best else ''}", flush=True)
                if metrics:
                    metrics.log({"type": "eval", "step": step, "loss": last_loss, "lr": lr, "tokens": tokens,
                                 "val_loss": last_val, "val_ppl": math.exp(min(last_val, 50)),
                                 "best_val_loss": best_val})
                if t.early_stop_patience and evals_since_best >= t.early_stop_patience:
                    stop_reason = f"early stop: no better val loss in {evals_since_best} evaluations"
            if do_ckpt or is_best or interrupted or stop_reason != "finished":
                save(step, is_best)
            t_log += time.time() - now  # evaluation and checkpoint time is not training throughput
            if interrupted:
                stop_reason = f"stopped by signal {stop.signal}; continue with --resume"
            if stop_reason != "finished":
                break

    loader.close()
    elapsed = elapsed_before + time.time() - t_start
    summary = {"steps": step, "tokens": tokens, "final_loss": last_loss, "final_val_loss": last_val,
               "best_val_loss": best_val if math.isfinite(best_val) else None, "elapsed_s": elapsed,
               "checkpoint": last_good, "stop_reason": stop_reason}
    if metrics:
        metrics.close()
    say(f"\n{stop_reason} after {step:,} steps, {tokens:,} tokens in {_fmt_time(elapsed)}")
    def fmt(v):
        return "n/a" if v is None else f"{v:.4f}"
    say(f"final train loss {fmt(last_loss)}, val loss {fmt(last_val)}, best val loss {fmt(summary['best_val_loss'])}")
    say(f"checkpoints: {run_dir / ckpt.CHECKPOINT_DIR} (latest {last_good})")
    if d.world_size > 1:
        dist.destroy_process_group()
    return summary
