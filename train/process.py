"""A training process: its place among the ranks, its device and precision, its console and its signals.

One process trains alone, or one per accelerator under ``torchrun`` (DDP: NCCL on CUDA, gloo on CPU):
:func:`setup_distributed` joins the group and :func:`on_rank0` runs what reads or writes the run
directory on rank 0 and hands its result (or its error) to every rank. :class:`Console` prints the
run's lines while stdout can be written, and :class:`StopFlag` turns SIGINT, SIGTERM and SIGHUP into a
checkpoint and the exit status :data:`EXIT_PREEMPTED`.
"""
from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

import shards
from train.config import ConfigError


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


def setup_distributed() -> tuple[Dist, bool]:
    """Join the process group torchrun set up (RANK, WORLD_SIZE, LOCAL_RANK in the environment).

    The group is joined before the config is known (rank 0 reads it from the run directory on resume and
    hands it to the others), so on a machine with CUDA it carries both backends: NCCL for tensors on the
    GPU, gloo for tensors on the CPU. Returns the ranks and whether this call created the group (and so
    should destroy it)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist(), False
    d = Dist(int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ["WORLD_SIZE"]))
    if dist.is_initialized():
        return d, False
    if torch.cuda.is_available():
        torch.cuda.set_device(d.local_rank)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl")
    else:
        dist.init_process_group(backend="gloo")
    return d, True


def resolve_device(name: str, d: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("training.device=cuda but no CUDA GPU is visible; use training.device=cpu")
        return torch.device("cuda", d.local_rank)
    return torch.device("cpu")


def device_name(device: torch.device) -> str:
    """The accelerator's name ("NVIDIA H100 80GB HBM3"), or the CPU's model from /proc/cpuinfo."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} threads)"
    except OSError:
        pass
    return "CPU"


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


EXIT_PREEMPTED = 75  # exit status of a run stopped by a signal after its checkpoint: "preempted, resume me"
#                      (EX_TEMPFAIL of sysexits.h: a temporary failure; the same command goes on)
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, a scheduler's preemption, a closed terminal


def silence(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what is still buffered for it, and what is written to it
    later (by this program or a library), is dropped instead of failing again, at exit too."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)


class Console:
    """The run's lines on stdout (rank 0), while stdout can be written. A closed pipe (``| head``), a dead
    ``tee`` or a closed terminal loses the lines, never the run: the log goes on in metrics.jsonl and the
    run to its end (and its checkpoint)."""

    def __init__(self, enabled: bool):
        self.enabled, self.lost = enabled, False

    def __call__(self, *args, **kwargs) -> None:
        if not self.enabled or self.lost:
            return
        try:
            print(*args, **kwargs)
        except OSError:  # EPIPE, or EIO from a terminal that went away
            self.lost = True
            silence(sys.stdout)


class StopFlag:
    """Set by SIGINT, SIGTERM or SIGHUP; the loop then checkpoints and exits (status EXIT_PREEMPTED). One process
    reads it after every step; under DDP the processes agree on it at the next log, evaluation or
    checkpoint step."""

    def __init__(self):
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def peak_memory(device: torch.device) -> tuple[int | None, int]:
    """(peak bytes allocated on the accelerator by this process, None on CPU; peak resident bytes of this
    process on the host, from getrusage: kilobytes on Linux)."""
    import resource
    device_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return device_peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 2**30:.2f} GiB"
