"""The weights a new run starts from (``python -m train --init-from PATH``): weights only, never the
source's optimizer, schedule or data position.

``PATH`` is one of:

* a run directory: its **best** checkpoint (lowest val loss; the latest when the run never evaluated),
  the one ``tools/export_hf.py``, ``train/generate.py`` and ``train/evaluate.py`` take by default, so
  "start from runs/base" starts from the model those tools show. Pass ``which="latest"`` or the
  checkpoint directory itself for another;
* a checkpoint directory (``RUN/checkpoints/step_XXXXXXXX``), its files checked against the sha256
  recorded when it was written, as a resume checks them;
* a ``transformers`` model directory: what ``tools/export_hf.py`` writes, or a stock
  ``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``NanoChatForCausalLM`` checkpoint, read back through
  ``train/hf.py`` (the inverse of the export), and accepted only when our model's logits equal its
  logits on random tokens to within ``train.hf.DEFAULT_TOLERANCE``. A config our GPT cannot compute
  is refused naming each option and why.

Use::

    init = load_init_weights("runs/base")              # or a checkpoint dir, or a transformers dir
    init.check_dataset(data_dir, manifest)              # the source's tokenizer is the dataset's, same vocab
    init.check_model(cfg.model)                         # the new run's model config fits the weights
    model.load_state_dict(init.state_dict)
    ...record init.description in the run: where it started from

Both checks raise :class:`InitFromError` (a ``shards.PipelineError``) with one line naming both sides.
"""
from __future__ import annotations

import dataclasses
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

import shards
import tokenizer as tk
from train import hf
from train.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_NAME,
    STATE_NAME,
    WEIGHTS_NAME,
    clean_state_dict,
    find_checkpoint,
    read_index,
    read_model_config,
    read_part,
    reading,
    recorded_checksums,
    verify,
)
from train.model import GPT, ModelConfig

# Model keys a new run may set differently from the weights it starts from: training choices, and
# zero_init, which only decides initial weights (the source's replace them).
FREE_MODEL_KEYS = ("dropout", "grad_checkpointing", "zero_init")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".index.json")  # the weight files of a transformers directory


class InitFromError(shards.PipelineError):
    """Weights a run cannot start from, or that do not fit its data or model; the message says what to do."""


def model_mismatches(source: ModelConfig, target: ModelConfig) -> list[tuple[str, object, object]]:
    """(key, source's value, target's value) for every model key where ``target`` computes something other
    than the weights of ``source``: all keys but FREE_MODEL_KEYS, and but ``seq_len`` with RoPE (no weight
    depends on it there; positions past the source's are new to the model, the user's choice)."""
    free = set(FREE_MODEL_KEYS) | ({"seq_len"} if source.rope and target.rope else set())
    return [(f.name, getattr(source, f.name), getattr(target, f.name)) for f in dataclasses.fields(ModelConfig)
            if f.name not in free and getattr(source, f.name) != getattr(target, f.name)]


