"""Check that our task scores are lm-evaluation-harness's: the same items, item by item, on our HF export.

    python tools/check_lm_eval.py                                   # tiny models and task files made here
    python tools/check_lm_eval.py --run runs/demo --tasks data/eval/hellaswag.jsonl --limit 200

Runs where lm-evaluation-harness is installed, and says so where it is not: it is not a dependency of
the project (it pulls in a few dozen packages), so install it beside the project in an environment of
its own::

    python3 -m venv ~/venvs/lmeval && ~/venvs/lmeval/bin/pip install torch "lm-eval[hf]" -e .
    ~/venvs/lmeval/bin/python tools/check_lm_eval.py

For each model (by default two tiny models trained for a few seconds here, one of the GPT-2 layout and
one of the modern recipe's, exported as ``GPT2LMHeadModel`` and ``NanoChatForCausalLM``; or ``--run``), the tool
exports it with ``tools/export_hf.py``, scores every task with ``train/tasks.py`` and with lm-eval
(``--model hf``, ``add_bos_token=True``, fp32, CPU, offline), and compares every item: each choice's
log-likelihood (within ``--tolerance``), whether it is greedy, the prediction, ``acc`` and
``acc_norm``, and the aggregate scores. lm-eval reads the same files through its own task definitions
(hellaswag, arc_easy, lambada_openai: its YAML included as it ships, only the data source replaced by
the local file; ARC's release layout is given to it as Hugging Face's ai2_arc builder lays it out);
the ``mc`` format through a YAML written here. Nothing is downloaded.

Without ``--tasks`` the task files are written here: items in each format with WikiHow brackets,
trailing spaces, non-ASCII text, 3- and 5-choice ARC questions, and contexts longer than the model's
window (cut from the left), plus LAMBADA items whose last word is each model's own greedy text (so
its accuracy is not trivially zero). Exits 1 on any difference.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

import torch  # noqa: E402

import shards  # noqa: E402
import tokenizer as tk  # noqa: E402
from train.checkpoint import find_checkpoint, load_model, save_checkpoint  # noqa: E402
from train.config import Config  # noqa: E402
from train.model import GPT, ModelConfig  # noqa: E402
from train.tasks import load_tasks, score_items  # noqa: E402

# the tiny models checked by default: name -> model options; both share the tokenizer made here
LAYOUTS = {
    "gpt2": {},
    "modern": {"bias": False, "rope": True, "rmsnorm": True, "qk_norm": True, "relu2": True, "embed_norm": True,
               "untied_head": True, "logit_softcap": 15.0},
}
TINY = {"seq_len": 48, "n_layers": 2, "d_model": 64, "n_heads": 4}
LM_EVAL_TASK = {"hellaswag": "hellaswag/hellaswag.yaml", "arc": "arc/arc_easy.yaml",
                "lambada": "lambada/lambada_openai.yaml"}
WORDS = ("the model reads tokens from shards and learns to predict the next one while loss falls slowly over "
         "many steps of training on small corpus plain text documents water tree river stone").split()


class CheckError(Exception):
    """The check cannot run here; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# what is checked: task files, a tokenizer, tiny models

def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi)))


