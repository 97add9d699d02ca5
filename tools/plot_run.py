"""Plot training runs: val bits per byte, train and val loss, task accuracy, and the learning rate.

    python tools/plot_run.py runs/demo --out demo.png
    python tools/plot_run.py runs/a runs/b --out compare.png     several runs on the same axes
    python tools/plot_run.py runs/demo --json                    the summary only, for programs

Reads ``RUN/metrics.jsonl`` (one JSON object per line: training records carry step, loss, lr and
tokens; evaluation records, ``"type": "eval"``, carry val_loss and, once the trainer measures it,
val_bpb; any record with a ``"tasks"`` object, {name: {"acc", "acc_norm", ...}}, carries task
scores). Prints a short summary of each run; ``--out`` also draws the plot, with a second row for
bits per byte and task accuracy (acc_norm where the task has it, else acc) when the runs have them.
Bits per byte is the figure to compare runs on different tokenizers by. A half-written last line
(a run still writing, or killed mid-line) is skipped and said so.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS_NAME = "metrics.jsonl"


class UsageError(Exception):
    """A run that cannot be read; the message names the file and what to do."""


def read_metrics(run: Path) -> tuple[list[dict], list[str]]:
    """The records of ``run`` (a run directory or a metrics.jsonl file) and any notes about skipped lines."""
    path = run if run.is_file() else run / METRICS_NAME
    if not path.exists():
        hint = "is it a run directory written by `python -m train`?" if run.is_dir() else "no such directory"
        raise UsageError(f"{path} does not exist ({hint})")
    lines = path.read_text(encoding="utf-8").splitlines()
    records, notes = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                notes.append(f"{path}:{n}: skipped a half-written last line")
                continue
            raise UsageError(f"{path}:{n}: not valid JSON ({e}); fix or delete that line") from None
        if not isinstance(record, dict) or "step" not in record:
            raise UsageError(f"{path}:{n}: expected a JSON object with a 'step' key, got {line[:80]!r}")
        records.append(record)
    if not records:
        raise UsageError(f"{path} holds no records yet; the trainer writes one every log_interval steps")
    return records, notes


def series(records: list[dict]) -> dict[str, list[tuple[float, float]]]:
    """(x, y) points per curve. Evaluation records without ``tokens`` get the tokens of the latest
    training record at or before their step, so val loss can be drawn against tokens too."""
    # the trainer's eval records repeat the latest training loss; only "train" records draw that curve
    train = [r for r in records if r.get("loss") is not None and r.get("type", "train") == "train"]
    evals = [r for r in records if r.get("val_loss") is not None]
    tokens_at = {r["step"]: r["tokens"] for r in train if "tokens" in r}

    def tokens_of(r):
        if "tokens" in r:
            return r["tokens"]
        earlier = [s for s in tokens_at if s <= r["step"]]
        return tokens_at[max(earlier)] if earlier else None

    bpb = [r for r in evals if r.get("val_bpb") is not None]
    tasks: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        for name, scores in (r.get("tasks") or {}).items():
            value = task_score(scores)
            if value is not None and (t := tokens_of(r)) is not None:
                tasks.setdefault(name, []).append((t, value))
    return {
        "loss_step": [(r["step"], r["loss"]) for r in train],
        "loss_tokens": [(r["tokens"], r["loss"]) for r in train if "tokens" in r],
        "val_step": [(r["step"], r["val_loss"]) for r in evals],
        "val_tokens": [(t, r["val_loss"]) for r in evals if (t := tokens_of(r)) is not None],
        "bpb_step": [(r["step"], r["val_bpb"]) for r in bpb],
        "bpb_tokens": [(t, r["val_bpb"]) for r in bpb if (t := tokens_of(r)) is not None],
        "lr_step": [(r["step"], r["lr"]) for r in train if "lr" in r],
        "tasks_tokens": tasks,
    }


def task_score(scores: dict) -> float | None:
    """The score a task is plotted by: acc_norm where the task has it (multiple choice), else acc."""
    return scores.get("acc_norm") if scores.get("acc_norm") is not None else scores.get("acc")


def summarize(run: Path, records: list[dict]) -> dict:
    s = series(records)
    best = min(s["val_step"], key=lambda p: p[1]) if s["val_step"] else None
    last = records[-1]
    last_tasks = {}  # each task's scores at the last record that has them
    for r in records:
        for name, scores in (r.get("tasks") or {}).items():
            last_tasks[name] = {"step": r["step"], **{k: scores.get(k) for k in ("acc", "acc_norm", "items")}}
    return {
        "run": str(run), "records": len(records), "last_step": max(r["step"] for r in records),
        "tokens": max((r["tokens"] for r in records if "tokens" in r), default=None),
        "last_loss": s["loss_step"][-1][1] if s["loss_step"] else None,
        "last_val_loss": s["val_step"][-1][1] if s["val_step"] else None,
        "best_val_loss": best[1] if best else None, "best_val_step": best[0] if best else None,
        "last_val_bpb": s["bpb_step"][-1][1] if s["bpb_step"] else None,
        "best_val_bpb": min(v for _, v in s["bpb_step"]) if s["bpb_step"] else None,
        "tasks": last_tasks,
        "last_lr": s["lr_step"][-1][1] if s["lr_step"] else last.get("lr"),
    }


def plot(runs: list[tuple[Path, list[dict]]], out: Path, log_loss: bool) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    all_series = [series(records) for _, records in runs]
    extra = any(s["bpb_step"] or s["tasks_tokens"] for s in all_series)  # a second row: bpb and tasks
    fig, axes = plt.subplots(2 if extra else 1, 3, figsize=(16, 9.6 if extra else 4.8), squeeze=False)
    ax_step, ax_tok, ax_lr = axes[0]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    markers = "osD^vP*X"
    for k, ((run, _), s) in enumerate(zip(runs, all_series, strict=True)):
        c, name = colors[k % len(colors)], run.name or str(run)
        for ax, train_key, val_key in ((ax_step, "loss_step", "val_step"), (ax_tok, "loss_tokens", "val_tokens")):
            if s[train_key]:
                ax.plot(*zip(*s[train_key], strict=True), color=c, alpha=0.8, lw=1.2, label=f"{name} train")
            if s[val_key]:
                ax.plot(*zip(*s[val_key], strict=True), color=c, lw=2, ls="--", marker="o", ms=4, label=f"{name} val")
        if s["lr_step"]:
            ax_lr.plot(*zip(*s["lr_step"], strict=True), color=c, lw=1.5, label=name)
        if extra:
            ax_bpb_tok, ax_tasks, ax_bpb_step = axes[1]
            for ax, key in ((ax_bpb_tok, "bpb_tokens"), (ax_bpb_step, "bpb_step")):
                if s[key]:
                    ax.plot(*zip(*s[key], strict=True), color=c, lw=2, marker="o", ms=4, label=name)
            for j, (task, points) in enumerate(sorted(s["tasks_tokens"].items())):
                ax_tasks.plot(*zip(*points, strict=True), color=c, lw=1.5, marker=markers[j % len(markers)], ms=4,
                              label=f"{name} {task}")
    ax_step.set(title="loss vs steps", xlabel="step", ylabel="loss (nats/token)")
    ax_tok.set(title="loss vs tokens", xlabel="tokens seen", ylabel="loss (nats/token)")
    ax_lr.set(title="learning rate", xlabel="step", ylabel="lr")
    if extra:
        ax_bpb_tok, ax_tasks, ax_bpb_step = axes[1]
        ax_bpb_tok.set(title="val bits per byte vs tokens", xlabel="tokens seen", ylabel="bits per byte")
        ax_tasks.set(title="task accuracy (acc_norm, else acc) vs tokens", xlabel="tokens seen", ylabel="accuracy")
        ax_bpb_step.set(title="val bits per byte vs steps", xlabel="step", ylabel="bits per byte")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if log_loss:
        ax_step.set_yscale("log")
        ax_tok.set_yscale("log")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _fmt(v, spec: str) -> str:
    return "–" if v is None else format(v, spec)


def print_summaries(summaries: list[dict]) -> None:
    print(f"{'run':<28} {'step':>8} {'tokens':>14} {'loss':>8} {'val loss':>9} {'best val (step)':>18} "
          f"{'val bpb':>8} {'lr':>10}")
    for s in summaries:
        best = "–" if s["best_val_loss"] is None else f"{s['best_val_loss']:.4f} ({s['best_val_step']})"
        print(f"{s['run']:<28} {s['last_step']:>8,} {_fmt(s['tokens'], ','):>14} {_fmt(s['last_loss'], '.4f'):>8} "
              f"{_fmt(s['last_val_loss'], '.4f'):>9} {best:>18} {_fmt(s['last_val_bpb'], '.4f'):>8} "
              f"{_fmt(s['last_lr'], '.2e'):>10}")
    for s in summaries:
        for name, t in s["tasks"].items():
            print(f"  {s['run']}: {name} at step {t['step']:,}: acc {_fmt(t['acc'], '.4f')}, acc_norm "
                  f"{_fmt(t['acc_norm'], '.4f')} ({_fmt(t['items'], ',')} items)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="plot_run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run directories (or metrics.jsonl files)")
    p.add_argument("--out", type=Path, metavar="FILE.png", help="draw the plot to this image")
    p.add_argument("--log", action="store_true", help="log scale for the loss axes")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    args = p.parse_args(argv)
    try:
        loaded = []
        for run in args.runs:
            records, notes = read_metrics(run)
            for note in notes:
                print(f"note: {note}", file=sys.stderr)
            loaded.append((run, records))
        if args.out:
            plot(loaded, args.out, args.log)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    summaries = [summarize(run, records) for run, records in loaded]
    if args.json:
        print(json.dumps({"runs": summaries, "plot": str(args.out) if args.out else None}, indent=2))
    else:
        print_summaries(summaries)
        if args.out:
            print(f"plot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
