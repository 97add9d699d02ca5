"""Write one page about a training run: Markdown with PNG figures beside it, readable on GitHub.

    python tools/report.py runs/demo                           RUN/report/report.md and its figures
    python tools/report.py runs/demo --data data/demo          with the dataset's per-source table
    python tools/report.py runs/modern runs/gpt2 --out cmp/    the first run, compared with the second

The page, in order: a summary paragraph (model size, tokens seen, final and best val loss and bits per
byte, wall time, hardware); the curves (loss of train and val against tokens, bits per byte, task
scores, learning rate and gradient norm); the task scores; the samples the model wrote at its
evaluations; with a second run, the comparison (overlaid curves, final metrics side by side, the
config keys that differ); the config (essentials in a table, the whole of config.json folded away);
the dataset (its splits and per-source table); throughput, MFU, peak memory, hardware and evaluation
time; the config changes made on resume; and last, what the run did not record.

Reads RUN/config.json and RUN/metrics.jsonl, whose records the trainer writes by "type": "run" (the
hardware and setup, when a process starts or resumes), "train", "eval" (val loss, bits per byte, task
scores), "samples" and "config" (changes on resume). Every field but type and step is optional: what
a run holds is drawn, what it lacks is named in the last section. The dataset is --data, else the
data directory the run's "run" record names, when it exists here. Needs matplotlib
(``pip install matplotlib`` or ``pip install -e '.[tools]'``).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling plot_run.py

import plot_run  # noqa: E402

import shards  # noqa: E402

REPORT_NAME = "report.md"
FIGURES = ("loss.png", "bpb.png", "tasks.png", "optimization.png", "throughput.png", "compare.png")
SAMPLE_STEPS_SHOWN = 6      # evaluations whose samples the table shows: the first, the last, evenly between
COMPLETION_CHARS = 280      # a longer completion is cut, with an ellipsis
SMOOTH_OVER = 60            # a curve of more logged points than this is drawn faint, with its trend on top
GIB = 2 ** 30
# how every figure looks: legible when GitHub scales it to the page width
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.titleweight": "bold", "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 9,
         "legend.frameon": False, "savefig.dpi": 130, "savefig.bbox": "tight"}

# The config keys the essentials table shows, in order, with a condition on the config where they apply.
ESSENTIALS = (
    ("model.n_layers", None), ("model.d_model", None), ("model.n_heads", None), ("model.seq_len", None),
    ("model.vocab_size", None),
    ("training.optimizer", None), ("training.lr", None),
    ("training.muon_lr", lambda c: c["training"].get("optimizer") == "muon"),
    ("training.schedule", None),
    ("training.decay_fraction", lambda c: c["training"].get("schedule") == "wsd"),
    ("training.warmup_steps", None), ("training.min_lr_ratio", None), ("training.weight_decay", None),
    ("training.grad_clip", None), ("training.batch_size", None), ("training.grad_accum_steps", None),
    ("training.global_batch_size", None), ("training.max_steps", None),
    ("training.token_budget", lambda c: not c["training"].get("max_steps")),
    ("training.precision", None), ("training.compile", None), ("training.seed", None),
)


class ReportError(shards.PipelineError):
    """A run or dataset the report cannot be written from; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# reading a run

class Run:
    """What a run directory holds: config.json ({} without one) and the records of metrics.jsonl."""

    def __init__(self, path: Path, config: dict, records: list[dict]):
        self.path, self.config, self.records = path, config, records

    @property
    def name(self) -> str:
        return self.path.resolve().name

    def of(self, kind: str) -> list[dict]:
        """The records of one type, in file order. Records without a type are the old format: an
        evaluation when they carry val_loss, else a training log line."""
        return [r for r in self.records if r.get("type", "eval" if "val_loss" in r else "train") == kind]

    def tokens_at(self, record: dict) -> int | None:
        """The tokens seen at ``record``: its own count, else that of the last training record at or
        before its step."""
        if "tokens" in record:
            return record["tokens"]
        earlier = [r for r in self.of("train") if "tokens" in r and r["step"] <= record["step"]]
        return earlier[-1]["tokens"] if earlier else None

    def setting(self, dotted: str):
        section, _, key = dotted.partition(".")
        return self.config.get(section, {}).get(key)


def load_run(path: Path) -> Run:
    try:
        records, notes = plot_run.read_metrics(path)
    except plot_run.UsageError as e:
        raise ReportError(str(e)) from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    config_path = path / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.exists() else {}
    except json.JSONDecodeError as e:
        raise ReportError(f"{config_path} is not valid JSON ({e}); restore it from a checkpoint's "
                          f"config.json (RUN/checkpoints/step_*/config.json)") from None
    return Run(path, config, records)


