"""train/tasks.py: each task format's parser on files written here (malformed lines named by file and
line), and accuracy equal to a direct per-item computation on a tiny model."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tokenizer as tk
from tests.conftest import _WORDS, make_random_run
from train.checkpoint import load_model
from train.tasks import (
    Item,
    TaskError,
    encode_pair,
    load_tasks,
    parse_spec,
    read_task,
    score_items,
    score_tasks,
)


def write_jsonl(path, records) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return str(path)


def sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def task_files(root, n: int = 12, seed: int = 0) -> dict[str, str]:
    """One file of each format: ``n`` items each, some with contexts longer than the tiny model's
    seq_len (32 tokens), non-ASCII text, brackets and trailing spaces."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    hellaswag, arc, mc, lambada = [], [], [], []
    for i in range(n):
        long = i % 4 == 0
        ctx_a = sentence(rng, 20 if long else 3, 40 if long else 8) + " [title] " + sentence(rng, 2, 4)
        hellaswag.append({"ind": i, "activity_label": rng.choice(["Running", "Home and Garden"]), "ctx_a": ctx_a,
                          "ctx_b": sentence(rng, 0, 3), "endings": [sentence(rng, 1, 6) + " [step]" for _ in range(4)],
                          "label": i % 4 if i % 2 else str(i % 4), "split": "val"})
        labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3"]
        arc.append({"id": f"q{i}", "question": {"stem": sentence(rng, 3, 30 if long else 8) + "?",
                                                "choices": [{"text": sentence(rng, 1, 3), "label": lab}
                                                            for lab in labels]},
                    "answerKey": labels[i % len(labels)]})
        mc.append({"context": sentence(rng, 0 if i == 1 else 2, 6) + (" " if i % 5 == 0 else ""),
                   "choices": [sentence(rng, 1, 4) + rng.choice(["", " é", " 日本"]) for _ in range(3)],
                   "gold": i % 3})
        lambada.append({"text": sentence(rng, 25 if long else 4, 45 if long else 10)})
    return {"hellaswag": write_jsonl(root / "hellaswag.jsonl", hellaswag), "arc": write_jsonl(root / "arc.jsonl", arc),
            "mc": write_jsonl(root / "mc.jsonl", mc), "lambada": write_jsonl(root / "lambada.jsonl", lambada)}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return task_files(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="module")
def model_and_tok(tmp_path_factory, tiny_dataset):
    run = make_random_run(tmp_path_factory.mktemp("taskrun"), tiny_dataset)
    model, _, tok_path = load_model(run)
    return model.eval(), tk.load(tok_path)


# ---------------------------------------------------------------------------------------------------
# parsers

def test_hellaswag_is_prepared_as_lm_eval_prepares_it(tmp_path):
    path = write_jsonl(tmp_path / "h.jsonl", [
        {"activity_label": "Home and Garden", "ctx_a": "[header] How to plant a tree [title] Dig a hole.",
         "ctx_b": "then YOU", "endings": ["  add soil [step] water it.", "b", "c", "d"], "label": 2},
        {"activity_label": "Running", "ctx_a": "A man runs.", "ctx_b": "", "endings": ["x", "y"], "label": "1"}])
    task = read_task(path)
    assert task.kind == "hellaswag" and task.name == "h"
    assert task.items == [
        Item("Home and Garden: How to plant a tree. Dig a hole. Then you", ("add soil water it.", "b", "c", "d"), 2),
        Item("Running: A man runs.", ("x", "y"), 1)]


def test_arc_release_format(tmp_path):
    path = write_jsonl(tmp_path / "ARC-Easy-Test.jsonl", [
        {"id": "Mercury_1", "question": {"stem": "Which is a gas?", "choices": [
            {"text": "ice", "label": "A"}, {"text": "steam", "label": "B"}, {"text": "rock", "label": "C"}]},
         "answerKey": "B"},
        {"id": "NYSEDREGENTS_2", "question": {"stem": "Pick", "choices": [
            {"text": "one", "label": "1"}, {"text": "two", "label": "2"}]}, "answerKey": "2"}])
    task = read_task(path)
    assert task.kind == "arc" and task.name == "ARC-Easy-Test"
    assert task.items == [Item("Question: Which is a gas?\nAnswer:", ("ice", "steam", "rock"), 1),
                          Item("Question: Pick\nAnswer:", ("one", "two"), 1)]


def test_mc_and_lambada(tmp_path):
    mc = write_jsonl(tmp_path / "quiz.jsonl", [{"context": "2 + 2 =", "choices": ["4", "5"], "gold": 0}])
    lam = write_jsonl(tmp_path / "lam.jsonl", [{"text": "he opened the door  and saw his dog"}, {"text": "alone"}])
    assert read_task(mc).items == [Item("2 + 2 =", ("4", "5"), 0)]
    # split on single spaces, as lm-eval's text.split(' '): the double space stays in the context
    assert read_task(lam).items == [Item("he opened the door  and saw his", ("dog",), 0), Item("", ("alone",), 0)]
    assert read_task(lam).kind == "lambada"