@dataclass
class InitWeights:
    """Weights to start from, in our names, with what the trainer needs to check they fit.

    ``model_config``: the source's model config (a transformers config translated). ``state_dict``: the
    weights for ``GPT(model_config)`` (fp32 for a transformers source; as saved for ours), on the
    device asked for. ``tokenizer_sha256``: the fingerprint of the tokenizer the weights were trained
    with (``tokenizer.fingerprint``, what a manifest's ``tokenizer_sha256`` holds), None when it cannot be
    known, and ``tokenizer_note`` then says why. ``tokenizer_path``: that tokenizer.json when there is
    one. ``description``: a JSON-able record of where the run started from (see ``load_init_weights``).
    """

    model_config: ModelConfig
    state_dict: dict[str, torch.Tensor]
    tokenizer_sha256: str | None
    tokenizer_path: Path | None
    description: dict
    tokenizer_note: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        return self.description["path"]

    def check_dataset(self, data_dir: str | os.PathLike, manifest: dict) -> None:
        """InitFromError unless the dataset was encoded with the source's tokenizer and its vocabulary is the
        model's: token ids would mean other things to the weights. Call it before ``check_model``."""
        data_dir = Path(data_dir)
        theirs = manifest["tokenizer_sha256"]
        if self.tokenizer_sha256 is None:
            raise InitFromError(f"cannot check that --init-from {self.source} was trained with the tokenizer of "
                                f"{data_dir} (fingerprint {theirs[:16]}…): {self.tokenizer_note}")
        if self.tokenizer_sha256 != theirs:
            where = f" ({self.tokenizer_path})" if self.tokenizer_path else ""
            difference = tokenizer_difference(self.tokenizer_path, data_dir / shards.TOKENIZER_NAME)
            raise InitFromError(
                f"--init-from {self.source} was trained with tokenizer {self.tokenizer_sha256[:16]}…{where}, but "
                f"{data_dir} was encoded with tokenizer {theirs[:16]}… ({data_dir / shards.TOKENIZER_NAME})"
                f"{difference}: token ids would mean other things to the weights. Encode the corpus with the "
                f"source's tokenizer (python -m preprocess --tokenizer FILE), or start from weights trained with "
                f"the dataset's")
        if self.model_config.vocab_size != manifest["vocab_size"]:
            raise InitFromError(
                f"--init-from {self.source} has {self.model_config.vocab_size:,} token embeddings (model.vocab_size), "
                f"but {data_dir}'s manifest says {manifest['vocab_size']:,} tokens, although the tokenizer is the "
                f"same: the model's vocabulary is padded or cut. Start from weights whose vocab_size is the "
                f"tokenizer's")

    def check_model(self, cfg: ModelConfig) -> None:
        """InitFromError naming every model key where ``cfg`` (the new run's) differs from the weights'."""
        differ = model_mismatches(self.model_config, cfg)
        if differ:
            keys = "; ".join(f"model.{k} is {_shown(a)} there, {_shown(b)} here" for k, a, b in differ)
            raise InitFromError(f"the new run's model does not fit the weights of --init-from {self.source}: {keys}. "
                                f"Leave these keys out of --config and --set (the run takes the source's model), "
                                f"or start from weights of this shape")


def _listed(names: list[str], n: int = 4) -> str:
    return ", ".join(names[:n]) + (" ..." if len(names) > n else "")


