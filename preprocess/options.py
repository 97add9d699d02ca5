"""Build options: what the command line resolves to, and which of them shape the output.

The build compares the output-shaping options with those a directory was built (or partly built)
with, to resume, to say a dataset is up to date, or to refuse a mismatch; ``merge`` compares them
across parts. Options that only change speed, chatter or patience (``workers``, ``quiet``,
``encoder``: every engine gives HF's ids or is not used; ``network_patience``, ``network_timeout``)
are left out, so the output is the same whatever they are.
"""
from __future__ import annotations

import os
import re
from dataclasses import MISSING, asdict, dataclass, field, fields

from shards import PipelineError

DEFAULT_SHARD_TOKENS = 100_000_000
DEFAULT_SAMPLE_BYTES = 1_000_000_000
DEFAULT_VAL_FRACTION = 0.005

# Options recorded in the manifest but not compared on resume: a build that failed on a bad file may
# be resumed with --skip-bad-files, and a build that succeeded without it met no bad file, so the
# output is the same either way.
RESUME_NEUTRAL = ("skip_bad_files",)


class OptionError(PipelineError):
    """A command-line value that cannot be used; the message says what is expected."""


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's or job's CPU set), not the machine's count."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class BuildOptions:
    out: str
    inputs: list[str] = field(default_factory=list)
    input_list: str | None = None
    fallback_input: str | None = None
    text_field: str = "text"
    txt_blocks: bool = False
    tokenizer: str | None = None
    vocab_size: int = 32000
    tokenizer_sample_bytes: int = DEFAULT_SAMPLE_BYTES
    encoder: str = "auto"
    workers: int = field(default_factory=lambda: usable_cpus())
    val_fraction: float = DEFAULT_VAL_FRACTION
    shard_tokens: int = DEFAULT_SHARD_TOKENS
    max_tokens: int | None = None
    mix: str | None = None             # SOURCE=SHARE,... of --max-tokens (see preprocess/plan.py)
    source_pattern: str | None = None  # a regex with one group: an input's source
    seed: int = 0                      # the seeded file order of a sampled plan
    in_order: bool = False             # read the inputs in the order given until --max-tokens
    dtype: str = "uint16"
    part: str | None = None
    skip_bad_files: bool = False
    verify_cut_files: bool = False     # read each file cut at its budget on to the end of its gzip member
    network_patience: float = 600.0    # seconds a URL may give no byte, through retries, before the build stops
    network_timeout: float = 60.0      # seconds without a byte (or below the rate floor) that make a stall
    overwrite: bool = False
    quiet: bool = False
    tokenizer_only: bool = False
    show_plan: bool = False            # --plan: print the plan and stop

    def validate(self) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise OptionError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
        if self.shard_tokens <= 0:
            raise OptionError(f"--shard-tokens must be positive, got {self.shard_tokens}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise OptionError(f"--max-tokens must be positive, got {self.max_tokens}")
        if self.workers < 1:
            raise OptionError(f"--workers must be at least 1, got {self.workers}")
        if self.tokenizer_sample_bytes <= 0:
            raise OptionError(f"--tokenizer-sample-bytes must be positive, got {self.tokenizer_sample_bytes}")
        if self.part is not None:
            parse_part(self.part)
        if self.seed < 0:
            raise OptionError(f"--seed must be a whole number >= 0, got {self.seed}")
        if self.mix is not None and self.max_tokens is None:
            raise OptionError("--mix needs --max-tokens: its shares are shares of it")
        if self.mix is not None and self.in_order:
            raise OptionError("--mix and --in-order exclude each other: --in-order reads the inputs in the order given")
        if not self.network_patience > 0 or not self.network_timeout > 0:
            raise OptionError(f"--network-patience and --network-timeout are seconds > 0, got "
                              f"{self.network_patience:g} and {self.network_timeout:g}")

    def retry(self):
        """The patience of this build's HTTP requests (``preprocess.http.Retry``)."""
        from preprocess.http import Retry
        backoff = min(1.0, self.network_patience / 20)  # a few tries even within a short patience
        return Retry(patience_s=self.network_patience, timeout_s=self.network_timeout, backoff_s=backoff,
                     max_backoff_s=min(60.0, max(backoff, self.network_patience / 10)))

    def shaping(self) -> dict:
        """The options that shape the output, as recorded in the manifest's ``options``."""
        d = asdict(self)
        for key in ("out", "workers", "quiet", "overwrite", "encoder", "tokenizer_only", "show_plan",
                    "network_patience", "network_timeout"):
            d.pop(key)
        # --tokenizer is identified by the file's fingerprint, recorded beside it in the manifest;
        # the vocabulary size then comes from the file, so the requested one does not matter.
        if self.tokenizer is not None:
            d["vocab_size"] = None
            d["tokenizer_sample_bytes"] = None
        return d


def compared(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in RESUME_NEUTRAL}


def differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """Human-readable differences between two ``shaping()`` dicts, as command-line flags. An option
    missing from ``old`` (a dataset built before the option existed) counts as its default."""
    defaults = {f.name: f.default for f in fields(BuildOptions) if f.default is not MISSING}
    out = []
    for key in sorted(set(compared(old)) | set(compared(new))):
        if key in ignore or old.get(key, defaults.get(key)) == new.get(key, defaults.get(key)):
            continue
        out.append(f"{flag(key)} {old.get(key)!r} then, {new.get(key)!r} now")
    return out


def flag(key: str) -> str:
    return "--input" if key == "inputs" else "--" + key.replace("_", "-")


_SUFFIX = {"k": 10**3, "m": 10**6, "b": 10**9, "g": 10**9, "t": 10**12}


def parse_count(text: str) -> int:
    """A positive whole number written as 5000000, 5e9, 100M, 1.5B or 32k."""
    s = str(text).strip().replace("_", "").replace(",", "")
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)([kKmMbBgGtT]?)", s)
    if not m:
        raise OptionError(f"{text!r} is not a count; write e.g. 5000000, 5e9, 100M, 1.5B or 32k")
    value = float(m.group(1)) * _SUFFIX.get(m.group(2).lower(), 1)
    if value != int(value) or value <= 0:
        raise OptionError(f"{text!r} is not a positive whole number")
    return int(value)


def parse_part(text: str) -> tuple[int, int]:
    """``I/N`` with 1 <= I <= N: this machine builds the I-th of N parts."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
        raise OptionError(f"--part {text!r} must be I/N with 1 <= I <= N, e.g. --part 2/8")
    return int(m.group(1)), int(m.group(2))


def select_part(items: list, part: str | None) -> list:
    """The deterministic 1/N of ``items`` for ``--part I/N``: every N-th, starting at the I-th.

    Striding (rather than contiguous blocks) spreads big and small files of a sorted list evenly.
    """
    if part is None:
        return items
    i, n = parse_part(part)
    return items[i - 1::n]
