"""Look at a tokenizer: vocabulary size, special tokens, how a string splits, bytes per token.

    python tools/inspect_tokenizer.py data/demo                         a dataset dir, run dir or tokenizer.json
    python tools/inspect_tokenizer.py data/demo --text "Hello, world"   the string as its pieces
    python tools/inspect_tokenizer.py runs/demo --sample corpus.txt     bytes per token on a text file
    python tools/inspect_tokenizer.py runs/demo --data data/demo        ... on a dataset's val documents

A dataset directory given as TOKENIZER is also the default sample (its val documents). Text is
encoded as the shards encode it: a literal ``<|endoftext|>`` in the text is ordinary text.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import shards  # noqa: E402
import tokenizer as tk  # noqa: E402


class UsageError(Exception):
    """A request that cannot be served; the message says why and what to do."""


def tokenizer_path(path: Path) -> Path:
    """``path`` itself when it is a file, else ``path/tokenizer.json`` (dataset and run dirs hold one)."""
    if path.is_dir():
        path = path / shards.TOKENIZER_NAME
        if not path.exists():
            raise UsageError(f"{path.parent} has no {shards.TOKENIZER_NAME}; pass a tokenizer.json, a dataset "
                             f"directory or a run directory")
    return path


def describe(tok) -> dict:
    added = sorted(tok.get_added_tokens_decoder().items())
    return {"vocab_size": tok.get_vocab_size(), "eot_id": tk.eot_id(tok),
            "special_tokens": [{"id": i, "content": t.content} for i, t in added if t.special]}


def pieces(tok, text: str) -> list[dict]:
    """Each token of ``text``: its id, its vocabulary entry, and the text it stands for (a piece that
    is part of a multi-byte character decodes to U+FFFD on its own)."""
    ids = tk.Encoder(tok, "hf").encode(text)
    return [{"id": i, "token": tok.id_to_token(i), "text": tok.decode([i], skip_special_tokens=False)} for i in ids]


def val_texts(directory: Path, limit: int) -> list[str]:
    """Up to ``limit`` val documents of a dataset, decoded with the dataset's own tokenizer."""
    manifest = shards.load_manifest(directory)
    own = tk.load(directory / shards.TOKENIZER_NAME)
    texts = []
    for entry in shards.split_shards(manifest, "val"):
        for doc in shards.iter_documents(directory, entry, manifest["dtype"]):
            if len(texts) == limit:
                return texts
            texts.append(own.decode(doc.tolist()))
    if not texts:
        raise UsageError(f"{directory} has no val documents to measure on; pass --sample FILE")
    return texts


def bytes_per_token(tok, texts: list[str]) -> dict:
    enc = tk.Encoder(tok, "hf")
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in enc.encode_batch(texts))
    return {"texts": len(texts), "bytes": n_bytes, "tokens": n_tokens,
            "bytes_per_token": n_bytes / n_tokens if n_tokens else None}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inspect_tokenizer.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("tokenizer", type=Path, metavar="TOKENIZER",
                   help="a tokenizer.json, or a dataset or run directory holding one")
    p.add_argument("--text", action="append", default=[], metavar="STRING",
                   help="show this string as its tokens (repeatable)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--sample", type=Path, metavar="FILE", help="measure bytes per token on this UTF-8 text file")
    src.add_argument("--data", type=Path, metavar="DIR", help="measure bytes per token on this dataset's val documents")
    p.add_argument("--max-docs", type=int, default=1000, help="val documents to use with --data (default: 1000)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    return p


def run(args) -> dict:
    path = tokenizer_path(args.tokenizer)
    tok = tk.load(path)
    report = {"tokenizer": str(path), "sha256": tk.fingerprint(path), **describe(tok)}
    report["texts"] = [{"text": t, "pieces": pieces(tok, t)} for t in args.text]
    data = args.data or (args.tokenizer if (args.tokenizer / shards.MANIFEST_NAME).exists() else None)
    if args.sample:
        try:
            text = args.sample.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {args.sample} as UTF-8 text: {e}") from None
        report["sample"] = {"source": str(args.sample), **bytes_per_token(tok, [text])}
    elif data is not None:
        report["sample"] = {"source": f"{data} (val documents)", **bytes_per_token(tok, val_texts(data, args.max_docs))}
    return report


def print_report(r: dict) -> None:
    print(f"tokenizer {r['tokenizer']}")
    print(f"  vocabulary: {r['vocab_size']:,} tokens · sha256 {r['sha256'][:16]}…")
    print("  special tokens: " + ", ".join(f"{t['content']} = {t['id']}" for t in r["special_tokens"]))
    for t in r["texts"]:
        n = len(t["pieces"])
        print(f"\n  {t['text']!r} → {n} token{'s' * (n != 1)}, {len(t['text'].encode()) / max(n, 1):.2f} bytes/token")
        print("    " + " ".join(f"[{p['text']}]" for p in t["pieces"]))
        for p in t["pieces"]:
            print(f"    {p['id']:>7}  {p['text']!r:<20} {p['token']}")
    s = r.get("sample")
    if s:
        print(f"\n  bytes per token: {s['bytes_per_token']:.3f}  ({s['bytes']:,} bytes → {s['tokens']:,} tokens "
              f"over {s['texts']:,} text{'s' * (s['texts'] != 1)} from {s['source']})")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = run(args)
    except (UsageError, tk.TokenizerError, shards.DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=2, ensure_ascii=False)) if args.json else print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
