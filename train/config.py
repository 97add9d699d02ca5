"""Typed training configuration: dataclasses, JSON presets, and strict ``--set section.key=value`` overrides.

A config has four sections (``model``, ``training``, ``data``, ``logging``). Presets live in
``train/configs/NAME.json`` and list only what differs from the defaults below. Every key is checked:
an unknown section or key is an error naming the valid ones, values are parsed to the field's type
(an int is accepted where a float is expected), and every field's value must lie in its valid range
(:data:`RULES`, one row per key; :data:`JOINT_RULES` for keys that constrain each other). A bad
config is one error listing every offending key with its value and valid range. ``model.vocab_size``
is never set by hand: the trainer takes it from the dataset manifest. The resolved config is saved
as ``RUN/config.json``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shards import PipelineError
from train.model import ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"
OPTIMIZERS = ("adamw", "muon")  # training.optimizer (train/optim.py)
SCHEDULES = ("cosine", "wsd")   # training.schedule


class ConfigError(PipelineError):
    """A bad config file or override; the message names the key and what is valid."""


@dataclass
class TrainingConfig:
    max_steps: int = 1000          # optimizer steps; 0 = derive from token_budget
    token_budget: int = 0          # tokens to train on when max_steps is 0
    batch_size: int = 16           # sequences per micro-batch per process
    grad_accum_steps: int = 1      # micro-batches per optimizer step per process; follows from global_batch_size
    global_batch_size: int = 0     # sequences per optimizer step, all processes together; 0 = batch_size x
    #                                grad_accum_steps x processes when the run starts. Fixed for the life of a run
    lr: float = 6e-4               # peak learning rate
    min_lr_ratio: float = 0.1      # cosine decay floor, as a fraction of lr
    warmup_steps: int = 100
    weight_decay: float = 0.1      # on matrices only (AdamW's or Muon's); never biases, norms or embeddings
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0         # max global gradient L2 norm; 0 = no clipping
    eval_interval: int = 200       # steps between evaluations; 0 = only at the end
    eval_windows: int = 64         # fixed validation windows (seq_len + 1 tokens each) per evaluation
    early_stop_patience: int = 0   # stop after this many evaluations without a new best; 0 = never
    checkpoint_interval: int = 500
    keep_checkpoints: int = 3      # the newest K are kept, plus the best
    log_interval: int = 10
    seed: int = 1337
    device: str = "auto"           # auto, cpu, cuda
    precision: str = "auto"        # auto, fp32, bf16, fp16
    compile: bool = False          # torch.compile the model
    # the optimizer and schedule (train/optim.py; README "Training recipes")
    optimizer: str = "adamw"       # adamw, or muon: Muon on the blocks' matrices, AdamW on the rest
    schedule: str = "cosine"       # cosine, or wsd: warmup, stable at the peak, linear decay at the end
    decay_fraction: float = 0.2    # wsd: the final fraction of the steps over which the lr decays
    muon_lr: float = 0.02          # optimizer=muon: peak lr of the blocks' matrices (torch.optim.Muon's lr)
    muon_momentum: float = 0.95    # optimizer=muon: Muon's (Nesterov) momentum
    embed_lr: float = 6e-4         # optimizer=muon: AdamW's peak lr for the token (and position) embedding
    head_lr: float = 6e-4          # optimizer=muon: AdamW's peak lr for an untied head (model.untied_head)
    # what an evaluation measures besides val loss and bits per byte (README "Reading a run")
    eval_tasks: list[str] = field(default_factory=list)  # task files, [KIND:]PATH (train/tasks.py), e.g. hellaswag:F
    eval_tasks_interval: int = 0   # steps between task evaluations (a multiple of eval_interval); 0 = every one
    sample_prompts: list[str] = field(default_factory=list)  # prompts completed at each evaluation; [] = a default set
    sample_tokens: int = 32        # new tokens per sample (greedy); 0 = no samples


@dataclass
class DataConfig:
    prefetch: int = 4              # batches the background thread prepares ahead


@dataclass
class LoggingConfig:
    tensorboard: bool = False      # also write TensorBoard event files to RUN/tensorboard
    wandb: bool = False            # also log to Weights & Biases (needs `pip install wandb`)
    wandb_project: str = "memmap-gpt"
    run_name: str = ""             # defaults to the run directory's name


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> Config:
        """A saved, resolved config (vocab_size included), e.g. RUN/config.json."""
        cfg = cls()
        merge(cfg, d, source, resolved=True)
        return cfg

    def validate(self) -> None:
        """Raise one ConfigError naming every key whose value is outside its valid range (RULES, JOINT_RULES)."""
        problems = []
        for key, (check, valid) in RULES.items():
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            if not check(value):
                problems.append(f"{key}={value!r}: must be {valid}")
        if not problems:  # the joint rules assume each key is valid on its own
            problems = [message(self) for holds, message in JOINT_RULES if not holds(self)]
        if problems:
            raise ConfigError(problems[0] if len(problems) == 1 else
                              f"{len(problems)} config values are invalid:\n  " + "\n  ".join(problems))


# ---------------------------------------------------------------------------------------------------
# the valid range of every key: (check, what is valid, in words)

Rule = tuple[Callable[[Any], bool], str]


def _fmt(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def integer(lo: int, hi: int | None = None) -> Rule:
    if hi is None:
        return (lambda v: v >= lo), f"an integer >= {lo}"
    return (lambda v: lo <= v <= hi), f"an integer in [{lo}, {hi}]"


def number(lo: float, hi: float | None = None, above: bool = False, below: bool = False) -> Rule:
    """A finite number >= lo (> lo if ``above``) and <= hi (< hi if ``below``)."""
    def check(v: float) -> bool:
        return (math.isfinite(v) and (v > lo if above else v >= lo)
                and (hi is None or (v < hi if below else v <= hi)))
    if hi is None:
        return check, f"a finite number {'>' if above else '>='} {_fmt(lo)}"
    return check, f"a number in {'(' if above else '['}{_fmt(lo)}, {_fmt(hi)}{')' if below else ']'}"


def one_of(*choices: str) -> Rule:
    return (lambda v: v in choices), f"one of {', '.join(choices)}"


BOOLEAN: Rule = (lambda v: isinstance(v, bool), "true or false")
TEXT: Rule = (lambda v: isinstance(v, str), "a string")
NAME: Rule = (lambda v: isinstance(v, str) and v.strip() != "", "a non-empty string")

RULES: dict[str, Rule] = {
    "model.vocab_size": integer(0),                 # 0 until the trainer takes it from the manifest
    "model.seq_len": integer(1),
    "model.n_layers": integer(1),
    "model.d_model": integer(1),
    "model.n_heads": integer(1),
    "model.dropout": number(0, 1, below=True),
    "model.bias": BOOLEAN,
    "model.rope": BOOLEAN,
    "model.rope_theta": number(0, above=True),
    "model.swiglu": BOOLEAN,
    "model.rmsnorm": BOOLEAN,
    "model.grad_checkpointing": BOOLEAN,
    "model.qk_norm": BOOLEAN,
    "model.relu2": BOOLEAN,
    "model.embed_norm": BOOLEAN,
    "model.zero_init": BOOLEAN,
    "model.untied_head": BOOLEAN,
    "model.logit_softcap": number(0),               # 0: off
    "training.max_steps": integer(0),               # 0: from token_budget
    "training.token_budget": integer(0),
    "training.batch_size": integer(1),
    "training.grad_accum_steps": integer(1),
    "training.global_batch_size": integer(0),       # 0: batch_size x grad_accum_steps x processes at the start
    "training.lr": number(0),                       # 0 trains nothing (weights stay put), which tests use
    "training.min_lr_ratio": number(0, 1),
    "training.warmup_steps": integer(0),
    "training.weight_decay": number(0),
    "training.beta1": number(0, 1, below=True),
    "training.beta2": number(0, 1, below=True),
    "training.grad_clip": number(0),                # 0: no clipping
    "training.eval_interval": integer(0),           # 0: only at the end
    "training.eval_windows": integer(1),
    "training.early_stop_patience": integer(0),     # 0: never
    "training.checkpoint_interval": integer(1),
    "training.keep_checkpoints": integer(1),
    "training.log_interval": integer(1),
    "training.seed": integer(0, 2**63 - 1),         # what torch.manual_seed and numpy's SeedSequence both take
    "training.device": one_of("auto", "cpu", "cuda"),
    "training.precision": one_of("auto", "fp32", "bf16", "fp16"),
    "training.compile": BOOLEAN,
    "training.optimizer": one_of(*OPTIMIZERS),
    "training.schedule": one_of(*SCHEDULES),
    "training.decay_fraction": number(0, 1, above=True),  # the share of the steps schedule=wsd decays over
    "training.muon_lr": number(0),
    "training.muon_momentum": number(0, 1, below=True),
    "training.embed_lr": number(0),
    "training.head_lr": number(0),
    "training.eval_tasks": (lambda v: all(item.strip() for item in v), "a list of task files, [KIND:]PATH"),
    "training.eval_tasks_interval": integer(0),     # 0: at every evaluation
    "training.sample_prompts": (lambda v: all(item.strip() for item in v), "a list of non-empty prompts"),
    "training.sample_tokens": integer(0),           # 0: no samples
    "data.prefetch": integer(1),
    "logging.tensorboard": BOOLEAN,
    "logging.wandb": BOOLEAN,
    "logging.wandb_project": NAME,
    "logging.run_name": TEXT,                       # "": the run directory's name
}

JOINT_RULES: list[tuple[Callable[[Config], bool], Callable[[Config], str]]] = [
    (lambda c: c.training.max_steps > 0 or c.training.token_budget > 0,
     lambda c: "set training.max_steps or training.token_budget to a positive number (both are 0)"),
    (lambda c: c.model.d_model % c.model.n_heads == 0,
     lambda c: f"model.d_model ({c.model.d_model}) must be divisible by model.n_heads ({c.model.n_heads})"),
    (lambda c: not (c.model.swiglu and c.model.relu2),
     lambda c: "model.swiglu and model.relu2 are two kinds of MLP; set at most one of them to true"),
    (lambda c: not (c.training.eval_tasks_interval and c.training.eval_interval)
     or c.training.eval_tasks_interval % c.training.eval_interval == 0,
     lambda c: f"training.eval_tasks_interval ({c.training.eval_tasks_interval}) must be a multiple of "
               f"training.eval_interval ({c.training.eval_interval}): tasks are scored at evaluations"),
    (lambda c: not c.model.rope or (c.model.d_model // c.model.n_heads) % 2 == 0,
     lambda c: f"model.rope=true needs an even head size, but model.d_model / model.n_heads = "
               f"{c.model.d_model // c.model.n_heads}; change one of them"),
]


def _section_fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _coerce(value: Any, kind: type | str, where: str) -> Any:
    """``value`` as a field of type ``kind``; strings (from the command line) are parsed. A list of strings
    is given in JSON as a list, on the command line as a JSON list or comma-separated ("" for none)."""
    if kind == "list[str]":
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{where}: {value!r} is not a JSON list ({e})") from None
            else:
                value = [item.strip() for item in text.split(",") if item.strip()]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        raise ConfigError(f"{where}: expected a list of strings (in --set: A,B or a JSON list), got {value!r}")
    kind = {"int": int, "float": float, "bool": bool, "str": str}.get(kind, kind) if isinstance(kind, str) else kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                try:
                    number = float(value)  # "5e9" is an int written as a float
                except ValueError:
                    number = None
                if number is not None and number.is_integer():
                    return int(number)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")


def merge(cfg: Config, d: dict, source: str, resolved: bool = False) -> None:
    """Set the sections and keys of ``d`` on ``cfg``; unknown ones are errors naming the valid keys."""
    if not isinstance(d, dict):
        raise ConfigError(f"{source}: expected a JSON object of sections, got {type(d).__name__}")
    sections = _section_fields(cfg)
    for section, values in d.items():
        if section not in sections:
            raise ConfigError(f"{source}: unknown section {section!r}; valid sections: {', '.join(sections)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be an object of key: value")
        target = getattr(cfg, section)
        for key, value in values.items():
            set_key(target, section, key, value, source, resolved)


def set_key(target, section: str, key: str, value: Any, source: str, resolved: bool = False) -> None:
    fields = _section_fields(target)
    if key not in fields:
        raise ConfigError(f"{source}: unknown key {section}.{key}; valid keys in {section}: "
                          f"{', '.join(fields)}")
    if section == "model" and key == "vocab_size" and not resolved:
        raise ConfigError(f"{source}: model.vocab_size comes from the dataset manifest; do not set it")
    setattr(target, key, _coerce(value, fields[key].type, f"{source}: {section}.{key}"))


def apply_overrides(cfg: Config, overrides: list[str]) -> None:
    """Apply ``section.key=value`` strings (``--set``)."""
    sections = _section_fields(cfg)
    for item in overrides:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. training.lr=3e-4")
        dotted, value = item.split("=", 1)
        section, key = dotted.strip().split(".", 1)
        if section not in sections:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}; valid sections: {', '.join(sections)}")
        set_key(getattr(cfg, section), section, key, value.strip(), f"--set {item!r}")


# ---------------------------------------------------------------------------------------------------
# resuming: the run's own config, and the keys that may change mid-run

# What a resume may change, and why it is safe: none of these changes the model, the data order, the
# optimizer's state or what a logged number means. Every other key is fixed for the life of a run.
MUTABLE_ON_RESUME: dict[str, str] = {
    "training.max_steps": "a longer or shorter run (the schedule's end moves with it)",
    "training.token_budget": "a longer or shorter run (the schedule's end moves with it)",
    "training.decay_fraction": "when schedule=wsd starts its final decay",
    "training.min_lr_ratio": "where the schedule ends",
    "training.eval_interval": "how often to evaluate",
    "training.early_stop_patience": "when to stop early",
    "training.checkpoint_interval": "how often to checkpoint",
    "training.keep_checkpoints": "how many checkpoints to keep",
    "training.log_interval": "how often to log",
    "training.batch_size": "the micro-batch per process (the accumulation follows; the global batch stays)",
    "training.device": "where to train (the state moves with the run)",
    "training.compile": "whether to compile (the same arithmetic)",
    "training.eval_tasks": "what an evaluation scores besides the val loss",
    "training.eval_tasks_interval": "how often tasks are scored",
    "training.sample_prompts": "what an evaluation completes",
    "training.sample_tokens": "how long the samples are",
    "data.prefetch": "how far the loader reads ahead",
    "logging.tensorboard": "where to log",
    "logging.wandb": "where to log",
    "logging.wandb_project": "where to log",
    "logging.run_name": "where to log",
}


@dataclass(frozen=True)
class ConfigRequest:
    """What a command line asks for: ``--config`` (a preset name or JSON file; None for none) and ``--set``.

    For a new run it resolves like :func:`load_config` (None: the built-in defaults). On resume the run's
    own config is the base: with no ``--config`` the ``--set`` overrides apply to it; with one, the preset
    must resolve to the run's config (see :func:`resume_changes`)."""
    preset: str | None = None
    overrides: tuple[str, ...] = ()

    def resolve(self, base: Config | None = None) -> Config:
        """The config asked for; ``base`` is the run's own config when resuming."""
        if base is None or self.preset is not None:
            return load_config(self.preset, list(self.overrides))
        cfg = Config.from_dict(base.to_dict())
        apply_overrides(cfg, list(self.overrides))
        cfg.validate()
        return cfg