def count_params(run: Run) -> int | None:
    """Parameters as the trainer counts them (without position embeddings): the "run" record's, else
    the model of config.json built on the meta device (no memory, no weights read)."""
    logged = [r["params"] for r in run.of("run") if "params" in r]
    if logged:
        return logged[-1]
    if not run.config.get("model"):
        return None
    import torch

    from train.config import Config
    from train.model import GPT
    try:
        cfg = Config.from_dict(run.config, str(run.path / "config.json"))
    except shards.PipelineError as e:
        print(f"note: parameters not counted: {e}", file=sys.stderr)
        return None
    with torch.device("meta"):
        return GPT(cfg.model).num_params()


def trained_fingerprint(run: Run) -> str | None:
    """The dataset fingerprint the run's latest checkpoint was trained on, None without a checkpoint."""
    from train.checkpoint import CheckpointError, find_checkpoint, read_part
    try:
        return read_part(find_checkpoint(run.path), "fingerprints").get("dataset_fingerprint")
    except CheckpointError:
        return None


# ---------------------------------------------------------------------------------------------------
# the numbers: headline facts of a run, and how they are written

def facts(run: Run) -> dict:
    """The run's headline numbers (None where not recorded), for the summary, tables and comparison."""
    train, evals, sessions = run.of("train"), run.of("eval"), run.of("run")

    def last(records, key):
        return next((r[key] for r in reversed(records) if r.get(key) is not None), None)

    def best(records, key):
        points = [r for r in records if r.get(key) is not None]
        return min(points, key=lambda r: r[key]) if points else None

    def median(key):
        values = [r[key] for r in train if r.get(key) is not None]
        return statistics.median(values) if values else None

    def peak(key):
        values = [r[key] for r in train if r.get(key) is not None]
        return max(values) if values else None

    best_val, best_bpb = best(evals, "val_loss"), best(evals, "val_bpb")
    with_tasks = [r for r in evals if r.get("tasks")]
    eval_s = [r["eval_s"] for r in evals if r.get("eval_s") is not None]
    return {
        "params": count_params(run),
        "steps": max(r["step"] for r in run.records),
        "tokens": max((t for r in run.records if (t := r.get("tokens")) is not None), default=None),
        "wall_s": last(train, "elapsed_s"),
        "train_loss": last(train, "loss"),
        "val_loss": last(evals, "val_loss"),
        "best_val_loss": best_val["val_loss"] if best_val else None,
        "best_val_step": best_val["step"] if best_val else None,
        "val_ppl": last(evals, "val_ppl"),
        "val_bpb": last(evals, "val_bpb"),
        "best_val_bpb": best_bpb["val_bpb"] if best_bpb else None,
        "tasks": with_tasks[-1]["tasks"] if with_tasks else {},
        "tasks_step": with_tasks[-1]["step"] if with_tasks else None,
        "tokens_per_s": median("tokens_per_s"),
        "wall_tokens_per_s": median("wall_tokens_per_s"),
        "mfu": median("mfu"),
        "peak_mem_device": peak("peak_mem_device"),
        "peak_mem_host": peak("peak_mem_host"),
        "eval_s": sum(eval_s) if eval_s else None,
        "session": sessions[-1] if sessions else None,
        "flops_per_token": last(sessions, "flops_per_token"),
    }


def count(n: float | None) -> str:
    """1234 -> 1.2K, 5.6e6 -> 5.6M, 3e9 -> 3.0B (tokens, parameters)."""
    if n is None:
        return "–"
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f}{unit}"
    return f"{n:.0f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def num(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def gib(b: float | None) -> str:
    return "–" if b is None else f"{b / GIB:.2f} GiB"


def headline(score: dict) -> float | None:
    """A task's accuracy to show alone: acc_norm where the task defines it (its value is not None), else acc
    (LAMBADA's records carry acc_norm: None)."""
    return score["acc_norm"] if score.get("acc_norm") is not None else score.get("acc")


