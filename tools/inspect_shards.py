"""Look inside a dataset directory: summarise its manifest, verify it, decode documents, count tokens.

    python tools/inspect_shards.py summary DIR            what the manifest says, readable
    python tools/inspect_shards.py verify DIR             recompute every checksum; exit 1 naming each problem
    python tools/inspect_shards.py decode DIR --doc 3 7   documents (or --window I, or --random K) as text
    python tools/inspect_shards.py stats DIR --plot s.png doc lengths, frequent tokens, bytes per token

Every subcommand takes ``--json`` for programs. The shard format itself is defined in ``shards/``;
this script only reads through it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from a fresh clone

import shards  # noqa: E402
import tokenizer as tk  # noqa: E402

EXIT_PROBLEMS = 1  # verify found damage
EXIT_USAGE = 2  # the user asked for something that cannot be done (missing dir, bad index, ...)


class UsageError(Exception):
    """A request that cannot be served; the message says why and what to do."""


# ---------------------------------------------------------------------------------------------------
# helpers

def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def split_names(manifest: dict, split: str) -> list[str]:
    return list(shards.SPLITS) if split == "all" else [split]


def load_tokenizer(directory: Path):
    path = directory / shards.TOKENIZER_NAME
    try:
        return tk.load(path)
    except tk.TokenizerError as e:
        raise UsageError(f"{e}; every dataset directory carries the tokenizer its shards were encoded with") from None


class SplitView:
    """The documents of one split, numbered 0.. across its shards in manifest order."""

    def __init__(self, directory: Path, manifest: dict, split: str):
        self.directory, self.manifest, self.split = directory, manifest, split
        self.entries = shards.split_shards(manifest, split)
        self.doc_counts = np.array([e["documents"] for e in self.entries], dtype=np.int64)
        self.first_doc = np.concatenate([[0], np.cumsum(self.doc_counts)])
        self.n_docs = int(self.first_doc[-1])
        self.n_tokens = sum(e["tokens"] for e in self.entries)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def _shard(self, k: int):
        if k not in self._cache:
            entry = self.entries[k]
            tokens = shards.open_tokens(self.directory, entry, self.manifest["dtype"])
            starts, ends = shards.document_bounds(shards.open_index(self.directory, entry), len(tokens))
            self._cache[k] = (tokens, starts, ends)
        return self._cache[k]

    def document(self, i: int) -> tuple[np.ndarray, str]:
        """Document ``i`` of the split (its ids, separator excluded) and the shard file holding it."""
        if not 0 <= i < self.n_docs:
            raise UsageError(f"document {i} is out of range: the {self.split} split has {self.n_docs:,} "
                             f"documents (0..{self.n_docs - 1})")
        k = int(np.searchsorted(self.first_doc, i, side="right") - 1)
        tokens, starts, ends = self._shard(k)
        j = i - int(self.first_doc[k])
        return np.asarray(tokens[starts[j]:ends[j]]), self.entries[k]["file"]

    def window(self, i: int, seq_len: int) -> tuple[np.ndarray, str]:
        """Window ``i`` of ``seq_len + 1`` tokens exactly as the training loader numbers and cuts them
        (``train.loader.TokenWindows``: per shard, starting every ``seq_len`` tokens)."""
        from train.loader import TokenWindows  # imports torch, so only when windows are asked for

        windows = TokenWindows(self.directory, self.manifest, self.split, seq_len)
        if not 0 <= i < windows.n_windows:
            raise UsageError(f"window {i} is out of range: the {self.split} split has {windows.n_windows:,} "
                             f"windows of seq_len + 1 = {seq_len + 1} tokens (0..{windows.n_windows - 1})")
        out = np.empty((1, seq_len + 1), dtype=np.int64)
        windows.gather(np.array([i]), out)
        files = [e["file"] for e in self.entries if shards.window_count(e["tokens"], seq_len) > 0]
        return out[0], files[int(np.searchsorted(windows.first, i, side="right") - 1)]

    def lengths(self) -> np.ndarray:
        """Every document's length in tokens (separator excluded), read from the indexes only."""
        out = []
        for entry in self.entries:
            offsets = shards.open_index(self.directory, entry).astype(np.int64)
            out.append(np.diff(np.append(offsets, entry["tokens"])) - 1)
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# summary

