"""Typed training configuration: dataclasses, JSON presets, and strict ``--set section.key=value`` overrides.

A config has four sections (``model``, ``training``, ``data``, ``logging``). Presets live in
``train/configs/NAME.json`` and list only what differs from the defaults below. Every key is checked:
an unknown section or key is an error naming the valid ones, and values are parsed to the field's
type (an int is accepted where a float is expected). ``model.vocab_size`` is never set by hand: the
trainer takes it from the dataset manifest. The resolved config is saved as ``RUN/config.json``.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from train.model import ModelConfig

CONFIG_DIR = Path(__file__).parent / "configs"
OPTIMIZERS = ("adamw", "muon")  # training.optimizer (train/optim.py)
SCHEDULES = ("cosine", "wsd")   # training.schedule


class ConfigError(Exception):
    """A bad config file or override; the message names the key and what is valid."""


@dataclass
class TrainingConfig:
    max_steps: int = 1000          # optimizer steps; 0 = derive from token_budget
    token_budget: int = 0          # tokens to train on when max_steps is 0
    batch_size: int = 16           # sequences per micro-batch per process
    grad_accum_steps: int = 1      # micro-batches per optimizer step (per process)
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
    def from_dict(cls, d: dict, source: str = "config") -> "Config":
        """A saved, resolved config (vocab_size included), e.g. RUN/config.json."""
        cfg = cls()
        merge(cfg, d, source, resolved=True)
        return cfg

    def validate(self) -> None:
        t = self.training
        choices = {"device": ("auto", "cpu", "cuda"), "precision": ("auto", "fp32", "bf16", "fp16")}
        for key, valid in choices.items():
            if getattr(t, key) not in valid:
                raise ConfigError(f"training.{key}={getattr(t, key)!r} is not one of {', '.join(valid)}")
        positive = ["batch_size", "grad_accum_steps", "log_interval", "checkpoint_interval", "eval_windows"]
        for key in positive:
            if getattr(t, key) <= 0:
                raise ConfigError(f"training.{key} must be positive, got {getattr(t, key)}")
        if t.max_steps <= 0 and t.token_budget <= 0:
            raise ConfigError("set training.max_steps or training.token_budget to a positive number")
        for key in ("seq_len", "n_layers", "d_model", "n_heads"):
            if getattr(self.model, key) <= 0:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self.model, key)}")
        if self.model.d_model % self.model.n_heads:
            raise ConfigError(f"model.d_model ({self.model.d_model}) must be divisible by model.n_heads "
                              f"({self.model.n_heads})")
        self._validate_recipe()

    def _validate_recipe(self) -> None:
        """The optimizer, schedule and model options of the modern recipe."""
        t, m = self.training, self.model
        for key, valid in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES)):
            if getattr(t, key) not in valid:
                raise ConfigError(f"training.{key}={getattr(t, key)!r} is not one of {', '.join(valid)}")
        if not 0 < t.decay_fraction <= 1:
            raise ConfigError(f"training.decay_fraction={t.decay_fraction} must be in (0, 1]: the share of the "
                              f"steps over which schedule=wsd decays the lr")
        for key in ("muon_lr", "embed_lr", "head_lr"):
            if getattr(t, key) < 0:
                raise ConfigError(f"training.{key} must be 0 or more, got {getattr(t, key)}")
        if m.swiglu and m.relu2:
            raise ConfigError("model.swiglu and model.relu2 are two kinds of MLP; set at most one of them to true")
        if m.logit_softcap < 0:
            raise ConfigError(f"model.logit_softcap must be 0 (off) or positive, got {m.logit_softcap}")


def _section_fields(obj) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(obj)}


def _coerce(value: Any, kind: type | str, where: str) -> Any:
    """``value`` as a field of type ``kind``; strings (from the command line) are parsed."""
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
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON: {e}") from None
        merge(cfg, d, str(path))
    apply_overrides(cfg, list(overrides))
    cfg.validate()
    return cfg