def percent(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def hardware(session: dict | None) -> str | None:
    """"2 × NVIDIA H100 80GB HBM3, bf16" from a "run" record; None without one (or without a device)."""
    if not session:
        return None
    device = session.get("device_name") or session.get("device")
    if device is None:
        return None
    n = session.get("world_size", 1)
    text = f"{n} × {device}" if n > 1 else device
    return text + (f", {session['precision']}" if session.get("precision") else "")


# ---------------------------------------------------------------------------------------------------
# Markdown

def cell(value) -> str:
    """``value`` as the text of one Markdown table cell on GitHub: HTML and Markdown characters escaped
    (a completion's "<|endoftext|>" is text, not a tag), newlines as <br>."""
    text = str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    for ch in "\\`*_[]|~#":
        text = text.replace(ch, "\\" + ch)
    return text.replace("\r\n", "\n").replace("\n", "<br>")


def table(header: list[str], rows: list[list], right: set[int] = frozenset()) -> list[str]:
    """A GitHub Markdown table; columns in ``right`` are right-aligned (numbers). Cells are written as
    given: escape free text with :func:`cell` first."""
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    return ["| " + " | ".join(map(str, row)) + " |" for row in [header, rule, *rows]]


def code(value) -> str:
    """A config value as inline code: strings as they are, anything else as JSON (true, null, [1, 2])."""
    text = value if isinstance(value, str) else json.dumps(value)
    return "`" + text.replace("`", "'") + "`"


def flatten(config: dict) -> dict:
    """{"model.n_layers": 4, ...} from the nested config."""
    return {f"{section}.{key}": value for section, keys in config.items() if isinstance(keys, dict)
            for key, value in keys.items()}


# ---------------------------------------------------------------------------------------------------
# figures

def require_matplotlib() -> None:
    if importlib.util.find_spec("matplotlib") is None:
        raise ReportError("the report draws its curves with matplotlib, which is not installed; "
                          "`pip install matplotlib` (or `pip install -e '.[tools]'`) and run it again")


def count_axis(axis) -> None:
    """Tick labels 0, 20K, 1.5M, 3B on ``axis`` (ax.xaxis or ax.yaxis)."""
    from matplotlib.ticker import FuncFormatter
    axis.set_major_formatter(FuncFormatter(lambda x, _: count(x).replace(".0", "") if x else "0"))


def smooth(values: list[float]) -> list[float]:
    """A trailing mean over about 1/30 of the points, so the trend of a noisy training loss shows."""
    window = max(1, len(values) // 30)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def draw_noisy(ax, points: list[tuple[float, float]], color: str, label: str | None = None) -> None:
    """A curve logged every few steps: as logged, or faint with its trend on top when it has many points."""
    xs, ys = zip(*points, strict=True)
    if len(ys) > SMOOTH_OVER:
        ax.plot(xs, ys, color=color, alpha=0.25, lw=0.8)
        ax.plot(xs, smooth(list(ys)), color=color, lw=1.6, label=f"{label} (smoothed)" if label else None)
    else:
        ax.plot(xs, ys, color=color, lw=1.4, label=label)


def mark_resumes(ax, run: Run, by_tokens: bool = False) -> None:
    """A dotted vertical line where a process resumed the run (a "run" record after step 0)."""
    for r in run.of("run"):
        if r["step"] > 0:
            x = run.tokens_at(r) if by_tokens else r["step"]
            if x is not None:
                ax.axvline(x, color="0.5", ls=":", lw=1)
                ax.text(x, 0.99, " resumed", transform=ax.get_xaxis_transform(), fontsize=8, color="0.4",
                        va="top")


def loss_ylim(ax, train: list[tuple[float, float]], val: list[tuple[float, float]]) -> None:
    """Keep the first steps' loss (near ln(vocab_size), far above the rest) from flattening the curve:
    the axis starts at the values after the first 5% of tokens, and says so when it cuts."""
    points = train + val
    if len(train) < 20:
        return
    cut = train[len(train) // 20][0]
    later = [y for x, y in points if x >= cut]
    top = max(later) * 1.05
    if max(y for _, y in points) > top * 1.15:
        low = min(y for _, y in points)
        ax.set_ylim(low - 0.05 * (top - low), top)
        ax.text(0.99, 0.97, f"the loss of the first {count(cut)} tokens is off the top", transform=ax.transAxes,
                ha="right", va="top", fontsize=8, color="0.4")


def draw_loss(ax, run: Run, color: str, label: str = "") -> tuple[list, list]:
    """Train (smoothed when noisy) and val loss of ``run`` against tokens; returns their points."""
    s = plot_run.series(run.records)
    train, val = s["loss_tokens"], s["val_tokens"]
    prefix = f"{label} " if label else ""
    if train:
        draw_noisy(ax, train, color, f"{prefix}train")
    if val:
        ax.plot(*zip(*val, strict=True), color=color, lw=1.6, ls="--", marker="o", ms=4, label=f"{prefix}val")
    count_axis(ax.xaxis)
    return train, val


def figure_loss(run: Run, out: Path) -> list[str]:
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4.5))
    train, val = draw_loss(ax, run, "C0")
    if not train and not val:
        plt.close(fig)
        return []
    if val:
        x, y = min(val, key=lambda p: p[1])
        ax.plot([x], [y], marker="*", ms=14, color="C3", ls="none", label=f"best val {y:.3f}")
    loss_ylim(ax, train, val)
    mark_resumes(ax, run, by_tokens=True)
    ax.set(title="Loss", xlabel="tokens seen", ylabel="cross-entropy (nats/token)")
    ax.legend()
    drawn = ([f"training loss at each logged step{' (faint) with its trend' if len(train) > SMOOTH_OVER else ''}"]
             if train else []) + (["validation loss at each evaluation"] if val else [])
    return save(fig, out / "loss.png", " and ".join(drawn) + ", against tokens seen")


def bpb_points(run: Run) -> list[tuple[int, float]]:
    """(tokens seen, val bits per byte) at each evaluation that measured it."""
    return [(t, r["val_bpb"]) for r in run.of("eval")
            if r.get("val_bpb") is not None and (t := run.tokens_at(r)) is not None]


def figure_bpb(run: Run, out: Path) -> list[str]:
    points = bpb_points(run)
    if not points:
        return []
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.plot(*zip(*points, strict=True), color="C2", lw=1.6, marker="o", ms=4, label="val")
    x, y = min(points, key=lambda p: p[1])
    ax.plot([x], [y], marker="*", ms=14, color="C3", ls="none", label=f"best {y:.3f}")
    count_axis(ax.xaxis)
    ax.set(title="Bits per byte (validation)", xlabel="tokens seen", ylabel="bits per UTF-8 byte")
    ax.legend()
    return save(fig, out / "bpb.png", "validation bits per byte: the loss per UTF-8 byte of text, comparable "
                                      "across tokenizers and vocabulary sizes")


def task_series(run: Run) -> dict[str, tuple[str, list[tuple[float, float]]]]:
    """{task: (metric, [(tokens, score)])}: acc_norm where a task has it, else acc."""
    series: dict[str, tuple[str, list]] = {}
    for r in run.of("eval"):
        t = run.tokens_at(r)
        for task, scores in (r.get("tasks") or {}).items():
            metric = "acc_norm" if scores.get("acc_norm") is not None else "acc"
            if scores.get(metric) is not None and t is not None:
                series.setdefault(task, (metric, []))[1].append((t, scores[metric]))
    return series


def figure_tasks(run: Run, out: Path) -> list[str]:
    series = task_series(run)
    if not series:
        return []
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter
    fig, ax = plt.subplots(figsize=(9, 4))
    for k, (task, (metric, points)) in enumerate(sorted(series.items())):
        ax.plot(*zip(*points, strict=True), color=f"C{k % 10}", lw=1.6, marker="o", ms=4, label=f"{task} ({metric})")
    count_axis(ax.xaxis)
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set(title="Downstream tasks", xlabel="tokens seen", ylabel="accuracy")
    ax.legend()
    return save(fig, out / "tasks.png", "accuracy on each task at each evaluation (normalised accuracy where "
                                        "the task defines it)")


def figure_optimization(run: Run, out: Path) -> list[str]:
    train = run.of("train")
    lr = [(r["step"], r["lr"]) for r in train if r.get("lr") is not None]
    norm = [(r["step"], r["grad_norm"]) for r in train if r.get("grad_norm") is not None]
    panels = [p for p in (lr, norm) if p]
    if not panels:
        return []
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter
    fig, axes = plt.subplots(1, len(panels), figsize=(9 if len(panels) == 1 else 12, 3.6), squeeze=False)
    axes = list(axes[0])
    if lr:
        ax = axes.pop(0)
        ax.plot(*zip(*lr, strict=True), color="C1", lw=1.6)
        ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:.2g}"))  # 0.003, not an offset 1e-3
        ax.set(title="Learning rate", xlabel="step", ylabel="learning rate")
        mark_resumes(ax, run)
    if norm:
        ax = axes.pop(0)
        draw_noisy(ax, norm, "C4")
        clip = run.setting("training.grad_clip")
        if clip:
            ax.axhline(clip, color="0.4", ls=":", lw=1.2, label=f"clipped to {clip:g}")
            ax.legend()
        ax.set(title="Gradient norm (before clipping)", xlabel="step", ylabel="global L2 norm")
        mark_resumes(ax, run)
    drawn = (["the learning rate"] if lr else []) + (["the gradient norm before clipping"] if norm else [])
    return save(fig, out / "optimization.png", " and ".join(drawn) + " at each logged step")