def write_task_files(out: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` items of each format under ``out``; returns their specs."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    rows = {"hellaswag": [], "arc": [], "mc": [], "lambada": []}
    for i in range(n):
        long = i % 5 == 0  # longer than the model's window: cut from the left
        rows["hellaswag"].append({
            "ind": i, "activity_label": rng.choice(["Running", "Home and Garden", "Personal Care and Style"]),
            "ctx_a": _sentence(rng, 40 if long else 3, 60 if long else 12) + rng.choice(["", " [title] ", " [step] "])
            + _sentence(rng, 1, 4), "ctx_b": _sentence(rng, 0, 3),
            "endings": [_sentence(rng, 1, 8) + rng.choice(["", " [substeps]", " ü"]) for _ in range(4)],
            "label": i % 4, "split": "val", "split_type": "indomain"})
        labels = ["A", "B", "C", "D", "E"][:rng.choice([3, 4, 4, 5])] if i % 7 else ["1", "2", "3", "4"]
        rows["arc"].append({"id": f"Check_{i}", "question": {
            "stem": _sentence(rng, 3, 50 if long else 12) + "?",
            "choices": [{"text": _sentence(rng, 1, 4), "label": label} for label in labels]},
            "answerKey": rng.choice(labels)})
        rows["mc"].append({"context": _sentence(rng, 0 if i % 9 == 1 else 2, 40 if long else 8)
                           + rng.choice(["", " ", ":", " \n"]),
                           "choices": [_sentence(rng, 1, 4) + rng.choice(["", " é", " 日本", "!"]) for _ in range(3)],
                           "gold": rng.randrange(3)})
        rows["lambada"].append({"text": _sentence(rng, 40 if long else 3, 60 if long else 14)})
    specs = []
    for kind, records in rows.items():
        path = out / f"check_{kind}.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
        specs.append(f"{kind}:{path}")
    return specs


def train_briefly(model: GPT, ids: list[int], steps: int, seed: int = 0) -> None:
    """A few hundred AdamW steps on random windows of ``ids``: enough for the model to prefer the
    corpus's words, so its greedy continuations (LAMBADA's acc) are words and its choices differ."""
    g = torch.Generator().manual_seed(seed)
    data = torch.tensor(ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    T = model.cfg.seq_len
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(data) - T - 1, (16,), generator=g)
        batch = torch.stack([data[s:s + T + 1] for s in starts.tolist()])  # (16, T + 1)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def make_runs(work: Path, steps: int, seed: int = 0) -> dict[str, Path]:
    """A run directory per LAYOUTS entry: one checkpoint of a tiny model trained for ``steps`` steps on
    sentences of WORDS, sharing a tokenizer trained on them."""
    rng = random.Random(seed)
    texts = [_sentence(rng, 5, 30) + rng.choice([".", "?", " é ü 日本"]) for _ in range(2000)]
    tok = tk.train_bpe(texts[:400], vocab_size=400, min_frequency=1)
    eot, enc = tk.eot_id(tok), tk.Encoder(tok, "hf")
    ids = [t for text in texts for t in [eot] + enc.encode(text)]
    runs = {}
    for name, options in LAYOUTS.items():
        cfg = ModelConfig(vocab_size=tok.get_vocab_size(), **TINY, **options)
        torch.manual_seed(seed)
        model = GPT(cfg)
        train_briefly(model, ids, steps, seed)
        run = work / f"run-{name}"
        run.mkdir(parents=True)
        tk.save(tok, run / shards.TOKENIZER_NAME)
        save_checkpoint(run, steps, model, torch.optim.SGD(model.parameters(), lr=0.1), None, {"step": steps},
                        Config(model=cfg).to_dict(), [], keep=1, is_best=False)
        runs[name] = run
    return runs


def write_greedy_lambada(model: GPT, tok, out: Path, n: int, seed: int = 1) -> str:
    """LAMBADA items whose last word is the model's own greedy continuation of the text before it, so
    that ``acc`` (every continuation token the argmax) is not zero for a random model; returns the spec."""
    from train.generate import generate_ids
    rng, eot, enc = random.Random(seed), tk.eot_id(tok), tk.Encoder(tok, "hf")
    rows = []
    for _ in range(n):
        context = _sentence(rng, 2, 12)
        new, _ = generate_ids(model, torch.tensor([[eot] + enc.encode(context)]), 8, temperature=0)
        words = tok.decode(new[0]).split(" ")
        word = words[1] if len(words) > 2 and not words[0] else rng.choice(WORDS)
        rows.append({"text": f"{context} {word or rng.choice(WORDS)}"})
    path = out / "check_lambada_greedy.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return f"lambada:{path}"


# ---------------------------------------------------------------------------------------------------
# lm-eval's side

def require_lm_eval():
    if importlib.util.find_spec("lm_eval") is None or importlib.util.find_spec("transformers") is None:
        raise CheckError(f"lm-evaluation-harness is not installed in this Python ({sys.executable}); install it in "
                         f"an environment of its own: python3 -m venv VENV && VENV/bin/pip install torch "
                         f"\"lm-eval[hf]\" -e {ROOT}, then run VENV/bin/python tools/check_lm_eval.py")
    import lm_eval
    return lm_eval


def arc_as_hf(path: Path, out: Path) -> Path:
    """The AI2 release's ARC file laid out as Hugging Face's ai2_arc builder lays it out (the dataset
    lm-eval's arc tasks read): question = stem, choices = {text: [...], label: [...]}."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            rows.append({"id": r.get("id", ""), "question": r["question"]["stem"], "answerKey": r["answerKey"],
                         "choices": {"text": [c["text"] for c in r["question"]["choices"]],
                                     "label": [c["label"] for c in r["question"]["choices"]]}})
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return out


def write_lm_eval_tasks(tasks, lm_eval_dir: Path, out: Path) -> dict[str, str]:
    """A YAML per task under ``out``: lm-eval's own task definition with the local file as its data
    (the mc format: a plain multiple_choice task). Returns {our task name: lm-eval task name}."""
    out.mkdir(parents=True, exist_ok=True)
    names = {}
    for task in tasks:
        data = task.path.resolve()
        if task.kind == "arc":
            data = arc_as_hf(data, out / f"{task.name}.hf.jsonl")
        name = f"check_{task.name}".replace("-", "_")
        lines = [f"task: {name}", "tag: []", "dataset_path: json", "dataset_name: null",
                 "dataset_kwargs:", "  data_files:", f"    test: {json.dumps(str(data))}", "test_split: test",
                 "validation_split: null", "training_split: null", "fewshot_split: null", "num_fewshot: 0"]
        if task.kind in LM_EVAL_TASK:
            lines.insert(0, f"include: {json.dumps(str(lm_eval_dir / 'tasks' / LM_EVAL_TASK[task.kind]))}")
        else:
            lines += ["output_type: multiple_choice", "doc_to_text: context", "doc_to_choice: choices",
                      "doc_to_target: gold", "metric_list:", "  - metric: acc", "    aggregation: mean",
                      "    higher_is_better: true", "  - metric: acc_norm", "    aggregation: mean",
                      "    higher_is_better: true"]
        (out / f"{name}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        names[task.name] = name
    return names


def run_lm_eval(lm_eval, export_dir: Path, task_dir: Path, names: list[str], limit: int | None) -> dict:
    from lm_eval.tasks import TaskManager
    return lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={export_dir},add_bos_token=True,dtype=float32", tasks=names,
        task_manager=TaskManager(include_path=str(task_dir)), batch_size=8, device="cpu", limit=limit,
        log_samples=True)


# ---------------------------------------------------------------------------------------------------
# the comparison

def compare(task, ours, samples: list[dict], results: dict, tolerance: float) -> dict:
    """Item by item: ``ours`` (ItemScores) against lm-eval's logged samples of the same task."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    if [s["doc_id"] for s in samples] != list(range(len(ours))):
        raise CheckError(f"{task.name}: lm-eval scored {len(samples)} items, we scored {len(ours)}")
    worst, differ = 0.0, []
    for i, (mine, theirs) in enumerate(zip(ours, samples, strict=True)):
        lls = [float(r[0][0]) for r in theirs["resps"]]
        greedy = [bool(r[0][1]) for r in theirs["resps"]]
        worst = max([worst] + [abs(a - b) for a, b in zip(mine.lls, lls, strict=True)])
        same = greedy == mine.greedy and float(mine.acc) == float(theirs["acc"])
        if task.kind != "lambada":
            same = same and float(mine.acc_norm) == float(theirs["acc_norm"])
        if not same:
            differ.append(i)
    n = len(ours)
    row = {"task": task.name, "kind": task.kind, "items": n, "acc": sum(s.acc for s in ours) / n,
           "lm_eval_acc": results["acc,none"], "max_abs_ll_diff": worst, "items_differing": differ}
    if task.kind != "lambada":
        row["acc_norm"] = sum(s.acc_norm for s in ours) / n
        row["lm_eval_acc_norm"] = results["acc_norm,none"]
    row["ok"] = (not differ and worst <= tolerance and row["acc"] == row["lm_eval_acc"]
                 and row.get("acc_norm") == row.get("lm_eval_acc_norm"))
    return row


def check_model(lm_eval, label: str, run: Path, specs: list[str], limit: int | None, tolerance: float,
                work: Path, greedy_items: int = 0) -> list[dict]:
    """Export ``run``, score ``specs`` (plus ``greedy_items`` LAMBADA items made from the model's own
    greedy text) both ways, and compare; one row per task."""
    sys.path.insert(0, str(ROOT / "tools"))
    import export_hf
    export_dir = work / f"export-{label}"
    (work / f"greedy-{label}").mkdir(parents=True, exist_ok=True)
    summary = export_hf.export(run, export_dir, which="latest")
    model, _, tok_path = load_model(find_checkpoint(run, "latest"), device="cpu")
    model = model.float().eval()
    tok = tk.load(tok_path)
    if greedy_items:
        specs = specs + [write_greedy_lambada(model, tok, work / f"greedy-{label}", greedy_items)]
    tasks = load_tasks(specs, limit)
    names = write_lm_eval_tasks(tasks, Path(lm_eval.__file__).parent, work / f"lm-eval-tasks-{label}")
    out = run_lm_eval(lm_eval, export_dir, work / f"lm-eval-tasks-{label}", list(names.values()), limit)
    rows = []
    for task in tasks:
        ours = score_items(model, task, tok, torch.device("cpu"), batch_size=8)
        row = compare(task, ours, out["samples"][names[task.name]], out["results"][names[task.name]], tolerance)
        rows.append({"model": label, "architecture": summary["architecture"], **row})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/check_lm_eval.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--run", type=Path, help="a run directory to check (default: tiny random models made here)")
    p.add_argument("--tasks", action="append", default=[], metavar="[KIND:]FILE",
                   help="task files to check (default: files of every format written here)")
    p.add_argument("--items", type=int, default=60, help="items per format in the files written here (default 60)")
    p.add_argument("--train-steps", type=int, default=150,
                   help="steps the tiny models made here are trained for (default 150)")
    p.add_argument("--limit", type=int, default=None, help="check the first N items of each task")
    p.add_argument("--tolerance", type=float, default=1e-4,
                   help="largest difference of a log-likelihood allowed, nats (default 1e-4)")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the rows as JSON")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for a hub
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # one warning per truncated context otherwise
    try:
        lm_eval = require_lm_eval()
        import transformers
        with tempfile.TemporaryDirectory(prefix="check-lm-eval-") as tmp:
            work = Path(tmp)
            specs = args.tasks or write_task_files(work / "tasks", args.items)
            runs = {"run": args.run} if args.run else make_runs(work, args.train_steps)
            greedy = 0 if args.tasks else args.items
            rows = [row for label, run in runs.items()
                    for row in check_model(lm_eval, label, run, specs, args.limit, args.tolerance, work, greedy)]
    except (CheckError, shards.PipelineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    versions = {"lm_eval": lm_eval.__version__, "transformers": transformers.__version__,
                "torch": torch.__version__}
    print(f"lm-evaluation-harness {versions['lm_eval']}, transformers {versions['transformers']}, "
          f"torch {versions['torch']}; zero-shot, fp32, CPU; log-likelihood tolerance {args.tolerance:g} nats")
    print(f"{'model':<8} {'architecture':<20} {'task':<22} {'items':>6} {'acc ours / lm-eval':>19} "
          f"{'acc_norm ours / lm-eval':>24} {'max |Δll|':>10} {'items differing':>16}")
    for r in rows:
        norm = "–" if "acc_norm" not in r else f"{r['acc_norm']:.4f} / {r['lm_eval_acc_norm']:.4f}"
        print(f"{r['model']:<8} {r['architecture']:<20} {r['task']:<22} {r['items']:>6} "
              f"{r['acc']:.4f} / {r['lm_eval_acc']:.4f}  {norm:>24} {r['max_abs_ll_diff']:>10.2e} "
              f"{len(r['items_differing']):>16}")
    ok = all(r["ok"] for r in rows)
    print("every item agrees" if ok else "DIFFERENCES: see the rows above")
    if args.json:
        args.json.write_text(json.dumps({"versions": versions, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