def summarize(directory: Path) -> dict:
    manifest = shards.load_manifest(directory)
    splits = {}
    for split in shards.SPLITS:
        entries = shards.split_shards(manifest, split)
        tokens = sum(e["tokens"] for e in entries)
        docs = sum(e["documents"] for e in entries)
        splits[split] = {"shards": len(entries), "documents": docs, "tokens": tokens,
                         "tokens_per_document": tokens / docs if docs else 0.0}
    files = [p for p in directory.iterdir() if p.is_file()]
    shard_bytes = sum(p.stat().st_size for p in files if p.suffix in (".bin", ".idx"))
    return {
        "directory": str(directory), "format_version": manifest["format_version"], "dtype": manifest["dtype"],
        "vocab_size": manifest["vocab_size"], "eot_id": manifest["eot_id"],
        "tokenizer_sha256": manifest["tokenizer_sha256"], "dataset_fingerprint": shards.dataset_fingerprint(manifest),
        "splits": splits, "totals": {"shards": len(manifest["shards"]),
                                     "documents": sum(s["documents"] for s in splits.values()),
                                     "tokens": sum(s["tokens"] for s in splits.values())},
        "inputs": manifest["inputs"], "skipped": manifest["skipped"], "options": manifest["options"],
        "plan": manifest.get("plan"), "sources": manifest.get("sources", []),
        "record_sources": manifest.get("record_sources", {}),
        # files cut at their token budget, whose gzip checksum was therefore not checked, and the bytes the
        # build's plan expected to download against those it read of its URLs (builds of stage 1 since both)
        "unverified_cut_files": manifest.get("unverified_cut_files", []), "download": manifest.get("download"),
        "size_on_disk": {"total_bytes": sum(p.stat().st_size for p in files), "shard_bytes": shard_bytes},
    }


def _describe_input(item) -> str:
    if not isinstance(item, dict):
        return str(item)
    name = next((item[k] for k in ("path", "file", "name", "source", "url") if k in item), None)
    rest = []
    for k, v in item.items():
        if v == name:
            continue
        if isinstance(v, int) and not isinstance(v, bool):
            v = human_bytes(v) if "bytes" in k or k == "size" else f"{v:,}"
        rest.append(f"{k} {v}")
    return f"{name or '?'}  " + " · ".join(rest) if rest else str(name)


def print_summary(s: dict) -> None:
    print(f"dataset {s['directory']}")
    print(f"  format v{s['format_version']} · {s['dtype']} · vocab {s['vocab_size']:,} · "
          f"separator <|endoftext|> = id {s['eot_id']}")
    print(f"  tokenizer sha256 {s['tokenizer_sha256'][:16]}…  dataset fingerprint {s['dataset_fingerprint'][:16]}…")
    print()
    print(f"  {'split':<6} {'shards':>6} {'documents':>12} {'tokens':>15} {'tokens/doc':>11}")
    rows = list(s["splits"].items()) + [("total", {**s["totals"], "tokens_per_document":
                                                   s["totals"]["tokens"] / max(s["totals"]["documents"], 1)})]
    for name, r in rows:
        print(f"  {name:<6} {r['shards']:>6,} {r['documents']:>12,} {r['tokens']:>15,} "
              f"{r['tokens_per_document']:>11.1f}")
    print()
    if s["sources"]:
        from preprocess.progress import source_table  # the builder's own table, as its summary prints it
        plan = s["plan"] or {}
        cap = f", --max-tokens {plan['max_tokens']:,}" if plan.get("max_tokens") else ""
        print(f"  sources ({plan.get('mode', 'whole')} plan{cap}, seed {plan.get('seed')}):")
        for line in source_table(s["sources"]):
            print("  " + line)
        if s["record_sources"]:
            total = max(s["totals"]["tokens"], 1)
            rs = sorted(s["record_sources"].items(), key=lambda kv: -kv[1]["tokens"])
            print("  records' own \"source\" field, share of tokens: "
                  + ", ".join(f"{k} {v['tokens'] / total:.1%}" for k, v in rs[:8]) + (" ..." if len(rs) > 8 else ""))
        print()
    inputs = s["inputs"]
    print(f"  inputs ({len(inputs)})" + (":" if inputs else ": none recorded"))
    for item in inputs[:20]:
        print(f"    {_describe_input(item)}")
    if len(inputs) > 20:
        print(f"    … and {len(inputs) - 20} more (--json lists them all)")
    from preprocess.progress import cut_lines  # the builder's own lines, as its summary prints them
    for line in cut_lines(s):
        print(line)
    if s["download"]:
        d = s["download"]
        print(f"  URLs: {human_bytes(d['read_bytes'])} of their files read, {human_bytes(d['expected_bytes'])} "
              f"expected to download by the plan" + (f"; --verify-cut-files would read "
                                                    f"{human_bytes(d['verify_cut_files_bytes'])} more"
                                                    if d.get("verify_cut_files_bytes") else ""))
    skipped = s["skipped"]
    total_skipped = sum(v for v in skipped.values() if isinstance(v, (int, float)))
    print(f"  skipped documents: {total_skipped:,}" + (
        "  (" + ", ".join(f"{k} {v:,}" for k, v in sorted(skipped.items(), key=lambda kv: -kv[1])) + ")"
        if skipped else ""))
    d = s["size_on_disk"]
    print(f"  size on disk: {human_bytes(d['total_bytes'])} ({human_bytes(d['shard_bytes'])} of shards and indexes)")