def figure_throughput(run: Run, out: Path) -> list[str]:
    train = run.of("train")
    progress = [(r["elapsed_s"], r["step"]) for r in train if r.get("elapsed_s") is not None]
    speed = [(r["step"], r["tokens_per_s"]) for r in train if r.get("tokens_per_s") is not None]
    wall = [(r["step"], r["wall_tokens_per_s"]) for r in train if r.get("wall_tokens_per_s") is not None]
    mfu = [(r["step"], 100 * r["mfu"]) for r in train if r.get("mfu") is not None]
    panels = [p for p in (progress, speed, mfu) if p]
    if not panels:
        return []
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels) + 1, 3.6), squeeze=False)
    axes = list(axes[0])
    drawn = []
    if progress:
        ax = axes.pop(0)
        seconds = max(x for x, _ in progress)
        unit, size = ("hours", 3600) if seconds > 3 * 3600 else ("minutes", 60) if seconds > 180 else ("seconds", 1)
        ax.plot([x / size for x, _ in progress], [y for _, y in progress], color="C0", lw=1.6)
        ax.set(title="Progress", xlabel=f"wall-clock {unit}", ylabel="step")
        drawn.append("steps against wall-clock time")
    if speed:
        ax = axes.pop(0)
        draw_noisy(ax, speed, "C0", "training")
        if wall:
            draw_noisy(ax, wall, "C1", "wall-clock")
            ax.legend()
        count_axis(ax.yaxis)
        ax.set(title="Throughput", xlabel="step", ylabel="tokens/s (all processes)")
        ax.set_ylim(bottom=0)
        mark_resumes(ax, run)
        drawn.append("tokens per second between log points, of training alone"
                     + (" and of the wall clock (evaluation and checkpoints included)" if wall else ""))
    if mfu:
        ax = axes.pop(0)
        draw_noisy(ax, mfu, "C2")
        ax.set(title="Model FLOPs utilisation", xlabel="step", ylabel="MFU (%)")
        ax.set_ylim(bottom=0)
        mark_resumes(ax, run)
        drawn.append("model FLOPs utilisation")
    return save(fig, out / "throughput.png", "; ".join(drawn))