def test_specs_name_the_kind_or_leave_it_to_the_file(files, tmp_path):
    assert parse_spec("arc:data/x.jsonl")[0] == "arc"
    assert parse_spec("data/x.jsonl")[0] is None
    assert parse_spec("other:x.jsonl") == (None, type(parse_spec("x")[1])("other:x.jsonl"))
    tasks = load_tasks([files["hellaswag"], "arc:" + files["arc"], files["mc"], "lambada:" + files["lambada"]], limit=5)
    assert [(t.name, t.kind, len(t.items)) for t in tasks] == [
        ("hellaswag", "hellaswag", 5), ("arc", "arc", 5), ("mc", "mc", 5), ("lambada", "lambada", 5)]
    # a forced kind reads the file as that kind: an mc file is no HellaSwag
    with pytest.raises(TaskError, match=r"mc\.jsonl:1: 'endings' must be a list of strings, got missing"):
        load_tasks(["hellaswag:" + files["mc"]])
    (tmp_path / "a").mkdir()
    same = write_jsonl(tmp_path / "a" / "mc.jsonl", [{"context": "x", "choices": ["a"], "gold": 0}])
    with pytest.raises(TaskError, match="two task files are named 'mc'"):
        load_tasks([files["mc"], same])


@pytest.mark.parametrize("kind, lines, line_no, message", [
    ("mc", ['{"context": "a", "choices": ["x", "y"], "gold": 0}', "", '{"context": "b", "choices": ["x"'], 3,
     "not valid JSON"),
    ("mc", ['{"context": "a", "choices": ["x", "y"], "gold": 2}'], 1, "'gold' must be an index into the 2 choices"),
    ("mc", ['{"context": "a", "choices": ["x", "y"], "gold": true}'], 1, "'gold' must be an integer, got bool"),
    ("mc", ['{"context": "a", "choices": [], "gold": 0}'], 1, "'choices' must be a non-empty list of strings"),
    ("mc", ['{"context": "a", "choices": ["x"], "gold": 0}', '["a list"]'], 2, "expected a JSON object, got list"),
    ("hellaswag", ['{"activity_label": "a", "ctx_a": "b", "ctx_b": "", "endings": ["x", "y"]}'], 1,
     "no 'label' \\(the HellaSwag test split is unlabeled\\)"),
    ("hellaswag", ['{"activity_label": "a", "ctx_a": "b", "ctx_b": "", "endings": ["x"], "label": 3}'], 1,
     "'label' must be an index into the 1 endings"),
    ("hellaswag", ['{"activity_label": "a", "ctx_a": 5, "ctx_b": "", "endings": ["x"], "label": 0}'], 1,
     "'ctx_a' must be a string, got int 5"),
    ("arc", ['{"question": {"stem": "q", "choices": [{"text": "x", "label": "A"}]}, "answerKey": "B"}'], 1,
     "answerKey 'B' is not one of the choices' labels \\['A'\\]"),
    ("arc", ['{"question": {"stem": "q", "choices": [{"text": "x"}]}, "answerKey": "A"}'], 1,
     "question.choices must be a non-empty list"),
    ("lambada", ['{"text": "a b c"}', '{"text": "ends with a space "}'], 2, "'text' must end with the word to predict"),
    ("lambada", ['{"text": null}'], 1, "'text' must be a string, got NoneType null"),
])
def test_malformed_lines_are_named_by_file_and_line(tmp_path, kind, lines, line_no, message):
    path = tmp_path / f"{kind}.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TaskError, match=f"{path}:{line_no}: {message}"):
        load_tasks([f"{kind}:{path}"])
    if line_no > 1:  # without the kind, the first line tells it, and the same line is named
        with pytest.raises(TaskError, match=f"{path}:{line_no}: {message}"):
            load_tasks([str(path)])


def test_unreadable_files_say_what_to_do(tmp_path):
    with pytest.raises(TaskError, match="does not exist; the public task files are fetched with `python tools/fetch"):
        load_tasks([str(tmp_path / "missing.jsonl")])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TaskError, match="holds no items"):
        load_tasks([str(empty)])
    odd = write_jsonl(tmp_path / "odd.jsonl", [{"prompt": "x", "answer": "y"}])
    with pytest.raises(TaskError, match=r"odd\.jsonl:1: cannot tell the task format .* name it as KIND:"):
        load_tasks([odd])


# ---------------------------------------------------------------------------------------------------
# encoding and scoring

def test_encode_pair_moves_trailing_spaces_and_splits_the_whole(model_and_tok):
    _, tok = model_and_tok
    enc, eot = tk.Encoder(tok, "hf"), tk.eot_id(tok)
    ctx, cont = encode_pair(enc, eot, "the model reads  ", "tokens")
    assert ctx == [eot] + enc.encode("the model reads")
    assert ctx + cont == [eot] + enc.encode("the model reads  tokens")
    assert encode_pair(enc, eot, "", " alone") == ([eot], enc.encode(" alone"))