# ---------------------------------------------------------------------------------------------------
# verify

def verify(directory: Path) -> dict:
    """Every problem with the directory: the shard checks of ``shards.verify_dataset`` plus the
    tokenizer file's fingerprint against the manifest's."""
    problems = []
    tok_path = directory / shards.TOKENIZER_NAME
    sha = None
    if directory.is_dir():
        if not tok_path.exists():
            problems.append(f"{shards.TOKENIZER_NAME}: missing; the shards cannot be decoded without it")
        else:
            try:
                sha = tk.fingerprint(tok_path)
            except (ValueError, UnicodeDecodeError) as e:
                problems.append(f"{shards.TOKENIZER_NAME}: not valid JSON ({e})")
    problems = shards.verify_dataset(directory, tokenizer_sha256=sha) + problems
    checked = {"shards": 0, "tokens": 0}
    if (directory / shards.MANIFEST_NAME).exists():
        try:
            manifest = shards.load_manifest(directory)
            checked = {"shards": len(manifest["shards"]), "tokens": sum(e["tokens"] for e in manifest["shards"])}
        except shards.DatasetError:
            pass
    return {"directory": str(directory), "ok": not problems, "problems": problems, **checked}


def print_verify(r: dict) -> None:
    if r["ok"]:
        print(f"OK {r['directory']}: {r['shards']} shards, {r['tokens']:,} tokens; checksums, token ids, "
              f"indexes, totals and tokenizer all match the manifest")
        return
    n = len(r["problems"])
    print(f"FAILED {r['directory']}: {n} problem{'s' * (n != 1)}")
    for p in r["problems"]:
        print(f"  - {p}")
    print("Restore the damaged files, or rebuild the dataset with `python -m preprocess --overwrite`.")


# ---------------------------------------------------------------------------------------------------
# decode

def decode(directory: Path, split: str, docs: list[int], windows: list[int], seq_len: int,
           random: int | None, seed: int) -> dict:
    manifest = shards.load_manifest(directory)
    tok = load_tokenizer(directory)
    view = SplitView(directory, manifest, split)
    if view.n_docs == 0:
        raise UsageError(f"the {split} split of {directory} has no documents")
    items = []
    if random is None and not docs and not windows:
        random = 3
    if random is not None and random < 1:
        raise UsageError(f"--random {random}: give how many documents to draw, at least 1")
    if random is not None:
        k = min(random, view.n_docs)
        docs = docs + sorted(np.random.default_rng(seed).choice(view.n_docs, size=k, replace=False).tolist())
    for i in docs:
        ids, file = view.document(i)
        items.append({"kind": "document", "index": i, "file": file, "ids": ids.tolist()})
    for i in windows:
        ids, file = view.window(i, seq_len)
        items.append({"kind": "window", "index": i, "seq_len": seq_len, "file": file, "ids": ids.tolist()})
    for item in items:
        item["tokens"] = len(item["ids"])
        # the separator is kept visible inside windows: that is where one document ends and the next begins
        item["text"] = tok.decode(item["ids"], skip_special_tokens=False)
    return {"directory": str(directory), "split": split, "items": items}


def print_decode(r: dict, show_ids: bool, max_chars: int) -> None:
    for item in r["items"]:
        head = f"{r['split']} {item['kind']} {item['index']}"
        title = f"── {head} · {item['tokens']:,} tokens · {item['file']} "
        print(title + "─" * max(3, 78 - len(title)))
        text = item["text"]
        if max_chars and len(text) > max_chars:
            text = text[:max_chars] + f"… [{len(item['text']) - max_chars:,} more characters; --max-chars 0 shows all]"
        print(text)
        if show_ids:
            print(f"ids: {item['ids']}")
        print()


# ---------------------------------------------------------------------------------------------------
# stats