def figure_compare(a: Run, b: Run, out: Path) -> list[str]:
    have_bpb = bool(bpb_points(a)) and bool(bpb_points(b))
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2 if have_bpb else 1, figsize=(13 if have_bpb else 9, 4.5), squeeze=False)
    ax = axes[0][0]
    drawn = [draw_loss(ax, run, f"C{k}", label=run.name) for k, run in enumerate((a, b))]
    loss_ylim(ax, drawn[0][0] + drawn[1][0], drawn[0][1] + drawn[1][1])
    ax.set(title="Loss", xlabel="tokens seen", ylabel="cross-entropy (nats/token)")
    ax.legend()
    if have_bpb:
        ax = axes[0][1]
        for k, run in enumerate((a, b)):
            ax.plot(*zip(*bpb_points(run), strict=True), color=f"C{k}", lw=1.6, marker="o", ms=4, label=run.name)
        count_axis(ax.xaxis)
        ax.set(title="Bits per byte (validation)", xlabel="tokens seen", ylabel="bits per UTF-8 byte")
        ax.legend()
    return save(fig, out / "compare.png", "both runs on the same axes: loss"
                + (" and bits per byte" if have_bpb else "") + " against tokens seen")


def save(fig, path: Path, caption: str) -> list[str]:
    """Write ``fig`` to ``path``; returns its Markdown: the image and its caption (a sentence)."""
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return [f"![{path.stem}]({path.name})", "", f"*{caption[0].upper() + caption[1:]}.*", ""]


# ---------------------------------------------------------------------------------------------------
# the sections: each returns its Markdown lines and adds what it could not show to ``missing``

def section_summary(run: Run, f: dict, missing: list[str]) -> list[str]:
    c = run.config.get("model", {})
    shape = (f"{c['n_layers']} layers, d_model {c['d_model']}, {c['n_heads']} heads, context {c['seq_len']:,}"
             if all(k in c for k in ("n_layers", "d_model", "n_heads", "seq_len")) else None)
    model = f"A {count(f['params'])}-parameter GPT" if f["params"] else "A GPT"
    text = model + (f" ({shape})" if shape else "")
    text += f" trained for {f['steps']:,} steps"
    if f["tokens"] is not None:
        text += f" on {count(f['tokens'])} tokens"
    if f["wall_s"] is not None:
        text += f" in {duration(f['wall_s'])}"
    machines = list(dict.fromkeys(m for r in run.of("run") if (m := hardware(r))))  # in order, once each
    text += f" on {', then '.join(machines)}." if machines else "."
    if f["val_loss"] is not None:
        text += (f" Final validation loss {f['val_loss']:.3f} nats/token (best {f['best_val_loss']:.3f} at step "
                 f"{f['best_val_step']:,})")
        text += f", perplexity {f['val_ppl']:.1f}" if f["val_ppl"] is not None else ""
        if f["val_bpb"] is not None:
            text += f"; {f['val_bpb']:.3f} bits per byte (best {f['best_val_bpb']:.3f})"
        text += "."
    elif f["train_loss"] is not None:
        text += f" Final training loss {f['train_loss']:.3f} nats/token; no validation loss was recorded."
    if f["tasks"]:
        scores = [f"{task} {percent(headline(s))}" for task, s in sorted(f["tasks"].items())]
        text += " Task accuracy (normalised where defined): " + ", ".join(scores) + "."
    if f["val_bpb"] is None:
        missing.append("**bits per byte**: no eval record carries `val_bpb` (the run's trainer did not measure it)")
    if not machines:
        missing.append("**hardware**: no `run` record names the device (the trainer writes one when a process "
                       "starts or resumes)")
    return [f"# Training run `{run.name}`", "", text, ""]