def direct_score(model, tok, context: str, choice: str) -> tuple[float, bool]:
    """A choice's log-likelihood and greediness computed on its own, unpadded, one forward pass."""
    eot, S = tk.eot_id(tok), model.cfg.seq_len
    cont_text = " " + choice
    stripped = context.rstrip()
    cont_text, context = context[len(stripped):] + cont_text, stripped
    n_ctx = 1 + len(tok.encode(context, add_special_tokens=False).ids)
    whole = [eot] + tok.encode(context + cont_text, add_special_tokens=False).ids
    n_cont = len(whole) - n_ctx
    seq = whole[-(S + 1):]
    with torch.no_grad():
        logp = F.log_softmax(model(torch.tensor([seq[:-1]]))[0][0].double(), dim=-1)  # (T, V)
    positions = range(len(seq) - 1 - n_cont, len(seq) - 1)
    targets = seq[-n_cont:]
    ll = sum(logp[p, t].item() for p, t in zip(positions, targets, strict=True))
    greedy = all(logp[p].argmax().item() == t for p, t in zip(positions, targets, strict=True))
    return ll, greedy


def test_accuracy_equals_a_direct_computation_per_item(files, model_and_tok):
    model, tok = model_and_tok
    tasks = load_tasks(list(files.values()))
    scores = score_tasks(model, tasks, tok, torch.device("cpu"), batch_size=5)
    truncated = 0
    for task in tasks:
        acc = acc_norm = 0
        per_item = score_items(model, task, tok, torch.device("cpu"), batch_size=3)
        for item, s in zip(task.items, per_item, strict=True):
            direct = [direct_score(model, tok, item.context, c) for c in item.choices]
            truncated += len(tok.encode(item.context).ids) + 2 > model.cfg.seq_len
            assert s.lls == pytest.approx([d[0] for d in direct], abs=1e-4)
            if task.kind == "lambada":
                assert s.acc == direct[0][1] and s.acc_norm is None
                acc += direct[0][1]
                continue
            lls = [d[0] for d in direct]
            best = max(range(len(lls)), key=lambda k: (lls[k], -k))
            best_norm = max(range(len(lls)), key=lambda k: (lls[k] / len(item.choices[k]), -k))
            acc += best == item.gold
            acc_norm += best_norm == item.gold
        assert scores[task.name]["items"] == len(task.items)
        assert scores[task.name]["acc"] == acc / len(task.items), task.name
        if task.kind == "lambada":
            assert scores[task.name]["acc_norm"] is None
            mean_ll = np.mean([s.lls[0] for s in per_item])
            assert scores[task.name]["ppl"] == pytest.approx(np.exp(-mean_ll), rel=1e-6)
        else:
            assert scores[task.name]["acc_norm"] == acc_norm / len(task.items), task.name
    assert truncated >= 4  # the left cut to seq_len was exercised


def test_scores_are_the_same_whatever_the_batch(files, model_and_tok):
    model, tok = model_and_tok
    task = load_tasks([files["hellaswag"]])[0]
    one = score_items(model, task, tok, torch.device("cpu"), batch_size=1)
    many = score_items(model, task, tok, torch.device("cpu"), batch_size=64)
    assert [s.lls for s in one] == [pytest.approx(s.lls, abs=1e-5) for s in many]
    assert [(s.pred, s.pred_norm) for s in one] == [(s.pred, s.pred_norm) for s in many]


def test_train_mode_is_restored(files, model_and_tok):
    model, tok = model_and_tok
    model.train()
    try:
        score_tasks(model, load_tasks([files["mc"]]), tok, torch.device("cpu"))
        assert model.training
    finally:
        model.eval()


def test_lambada_counts_a_last_word_the_model_would_write(tmp_path, model_and_tok):
    # texts whose last word is the model's own greedy next token, and texts whose last word is not
    model, tok = model_and_tok
    rng, eot = random.Random(1), tk.eot_id(tok)
    greedy_texts, other_texts = [], []
    for _ in range(300):
        context = sentence(rng, 1, 4)
        with torch.no_grad():
            logits, _ = model(torch.tensor([([eot] + tok.encode(context).ids)[-model.cfg.seq_len:]]))
        word = tok.decode([int(logits[0, -1].argmax())])
        if word.startswith(" ") and word[1:].isalpha() and len(greedy_texts) < 3:
            greedy_texts.append(context + word)
        elif len(other_texts) < 3:
            other_texts.append(context + " " + rng.choice(_WORDS))
    assert len(greedy_texts) == 3
    path = write_jsonl(tmp_path / "lambada.jsonl", [{"text": t} for t in greedy_texts + other_texts])
    task = load_tasks([path])[0]
    scores = score_items(model, task, tok, torch.device("cpu"))
    assert [s.acc for s in scores] == [direct_score(model, tok, i.context, i.choices[0])[1] for i in task.items]
    assert [s.acc for s in scores[:3]] == [True] * 3
    assert score_tasks(model, [task], tok, torch.device("cpu"))["lambada"]["acc"] == sum(s.acc for s in scores) / 6
