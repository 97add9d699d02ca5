"""Make two small evaluation tasks from a dataset's own held-out documents (its val split).

    python tools/make_tasks.py data/demo --out data/demo/tasks        # then train with
    python -m train ... --set training.eval_tasks=data/demo/tasks/next_words.jsonl,data/demo/tasks/last_word.jsonl

For a corpus no public benchmark speaks to (the demo's Python documentation, a domain corpus), this
gives the trainer's task scoring something to measure that improves as the model learns the corpus:

* ``next_words.jsonl``, plain multiple choice (``{"context", "choices", "gold"}``; train/tasks.py puts a space
  between the context and a choice):
  the first words of a document, and which of four continuations of ``--words`` words is the one that
  follows: the true one, or the words at the same place in three other documents. Chance is 25%.
* ``last_word.jsonl``, LAMBADA's format (``{"text"}``): a passage of a document, scored on whether the
  model's greedy continuation is exactly its last word.

Items are drawn from the val split only, so the model never trained on them, with a seeded order:
the same dataset and seed give the same files. Documents too short for an item are passed over.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import shards  # noqa: E402
import tokenizer as tk  # noqa: E402


def val_texts(data: Path) -> list[str]:
    """Every document of the val split, decoded, in the split's order."""
    manifest = shards.load_manifest(data)
    tok = tk.load(data / shards.TOKENIZER_NAME)
    texts = []
    for entry in shards.split_shards(manifest, "val"):
        for doc in shards.iter_documents(data, entry, manifest["dtype"]):
            texts.append(tok.decode(doc.tolist()))
    return texts


def make_items(texts: list[str], n_items: int, words: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(multiple-choice items, last-word items) from documents of at least 3 x ``words`` words."""
    docs = [t.split() for t in texts]
    docs = [d for d in docs if len(d) >= 3 * words]
    if len(docs) < 4:
        raise SystemExit(f"error: the val split has {len(docs)} documents of at least {3 * words} words; "
                         f"4 are needed (a larger --val-fraction, or a smaller --words)")
    rng = random.Random(seed)
    order = list(range(len(docs)))
    rng.shuffle(order)
    choice_items, last_word_items = [], []
    for i in order[:n_items]:
        doc = docs[i]
        cut = rng.randrange(words, len(doc) - words + 1)
        others = rng.sample([j for j in range(len(docs)) if j != i], 3)
        choices = [" ".join(doc[cut:cut + words])]
        for j in others:
            other = docs[j]
            at = min(cut, len(other) - words)
            choices.append(" ".join(other[at:at + words]))
        gold = rng.randrange(4)
        choices[0], choices[gold] = choices[gold], choices[0]
        choice_items.append({"context": " ".join(doc[:cut]), "choices": choices, "gold": gold})
        end = rng.randrange(2 * words, len(doc) + 1)
        last_word_items.append({"text": " ".join(doc[max(0, end - 6 * words):end])})
    return choice_items, last_word_items


def write_jsonl(path: Path, items: list[dict]) -> None:
    shards.atomic_write_bytes(path, "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in items).encode())


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path, help="dataset directory (manifest.json, tokenizer.json, val shards)")
    p.add_argument("--out", type=Path, required=True, help="directory for next_words.jsonl and last_word.jsonl")
    p.add_argument("--items", type=int, default=200, help="items per task (at most one per val document)")
    p.add_argument("--words", type=int, default=6, help="words in a multiple-choice continuation")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        texts = val_texts(args.data)
    except (shards.PipelineError, tk.TokenizerError) as e:
        raise SystemExit(f"error: {e}") from None
    choices, last_words = make_items(texts, args.items, args.words, args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(args.out / "next_words.jsonl", choices)
    write_jsonl(args.out / "last_word.jsonl", last_words)
    print(f"{len(choices)} items each in {args.out / 'next_words.jsonl'} (4 choices) and "
          f"{args.out / 'last_word.jsonl'} (LAMBADA format), from the val split of {args.data}")


if __name__ == "__main__":
    main()