def section_curves(run: Run, out: Path, missing: list[str]) -> list[str]:
    lines = ["## Curves", ""]
    for draw in (figure_loss, figure_bpb, figure_tasks, figure_optimization):
        lines += draw(run, out)
    if not run.of("eval"):
        missing.append("**validation loss**: no eval record (the trainer evaluates every `training.eval_interval` "
                       "steps and at the end)")
    if not task_series(run):
        missing.append("**task scores**: no eval record carries `tasks` (set `training.eval_tasks` to score "
                       "downstream tasks while training)")
    return lines


def section_tasks(f: dict) -> list[str]:
    if not f["tasks"]:
        return []
    rows = [[cell(task), percent(s.get("acc")), percent(s.get("acc_norm")), num(s.get("items"), ","),
             duration(s.get("seconds"))] for task, s in sorted(f["tasks"].items())]
    return ([f"## Task scores (step {f['tasks_step']:,})", ""]
            + table(["task", "accuracy", "normalised accuracy", "items", "time"], rows, right={1, 2, 3, 4}) + [""])


def section_samples(run: Run, missing: list[str]) -> list[str]:
    records = [r for r in run.of("samples") if r.get("samples")]
    if not records:
        missing.append("**samples**: no `samples` record (the trainer writes the completions of a few prompts "
                       "at each evaluation)")
        return []
    shown = records
    if len(records) > SAMPLE_STEPS_SHOWN:
        picks = {round(i * (len(records) - 1) / (SAMPLE_STEPS_SHOWN - 1)) for i in range(SAMPLE_STEPS_SHOWN)}
        shown = [records[i] for i in sorted(picks)]
    by_prompt: dict[str, list[tuple[int, str]]] = {}
    for r in shown:
        for s in r["samples"]:
            by_prompt.setdefault(s.get("prompt", ""), []).append((r["step"], s.get("completion", "")))
    rows = []
    for prompt, completions in by_prompt.items():
        for k, (step, completion) in enumerate(completions):
            if len(completion) > COMPLETION_CHARS:
                completion = completion[:COMPLETION_CHARS] + "…"
            rows.append([f"{step:,}", f"**{cell(prompt)}**" if k == 0 else "", cell(completion)])
    note = (f"The completions at {len(shown)} of the {len(records)} evaluations (all are in metrics.jsonl), "
            f"each prompt's from first to last.") if len(shown) < len(records) else \
        "The completions at each evaluation, each prompt's from first to last."
    return ["## Samples", "", note, ""] + table(["step", "prompt", "completion"], rows, right={0}) + [""]


def section_compare(a: Run, fa: dict, b: Run, fb: dict, out: Path) -> list[str]:
    lines = [f"## Compared with {b.name}", ""]
    lines += figure_compare(a, b, out)
    metrics = [
        ("parameters", lambda f: count(f["params"]) if f["params"] else "–"),
        ("steps", lambda f: f"{f['steps']:,}"),
        ("tokens seen", lambda f: count(f["tokens"])),
        ("wall time", lambda f: duration(f["wall_s"])),
        ("hardware", lambda f: cell(hardware(f["session"]) or "–")),
        ("final train loss", lambda f: num(f["train_loss"], ".3f")),
        ("final val loss", lambda f: num(f["val_loss"], ".3f")),
        ("best val loss", lambda f: num(f["best_val_loss"], ".3f")),
        ("final val bits per byte", lambda f: num(f["val_bpb"], ".3f")),
        ("best val bits per byte", lambda f: num(f["best_val_bpb"], ".3f")),
        ("tokens/s (median)", lambda f: count(f["tokens_per_s"])),
        ("MFU (median)", lambda f: percent(f["mfu"])),
        ("peak device memory", lambda f: gib(f["peak_mem_device"])),
    ]
    for task in sorted(set(fa["tasks"]) | set(fb["tasks"])):
        metrics.append((f"{task} (final)", lambda f, task=task: percent(
            headline(f["tasks"][task])) if task in f["tasks"] else "–"))
    rows = [[label, value(fa), value(fb)] for label, value in metrics]
    rows = [r for r in rows if r[1] != "–" or r[2] != "–"]
    lines += table(["", cell(a.name), cell(b.name)], rows, right={1, 2}) + [""]
    ka, kb = flatten(a.config), flatten(b.config)
    differ = sorted(k for k in set(ka) | set(kb) if ka.get(k, "missing") != kb.get(k, "missing"))
    if differ:
        rows = [[f"`{k}`", code(ka[k]) if k in ka else "–", code(kb[k]) if k in kb else "–"] for k in differ]
        lines += ["Config keys that differ:", ""] + table(["key", cell(a.name), cell(b.name)], rows) + [""]
    else:
        lines += ["The two configs are the same.", ""]
    return lines