def stats(directory: Path, split: str, top: int, sample_docs: int, seed: int, bins: int) -> dict:
    manifest = shards.load_manifest(directory)
    tok = load_tokenizer(directory)
    vocab_size, eot = manifest["vocab_size"], manifest["eot_id"]
    counts = np.zeros(vocab_size, dtype=np.int64)
    lengths, text_bytes, text_tokens, text_docs = [], 0, 0, 0
    rng = np.random.default_rng(seed)
    for name in split_names(manifest, split):
        view = SplitView(directory, manifest, name)
        lengths.append(view.lengths())
        for entry in view.entries:
            tokens = shards.open_tokens(directory, entry, manifest["dtype"])
            for a in range(0, len(tokens), 1 << 24):  # bincount in chunks so a big shard stays out of RAM
                counts += np.bincount(tokens[a:a + (1 << 24)], minlength=vocab_size)[:vocab_size]
        # bytes per token needs decoding, so it is measured on a seeded sample of documents
        picked = rng.choice(view.n_docs, size=min(sample_docs, view.n_docs), replace=False) if view.n_docs else []
        for i in picked:
            ids, _ = view.document(int(i))
            text_bytes += len(tok.decode(ids.tolist()).encode("utf-8"))
            text_tokens += len(ids)
            text_docs += 1
    lengths = np.concatenate(lengths) if lengths else np.zeros(0, dtype=np.int64)
    total = int(counts.sum())
    if total == 0:
        raise UsageError(f"the {split} split of {directory} holds no tokens")
    order = np.argsort(-counts, kind="stable")[:top]
    hist_counts, edges = _length_histogram(lengths, bins)
    return {
        "directory": str(directory), "split": split, "tokens": total, "documents": int(len(lengths)),
        "separator_share": counts[eot] / total,
        "bytes_per_token": text_bytes / text_tokens if text_tokens else None,
        "bytes_per_token_sample": {"documents": text_docs, "tokens": text_tokens},
        "distinct_tokens_used": int(np.count_nonzero(counts)),
        "document_length": {
            "mean": float(lengths.mean()) if len(lengths) else 0.0,
            **({f"p{q}": int(np.percentile(lengths, q)) for q in (0, 50, 90, 99, 100)} if len(lengths) else {}),
            "histogram": {"edges": edges, "counts": hist_counts},
        },
        "top_tokens": [{"id": int(i), "piece": tok.decode([int(i)], skip_special_tokens=False),
                        "count": int(counts[i]), "share": counts[i] / total} for i in order],
        "_lengths": lengths, "_counts": counts,
    }


def _length_histogram(lengths: np.ndarray, bins: int) -> tuple[list[int], list[int]]:
    """Counts over log-spaced integer bins from the shortest to the longest document, so short and
    very long documents both show; ``edges[i] <= length < edges[i + 1]``."""
    if len(lengths) == 0:
        return [], []
    lo, hi = int(lengths.min()), int(lengths.max())
    edges = np.unique(np.geomspace(max(lo, 1), hi + 1, num=bins + 1).round().astype(np.int64))
    edges[0], edges[-1] = lo, max(edges[-1], hi + 1)
    edges = np.unique(edges)
    counts, _ = np.histogram(lengths, bins=edges)
    return counts.tolist(), edges.tolist()


def print_stats(s: dict) -> None:
    d = s["document_length"]
    print(f"dataset {s['directory']} · split {s['split']} · {s['documents']:,} documents · {s['tokens']:,} tokens")
    bpt = s["bytes_per_token"]
    print(f"  bytes per token: {bpt:.3f} (UTF-8 bytes of decoded text over {s['bytes_per_token_sample']['tokens']:,} "
          f"sampled tokens)" if bpt else "  bytes per token: n/a (no documents)")
    print(f"  separator share: {s['separator_share']:.2%} of tokens are <|endoftext|>")
    print(f"  distinct tokens used: {s['distinct_tokens_used']:,}")
    if s["documents"]:
        print(f"  document length (tokens): mean {d['mean']:.1f} · min {d['p0']:,} · median {d['p50']:,} · "
              f"p90 {d['p90']:,} · p99 {d['p99']:,} · max {d['p100']:,}")
        edges, counts = d["histogram"]["edges"], d["histogram"]["counts"]
        peak = max(counts) or 1
        for a, b, c in zip(edges, edges[1:], counts, strict=False):
            label = f"{a:,}" if b - a == 1 else f"{a:,}–{b - 1:,}"
            print(f"    {label:>15} {c:>10,} {'█' * round(40 * c / peak)}")
    print("  most frequent tokens:")
    for r in s["top_tokens"]:
        print(f"    {r['id']:>7} {r['piece']!r:<24} {r['count']:>12,} {r['share']:>7.2%}")