def resolve_batch(cfg: Config, world_size: int, new_run: bool) -> None:
    """Fix ``training.global_batch_size`` and derive ``grad_accum_steps`` for ``world_size`` processes.

    A new run's global batch is ``global_batch_size`` if set (then ``grad_accum_steps`` must be its default
    1 or agree), else ``batch_size x grad_accum_steps x world_size``, so every preset keeps its meaning.
    From then on the global batch is the run's: on any number of processes each takes ``batch_size``
    sequences a micro-batch and ``global / (batch_size x world_size)`` micro-batches a step, which must
    divide evenly (ConfigError naming the micro-batches that would)."""
    t = cfg.training
    if t.global_batch_size == 0:
        t.global_batch_size = t.batch_size * t.grad_accum_steps * world_size
        return
    per_micro = t.batch_size * world_size
    accum, left = divmod(t.global_batch_size, per_micro)
    if left or accum == 0:
        fits = [b for b in range(1, t.global_batch_size // world_size + 1)
                if t.global_batch_size % (b * world_size) == 0]
        worlds = [w for w in range(1, t.global_batch_size + 1) if t.global_batch_size % (t.batch_size * w) == 0]
        remedy = (f"set training.batch_size to one of {', '.join(map(str, fits))} (--set training.batch_size=B)"
                  if fits else f"no micro-batch splits it evenly on {world_size} process(es)")
        raise ConfigError(
            f"training.global_batch_size={t.global_batch_size} sequences a step cannot be split into micro-batches of "
            f"training.batch_size={t.batch_size} on {world_size} process(es): {remedy}; or run on "
            f"{' or '.join(map(str, worlds))} process(es), which split it with this micro-batch")
    if new_run and t.grad_accum_steps not in (1, accum):
        raise ConfigError(
            f"training.grad_accum_steps={t.grad_accum_steps} disagrees with training.global_batch_size="
            f"{t.global_batch_size} (batch_size {t.batch_size} x {world_size} process(es) x accumulation {accum}); "
            f"set only one of them")
    t.grad_accum_steps = accum


def flat(cfg: Config) -> dict[str, Any]:
    """{"section.key": value} of every key."""
    return {f"{section}.{key}": value for section, values in cfg.to_dict().items() for key, value in values.items()}


def resume_changes(saved: Config, requested: Config, run_dir: str) -> list[dict]:
    """The keys ``requested`` changes from the config a run was saved with, as ``[{"key", "from", "to"}]``.

    Raises one ConfigError naming every key that may not change mid-run (see MUTABLE_ON_RESUME), with
    both values and what to do."""
    before, after = flat(saved), flat(requested)
    # the accumulation is derived again for this number of processes (resolve_batch): not a change of its own
    changes = [{"key": k, "from": before[k], "to": after[k]} for k in before
               if before[k] != after[k] and k != "training.grad_accum_steps"]
    refused = [c for c in changes if c["key"] not in MUTABLE_ON_RESUME]
    if refused:
        rows = "; ".join(f"{c['key']}: the run has {c['from']!r}, this command asks for {c['to']!r}" for c in refused)
        raise ConfigError(
            f"refusing to resume {run_dir} with other settings ({rows}). A run continues with its own config "
            f"({run_dir}/config.json): rerun without --config and without these --set options. Keys that may "
            f"change mid-run: {', '.join(MUTABLE_ON_RESUME)}. To train with other settings, start a new run "
            f"(another --out), e.g. from these weights with --init-from {run_dir}")
    return changes


def preset_names() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(name_or_file: str | None = None, overrides: list[str] = ()) -> Config:
    """The defaults, then a preset (a name in train/configs/ or a JSON file path), then overrides."""
    cfg = Config()
    if name_or_file:
        path = Path(name_or_file)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{name_or_file}.json"
        if not path.exists():
            raise ConfigError(f"config {name_or_file!r} is neither a file nor a preset; presets: "
                              f"{', '.join(preset_names())}")
        if path.is_dir():
            raise ConfigError(f"--config {name_or_file}: {path} is a directory; pass a JSON file or a preset name "
                              f"({', '.join(preset_names())})")
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path} is not UTF-8 text (byte {e.start}: {e.reason}); a config is a JSON "
                              f"file, e.g. train/configs/demo.json") from None
        except OSError as e:
            raise ConfigError(f"cannot read --config {path}: {e.strerror or e}") from None
        merge(cfg, d, str(path))
    apply_overrides(cfg, list(overrides))
    cfg.validate()
    return cfg