def section_config(run: Run, f: dict, missing: list[str]) -> list[str]:
    if not run.config:
        missing.append(f"**config**: {run.path / 'config.json'} does not exist")
        return []
    rows = [[f"`{key}`", code(run.setting(key))] for key, applies in ESSENTIALS
            if run.setting(key) is not None and (applies is None or applies(run.config))]
    switches = [k for k, v in run.config.get("model", {}).items() if v is True]
    if switches:
        rows.insert(5, ["model options on", ", ".join(f"`{k}`" for k in switches)])
    train = [r for r in run.of("train") if "tokens" in r]
    if len(train) >= 2 and train[-1]["step"] > train[0]["step"]:
        per_step = (train[-1]["tokens"] - train[0]["tokens"]) / (train[-1]["step"] - train[0]["step"])
        rows.append(["tokens per step (measured)", f"{per_step:,.0f}"])
    if f["params"]:
        rows.append(["parameters (without position embeddings)", f"{f['params']:,}"])
    init = next((r["init_from"] for r in reversed(run.of("run")) if r.get("init_from")), None)
    if init:
        rows.append(["initialised from", cell(", ".join(f"{k} {v}" for k, v in init.items())
                                              if isinstance(init, dict) else init)])
    full = json.dumps(run.config, indent=2)
    return (["## Config", ""] + table(["setting", "value"], rows) + ["",
            "<details><summary>The whole config.json</summary>", "", "```json", full, "```", "", "</details>", ""])


def section_dataset(run: Run, data: Path | None, f: dict, missing: list[str]) -> list[str]:
    named = next((r["data_dir"] for r in reversed(run.of("run")) if r.get("data_dir")), None)
    if data is None and named and Path(named).is_dir():
        data = Path(named)
    if data is None:
        why = (f"the run read {named}, which is not here" if named else "the run's records do not name its data")
        missing.append(f"**dataset**: {why}; pass `--data DIR` for its splits and per-source table")
        return []
    manifest = shards.load_manifest(data)
    lines = ["## Dataset", "", f"`{data}`: vocabulary {manifest['vocab_size']:,}, {manifest['dtype']} shards."]
    trained_on = trained_fingerprint(run)
    if trained_on and trained_on != shards.dataset_fingerprint(manifest):
        lines[-1] += (" **This is not the dataset the run's latest checkpoint was trained on** (its fingerprint "
                      "differs); the tables below describe this directory.")
    lines.append("")
    rows, train_tokens = [], None
    for split in shards.SPLITS:
        entries = shards.split_shards(manifest, split)
        tokens = sum(e["tokens"] for e in entries)
        train_tokens = tokens if split == "train" else train_tokens
        rows.append([split, f"{len(entries):,}", f"{sum(e['documents'] for e in entries):,}", count(tokens)])
    lines += table(["split", "shards", "documents", "tokens"], rows, right={1, 2, 3}) + [""]
    if train_tokens and f["tokens"]:
        lines += [f"The run saw {count(f['tokens'])} tokens: {f['tokens'] / train_tokens:.2f} epochs of the "
                  f"train split.", ""]
    sources = manifest.get("sources") or []
    if sources:
        rows = [[cell(s["source"]), f"{s.get('files', s.get('files_finished', 0)):,}", f"{s['documents']:,}",
                 count(s["tokens"]), percent(s.get("share")), percent(s.get("share_planned"))] for s in sources]
        plan = manifest.get("plan") or {}
        cap = f", capped at {count(plan['max_tokens'])} tokens" if plan.get("max_tokens") else ""
        lines += [f"Sources ({plan.get('mode', 'whole')} plan{cap}); share is of the tokens written, planned is "
                  "what the plan aimed for:", ""]
        lines += table(["source", "files", "documents", "tokens", "share", "planned"], rows,
                       right={1, 2, 3, 4, 5}) + [""]
    else:
        lines += ["The manifest has no per-source table.", ""]
    return lines