def plot_stats(s: dict, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    lengths = s["_lengths"]
    if len(lengths):
        edges = np.geomspace(1, max(int(lengths.max()), 2) + 1, 50)
        ax1.hist(np.maximum(lengths, 1), bins=edges, color="tab:blue")
        ax1.set_xscale("log")
    ax1.set(title=f"document length ({s['documents']:,} docs, {s['split']})", xlabel="tokens", ylabel="documents")
    counts = np.sort(s["_counts"][s["_counts"] > 0])[::-1]
    ax2.loglog(np.arange(1, len(counts) + 1), counts / counts.sum(), color="tab:orange")
    ax2.set(title="token frequency by rank", xlabel="rank", ylabel="share of tokens")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="inspect_shards.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="{summary,verify,decode,stats}")

    def add(name, help_text):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        sp.add_argument("dir", type=Path, metavar="DIR", help="dataset directory (holds manifest.json)")
        sp.add_argument("--json", action="store_true", help="print one JSON object instead of text")
        return sp

    add("summary", "tokens and documents per split, dtype, vocabulary, tokenizer, inputs, skipped, size on disk")
    add("verify", "recompute every checksum and check ids, indexes, totals and the tokenizer; exit 1 on any problem")
    d = add("decode", "decode documents or training windows back to text (default: 3 random documents)")
    d.add_argument("--split", choices=shards.SPLITS, default="val", help="which split (default: val)")
    d.add_argument("--doc", type=int, nargs="+", default=[], metavar="I", help="document numbers within the split")
    d.add_argument("--window", type=int, nargs="+", default=[], metavar="I",
                   help="training windows of seq_len + 1 tokens, numbered and cut as train/loader.py does")
    d.add_argument("--seq-len", type=int, default=1024, help="window length for --window (default: 1024)")
    d.add_argument("--random", type=int, metavar="K", help="K documents drawn at random (seeded)")
    d.add_argument("--seed", type=int, default=0, help="seed for --random (default: 0)")
    d.add_argument("--ids", action="store_true", help="also print the token ids")
    d.add_argument("--max-chars", type=int, default=2000, help="cut long texts at this many characters; 0 = never")
    s = add("stats", "document-length histogram, most frequent tokens, bytes per token, separator share")
    s.add_argument("--split", choices=(*shards.SPLITS, "all"), default="all", help="which split (default: all)")
    s.add_argument("--top", type=int, default=20, help="how many frequent tokens to list (default: 20)")
    s.add_argument("--bins", type=int, default=12, help="length histogram bins (log spaced; default: 12)")
    s.add_argument("--sample-docs", type=int, default=2000,
                   help="documents per split decoded to measure bytes per token (default: 2000)")
    s.add_argument("--seed", type=int, default=0, help="seed for the bytes-per-token sample (default: 0)")
    s.add_argument("--plot", type=Path, metavar="FILE.png", help="also draw the histograms to this image")
    return p


def _jsonable(obj: dict) -> dict:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "summary":
            r = summarize(args.dir)
            print(json.dumps(r, indent=2)) if args.json else print_summary(r)
            return 0
        if args.command == "verify":
            r = verify(args.dir)
            print(json.dumps(r, indent=2)) if args.json else print_verify(r)
            return 0 if r["ok"] else EXIT_PROBLEMS
        if args.command == "decode":
            if args.seq_len < 1:
                raise UsageError(f"--seq-len must be at least 1, got {args.seq_len}")
            r = decode(args.dir, args.split, args.doc, args.window, args.seq_len, args.random, args.seed)
            if args.json:
                print(json.dumps(r, indent=2, ensure_ascii=False))
            else:
                print_decode(r, args.ids, args.max_chars)
            return 0
        r = stats(args.dir, args.split, args.top, args.sample_docs, args.seed, args.bins)
        if args.plot:
            plot_stats(r, args.plot)
            r["plot"] = str(args.plot)
        print(json.dumps(_jsonable(r), indent=2, ensure_ascii=False)) if args.json else print_stats(r)
        if args.plot and not args.json:
            print(f"  histograms drawn to {args.plot}")
        return 0
    except (shards.DatasetError, UsageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader stopped reading (`| head`): not an error of the dataset
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error as Python exits
        return 0
    except OSError as e:
        print(f"error: {e.filename or args.dir}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