def _shown(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def load_init_weights(path: str | os.PathLike, device: str | torch.device = "cpu",
                      which: str = "best") -> InitWeights:
    """The weights at ``path`` (a run, a checkpoint or a transformers directory) as an InitWeights.

    ``which`` picks a run directory's checkpoint ("best", falling back to "latest"; or "latest").
    ``description`` holds: ``path`` (as resolved), ``kind`` ("checkpoint" or "transformers"),
    ``weights_sha256`` ({file name: sha256} of the weight files read), ``tokenizer_sha256`` and
    ``notes`` (what the conversion decided, e.g. "every bias is exactly zero: read as model.bias=false");
    for ours also ``checkpoint``, ``step`` and ``tokens``; for transformers ``architecture`` and
    ``max_abs_logit_diff`` (our logits against its, on random tokens). Raises InitFromError,
    CheckpointError (a damaged or incomplete checkpoint) or ConversionError (a transformers model our
    GPT cannot compute), each a shards.PipelineError.
    """
    path = Path(path)
    if not path.exists():
        raise InitFromError(f"--init-from {path} does not exist; pass a run directory, one of its checkpoints/"
                            f"step_* directories, or a transformers model directory")
    if not path.is_dir():
        raise InitFromError(f"--init-from {path} is a file; pass the directory that holds it (a checkpoint or a "
                            f"transformers model directory) or a run directory")
    if _transformers_config(path) is not None:
        init = _from_transformers(path)
    elif (path / CHECKPOINT_DIR).is_dir() or (path / WEIGHTS_NAME).exists():
        init = _from_checkpoint(path, which)
    else:
        raise InitFromError(f"--init-from {path} is neither a run directory (no {CHECKPOINT_DIR}/), a checkpoint "
                            f"directory (no {WEIGHTS_NAME}) nor a transformers model directory (no {CONFIG_NAME} "
                            f"with a model_type)")
    init.state_dict = {k: v.to(device) for k, v in init.state_dict.items()}
    init.description["notes"] = init.notes
    return init


# ---------------------------------------------------------------------------------------------------
# a run or checkpoint directory

def _from_checkpoint(path: Path, which: str) -> InitWeights:
    ckpt = find_checkpoint(path, which)
    notes = []
    if not verify(ckpt, [WEIGHTS_NAME, CONFIG_NAME, STATE_NAME]):
        notes.append(f"{ckpt} was written before checkpoints recorded checksums: its weights are unverified")
    cfg = read_model_config(ckpt)
    index = read_index(ckpt)
    parts = index["parts"]
    state = read_part(ckpt, "train_state", index) if "train_state" in parts else {}
    fingerprints = read_part(ckpt, "fingerprints", index) if "fingerprints" in parts else {}
    with reading(ckpt / WEIGHTS_NAME):
        sd = clean_state_dict(load_file(str(ckpt / WEIGHTS_NAME), device="cpu"))
        _check_fits(sd, cfg, ckpt / WEIGHTS_NAME)
    digests = recorded_checksums(ckpt) or {}
    weights_sha = digests.get(WEIGHTS_NAME) or shards.sha256_file(ckpt / WEIGHTS_NAME)

    # the run's tokenizer.json (copied from its dataset) and the fingerprint the checkpoint recorded
    run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else None
    tok_path = run_dir / shards.TOKENIZER_NAME if run_dir and (run_dir / shards.TOKENIZER_NAME).is_file() else None
    recorded = fingerprints.get("tokenizer_fingerprint")
    file_sha = _fingerprint(tok_path) if tok_path else None
    if recorded and file_sha and recorded != file_sha:
        raise InitFromError(f"{tok_path} has fingerprint {file_sha[:16]}…, but {ckpt} was trained with tokenizer "
                            f"{recorded[:16]}… ({STATE_NAME}): the run directory was changed by hand. Restore the "
                            f"dataset's tokenizer.json there")
    sha = recorded or file_sha
    note = "" if sha else (f"{ckpt / STATE_NAME} records no tokenizer fingerprint and no run directory around it holds "
                           f"a {shards.TOKENIZER_NAME}; pass the run directory, or put its tokenizer.json beside "
                           f"{CHECKPOINT_DIR}/")
    description = {"path": str(path.resolve()), "kind": "checkpoint", "checkpoint": str(ckpt.resolve()),
                   "step": state.get("step"), "tokens": state.get("tokens"),
                   "weights_sha256": {WEIGHTS_NAME: weights_sha}, "tokenizer_sha256": sha}
    return InitWeights(cfg, sd, sha, tok_path, description, note, notes)


def _check_fits(sd: dict[str, torch.Tensor], cfg: ModelConfig, source: Path) -> None:
    """The weights' names and shapes are those of GPT(cfg) (built on the meta device: no memory, no init)."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
    got = {k: tuple(v.shape) for k, v in sd.items()}
    if got != expected:
        wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
        raise InitFromError(f"{source} does not hold the weights of the model its {CONFIG_NAME} describes "
                            f"({_listed(wrong)} differ or are missing); "
                            f"the checkpoint was changed by hand. Use another checkpoint of the run")


# ---------------------------------------------------------------------------------------------------
# a transformers model directory

def _transformers_config(path: Path) -> dict | None:
    """The parsed config.json of a transformers model directory (it names a model_type), else None; our run
    and checkpoint directories have a config.json too, without one."""
    config = path / CONFIG_NAME
    if not config.is_file():
        return None
    try:
        spec = json.loads(config.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InitFromError(f"{config} is not valid JSON ({e}); restore it from a copy") from None
    return spec if isinstance(spec, dict) and "model_type" in spec else None


def _from_transformers(path: Path) -> InitWeights:
    transformers = hf.require_transformers()
    transformers.utils.logging.disable_progress_bar()
    spec = _transformers_config(path)
    try:
        arch = hf.model_type_of(spec.get("model_type"))
        cls = getattr(transformers, hf.CLASSES[arch])
        with _reading_transformers(path, "config.json"):
            config = cls.config_class.from_pretrained(str(path), local_files_only=True)
        hf.config_from_transformers(config)  # refuses options we do not compute before any weight is read
        with _reading_transformers(path, "weights"):
            model, info = cls.from_pretrained(str(path), config=config, dtype=torch.float32, local_files_only=True,
                                              output_loading_info=True)
        missing = sorted(info["missing_keys"]) + sorted(str(k) for k in info.get("mismatched_keys", ()))
        if missing:
            raise InitFromError(f"the weights in {path} lack {_listed(missing)}, which {cls.__name__} needs; the "
                                f"directory is incomplete or holds another class (its config.json says "
                                f"architectures {spec.get('architectures')})")
        ours, notes, diff = hf.from_transformers(model)
    except hf.ConversionError as e:
        raise hf.ConversionError(f"--init-from {path}: {e}") from None
    unexpected = sorted(info["unexpected_keys"])
    if unexpected:
        notes.append(f"weights {cls.__name__} does not use were left out: {_listed(unexpected)}")

    tok_path = path / shards.TOKENIZER_NAME
    if tok_path.is_file():
        sha, note = _fingerprint(tok_path), ""
    else:
        tok_path, sha = None, None
        others = sorted(p.name for p in path.iterdir() if p.name in ("vocab.json", "merges.txt", "tokenizer.model",
                                                                     "tokenizer_config.json", "vocab.txt"))
        note = (f"{path} has no {shards.TOKENIZER_NAME}" + (f" (only {', '.join(others)})" if others else "") +
                "; put the tokenizer.json the model was trained with there (transformers: "
                "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR) writes one)")
    files = {p.name: shards.sha256_file(p) for p in sorted(path.iterdir())
             if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES)}
    description = {"path": str(path.resolve()), "kind": "transformers", "architecture": cls.__name__,
                   "weights_sha256": files, "tokenizer_sha256": sha, "max_abs_logit_diff": diff}
    sd = {k: v.detach() for k, v in ours.state_dict().items()}
    return InitWeights(ours.cfg, sd, sha, tok_path, description, note, notes)


@contextmanager
def _reading_transformers(path: Path, what: str):
    """Report what transformers cannot load (it raises many kinds of error) as an InitFromError naming it."""
    try:
        yield
    except shards.PipelineError:
        raise
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise InitFromError(f"transformers cannot read the {what} of {path} ({type(e).__name__}: {first}); the "
                            f"directory is damaged or incomplete: restore it from a copy") from None


# ---------------------------------------------------------------------------------------------------
# tokenizers

def _fingerprint(path: Path) -> str:
    """tokenizer.fingerprint of ``path`` (what a manifest's tokenizer_sha256 holds)."""
    try:
        return tk.fingerprint(path)
    except (ValueError, UnicodeDecodeError) as e:
        raise InitFromError(f"{path} is not a tokenizer.json ({e}); restore it from a copy") from None


def _vocab_size(spec: dict) -> int:
    """Tokens of a tokenizer.json: its model's vocabulary and the added tokens outside it."""
    vocab = (spec.get("model") or {}).get("vocab") or {}
    ids = set(vocab.values()) if isinstance(vocab, dict) else set(range(len(vocab)))
    return len(ids | {t.get("id") for t in spec.get("added_tokens") or []})


def tokenizer_difference(a: Path | None, b: Path) -> str:
    """How two tokenizer.json files differ, as a clause to append to a message ("" when one is missing):
    their sizes when they differ, and the sections (``model.merges``, ``pre_tokenizer``...) that differ."""
    if a is None or not b.is_file():
        return ""
    try:
        sa, sb = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
    except (ValueError, UnicodeDecodeError):
        return ""
    parts = []
    if _vocab_size(sa) != _vocab_size(sb):
        parts.append(f"{_vocab_size(sa):,} tokens against {_vocab_size(sb):,}")
    sections = []
    for key in sorted(set(sa) | set(sb)):
        if key == "model" and isinstance(sa.get(key), dict) and isinstance(sb.get(key), dict):
            sections += [f"model.{k}" for k in sorted(set(sa[key]) | set(sb[key])) if sa[key].get(k) != sb[key].get(k)]
        elif sa.get(key) != sb.get(key):
            sections.append(key)
    if sections:
        parts.append("they differ in " + ", ".join(sections))
    return f" ({'; '.join(parts)})" if parts else ""