def section_hardware(run: Run, f: dict, out: Path, missing: list[str]) -> list[str]:
    lines = ["## Throughput, memory and hardware", ""]
    lines += figure_throughput(run, out)
    wall = f["wall_s"]
    rows = [["tokens seen", f"{f['tokens']:,}" if f["tokens"] is not None else "–"],
            ["wall time", duration(wall)],
            ["tokens/s, training (median)", count(f["tokens_per_s"])],
            ["tokens/s, wall-clock (median)", count(f["wall_tokens_per_s"])],
            ["MFU (median)", percent(f["mfu"])],
            ["FLOPs per token (forward + backward)", count(f["flops_per_token"])],
            ["peak device memory", gib(f["peak_mem_device"])],
            ["peak host memory", gib(f["peak_mem_host"])]]
    if f["eval_s"] is not None:
        share = f" ({f['eval_s'] / wall:.1%} of the wall time)" if wall else ""
        rows.append(["evaluation time", duration(f["eval_s"]) + share])
    lines += table(["", "value"], [r for r in rows if r[1] != "–"], right={1}) + [""]
    sessions = run.of("run")
    if sessions:
        rows = [[f"{r['step']:,}", cell(r.get("device_name") or r.get("device", "–")), str(r.get("world_size", "–")),
                 cell(r.get("precision", "–")), cell(r.get("torch", "–"))] for r in sessions]
        lines += (["Processes that trained the run (one row per start or resume):", ""]
                  + table(["from step", "device", "processes", "precision", "torch"], rows, right={0, 2}) + [""])
    for key, what, why in (("mfu", "MFU", "logged on GPUs whose peak FLOP/s the trainer knows"),
                           ("peak_mem_device", "peak device memory", "not recorded by the run's trainer"),
                           ("peak_mem_host", "peak host memory", "not recorded by the run's trainer"),
                           ("wall_tokens_per_s", "wall-clock tokens/s", "not recorded by the run's trainer")):
        if f[key] is None:
            missing.append(f"**{what}**: no train record carries `{key}` ({why})")
    return lines


def section_changes(run: Run) -> list[str]:
    rows = [[f"{r['step']:,}", f"`{c.get('key')}`", code(c.get("from")), code(c.get("to"))]
            for r in run.of("config") for c in r.get("changes", [])]
    if not rows:
        return []
    return (["## Config changes on resume", ""] + table(["step", "key", "from", "to"], rows, right={0}) + [""])


# ---------------------------------------------------------------------------------------------------
# the page

def write_report(run_dir: Path, out: Path | None = None, other_dir: Path | None = None,
                 data: Path | None = None) -> Path:
    """Write ``out/report.md`` (default ``RUN/report/``) and its figures; returns the Markdown's path."""
    require_matplotlib()
    run = load_run(run_dir)
    other = load_run(other_dir) if other_dir else None
    if data is not None and not (data / shards.MANIFEST_NAME).exists():
        raise ReportError(f"--data {data} holds no {shards.MANIFEST_NAME}; pass the dataset directory the run "
                          f"was trained on (the --data of `python -m train`)")
    out = out or run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    for name in FIGURES:  # a figure left by an earlier report is not this one's
        (out / name).unlink(missing_ok=True)
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    f, missing = facts(run), []
    with matplotlib.rc_context(STYLE):
        lines = section_summary(run, f, missing)
        lines += section_curves(run, out, missing)
        lines += section_tasks(f)
        lines += section_samples(run, missing)
        if other:
            lines += section_compare(run, f, other, facts(other), out)
        lines += section_config(run, f, missing)
        lines += section_dataset(run, data, f, missing)
        lines += section_hardware(run, f, out, missing)
        lines += section_changes(run)
    if missing:
        lines += ["## Not recorded", "", "What this page cannot show, because the run's records lack it:", ""]
        lines += [f"- {m}" for m in missing] + [""]
    path = out / REPORT_NAME
    shards.atomic_write_bytes(path, "\n".join(lines).encode("utf-8"))
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="report.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run", type=Path, metavar="RUN", help="the run directory (config.json, metrics.jsonl)")
    p.add_argument("other", type=Path, nargs="?", metavar="RUN2", help="a second run to compare RUN with")
    p.add_argument("--data", type=Path, metavar="DIR",
                   help="RUN's dataset directory, for its per-source table (default: the one the run recorded)")
    p.add_argument("--out", type=Path, metavar="DIR", help="where report.md and its PNGs go (default: RUN/report)")
    args = p.parse_args(argv)
    try:
        path = write_report(args.run, args.out, args.other, args.data)
    except shards.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    figures = sorted(x.name for x in path.parent.glob("*.png") if x.name in FIGURES)
    print(f"report written to {path} ({len(figures)} figures: {', '.join(figures)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
