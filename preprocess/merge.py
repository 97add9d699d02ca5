"""``python -m preprocess merge PART_DIR ... --out DIR``: join the parts of a multi-machine build.

Each part was built with ``--part I/N`` and the same ``--tokenizer`` and options, so each read of
the one plan (``plan.json``, the same in every part) is in exactly one part, and every document in
the split its hash gives it. Merging renumbers the parts' shards in part order (train shards of part
1, then of part 2, ...; the same for val), leaves their bytes untouched (checksums carry over), and
writes one manifest with the inputs, counts, per-source rows and skips of all parts. The result
holds exactly the documents a single-machine build of the same plan would (in another order: part
1's files first). Shards are hard-linked when OUT is on the parts' filesystem, else copied.
"""
from __future__ import annotations

import argparse
import errno
import os
import shutil
import sys
from pathlib import Path

import shards
from preprocess.options import differences, parse_part
from preprocess.plan import PLAN_NAME
from preprocess.state import clear_output


class MergeError(shards.PipelineError):
    """Parts that cannot be merged; the message says why and what to do."""


# per-source counts that add up across parts (files: each part plans and reads its own share)
_SUMMED = ("files_planned", "files_opened", "files_finished", "files_bad", "documents", "tokens")


def _load_parts(part_dirs: list[str]) -> list[tuple[Path, dict]]:
    parts = []
    for d in part_dirs:
        try:
            parts.append((Path(d), shards.load_manifest(d)))
        except shards.DatasetError as e:
            raise MergeError(f"part {d}: {e}") from None
    first_dir, first = parts[0]
    for d, m in parts:
        if m["options"].get("part") is None:
            raise MergeError(f"{d} was not built with --part I/N; merge joins the parts of one multi-machine build")
        for key in ("tokenizer_sha256", "dtype", "vocab_size", "eot_id"):
            if m[key] != first[key]:
                raise MergeError(f"{d} has {key} {m[key]!r} but {first_dir} has {first[key]!r}: the parts were not "
                                 f"built with the same tokenizer and dtype; rebuild them with the same "
                                 f"--tokenizer FILE")
        diff = differences(first["options"], m["options"], ignore=("part",))
        if diff:
            raise MergeError(f"{d} was built with other options than {first_dir}: " + "; ".join(diff)
                             + ". Rebuild the odd part with the same options")
        if (m.get("plan") or {}).get("sha256") != (first.get("plan") or {}).get("sha256"):
            raise MergeError(f"{d} was built from another plan than {first_dir} (its {PLAN_NAME} differs: other "
                             f"input files or sizes); rebuild the odd part from the same input list")
    numbers = sorted(parse_part(m["options"]["part"]) for _, m in parts)
    n = numbers[0][1]
    if any(total != n for _, total in numbers):
        raise MergeError(f"the parts split the input into different numbers of parts: "
                         f"{sorted({t for _, t in numbers})}; use the parts of one --part I/N build")
    have = [i for i, _ in numbers]
    missing = sorted(set(range(1, n + 1)) - set(have))
    twice = sorted({i for i in have if have.count(i) > 1})
    if missing or twice:
        raise MergeError(f"merge needs each of the {n} parts exactly once: "
                         + (f"missing {', '.join(f'{i}/{n}' for i in missing)}" if missing else "")
                         + ("; " if missing and twice else "")
                         + (f"given twice {', '.join(f'{i}/{n}' for i in twice)}" if twice else ""))
    return sorted(parts, key=lambda p: parse_part(p[1]["options"]["part"]))


def _place(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or no hard links there
        tmp = dst.with_name(f".{dst.name}.copy")
        try:
            shutil.copyfile(src, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(dst)


def _place_all(placements: list[tuple[Path, Path]], out: Path) -> None:
    """Hard-link (or copy) each (part file, merged file); a full disk names the file, the space the rest
    of the merge needs and what is free, and leaves the parts as they were."""
    for k, (src, dst) in enumerate(placements):
        try:
            _place(src, dst)
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            needed = sum(s.stat().st_size for s, _ in placements[k:])
            raise MergeError(f"{shards.DiskFull(dst, needed)}. The parts are untouched and {out} holds no dataset "
                             f"yet: free space there, or give another --out, and run the same merge again") from None


def merge(part_dirs: list[str], out: str | os.PathLike, overwrite: bool = False) -> dict:
    """Merge finished part directories into ``out``; returns the manifest."""
    parts = _load_parts(part_dirs)
    out = Path(out)
    if any(out.resolve() == d.resolve() for d, _ in parts):
        raise MergeError(f"--out {out} is one of the parts; merge into a new directory")
    if (out / shards.MANIFEST_NAME).exists() and not overwrite:
        raise MergeError(f"{out} already holds a dataset; use another --out, or --overwrite to replace it")
    out.mkdir(parents=True, exist_ok=True)
    clear_output(out)
    first_dir, first = parts[0]
    placements = [(first_dir / shards.TOKENIZER_NAME, out / shards.TOKENIZER_NAME)]
    if (first_dir / PLAN_NAME).exists():
        placements.append((first_dir / PLAN_NAME, out / PLAN_NAME))
    entries, next_index = [], {s: 0 for s in shards.SPLITS}
    for split in shards.SPLITS:
        for d, m in parts:
            for e in shards.split_shards(m, split):
                name = shards.shard_file_name(split, next_index[split])
                next_index[split] += 1
                placements.append((d / shards.index_file_name(e["file"]), out / shards.index_file_name(name)))
                placements.append((d / e["file"], out / name))
                entries.append({**e, "file": name})
    _place_all(placements, out)
    totals = {s: {k: sum(m["totals"][s][k] for _, m in parts) for k in ("tokens", "documents")}
              for s in shards.SPLITS}
    skipped: dict[str, int] = {}
    for _, m in parts:
        for reason, count in m["skipped"].items():
            skipped[reason] = skipped.get(reason, 0) + count
    sources: dict[str, dict] = {}
    for _, m in parts:
        for row in m.get("sources", []):
            into = sources.setdefault(row["source"], {**row, **{k: 0 for k in _SUMMED}})
            for k in _SUMMED:
                into[k] += row[k]
    total = sum(t["tokens"] for t in totals.values())
    for row in sources.values():
        row["share"] = row["tokens"] / total if total else 0.0
    record_sources: dict[str, dict] = {}
    for _, m in parts:
        for name, c in m.get("record_sources", {}).items():
            into = record_sources.setdefault(name, {"documents": 0, "tokens": 0})
            into["documents"] += c["documents"]
            into["tokens"] += c["tokens"]
    manifest = {
        **{k: first[k] for k in ("format_version", "dtype", "vocab_size", "eot_id", "tokenizer_sha256")},
        "shards": entries,
        "totals": totals,
        "inputs": [x for _, m in parts for x in m["inputs"]],
        "skipped": dict(sorted(skipped.items())),
        "options": {**first["options"], "part": None},
        "plan": {**(first.get("plan") or {}), "part": None},
        "sources": list(sources.values()),
        "record_sources": dict(sorted(record_sources.items())),
        "merged_from": [{"dir": str(d), "part": m["options"]["part"], "totals": m["totals"]} for d, m in parts],
        "encoder": [m.get("encoder") for _, m in parts],
        "split": first.get("split"),
        "repaired": {"lone_surrogates": sum(m.get("repaired", {}).get("lone_surrogates", 0) for _, m in parts)},
        "stopped_at_max_tokens": any(m.get("stopped_at_max_tokens") for _, m in parts),
        "unverified_cut_files": [x for _, m in parts for x in m.get("unverified_cut_files", [])],
    }
    downloads = [m.get("download") for _, m in parts]
    if all(downloads):  # each part's own, so they add up
        manifest["download"] = {k: sum(d[k] for d in downloads) for k in downloads[0]}
    try:
        shards.write_manifest(out, manifest)
    except shards.DiskFull as e:
        raise MergeError(f"{e}. The parts are untouched and {out} holds no dataset yet: free space there, or give "
                         f"another --out, and run the same merge again") from None
    return manifest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m preprocess merge", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\n")[1],
        epilog="example:\n  python -m preprocess --tokenizer-only --input-list urls.txt --out data/tok\n"
               "  python -m preprocess --input-list urls.txt --tokenizer data/tok/tokenizer.json --part 1/2 \\\n"
               "      --out data/p1\n"
               "  python -m preprocess --input-list urls.txt --tokenizer data/tok/tokenizer.json --part 2/2 \\\n"
               "      --out data/p2\n"
               "  python -m preprocess merge data/p1 data/p2 --out data/dolma")
    p.add_argument("parts", nargs="+", metavar="PART_DIR", help="finished part directories, in any order")
    p.add_argument("--out", required=True, metavar="DIR", help="the merged dataset directory")
    p.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    args = p.parse_args(argv)
    try:
        m = merge(args.parts, args.out, args.overwrite)
    except shards.PipelineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t = m["totals"]
    print(f"merged {len(args.parts)} parts into {args.out}: {len(m['shards'])} shards, "
          f"train {t['train']['documents']:,} documents / {t['train']['tokens']:,} tokens, "
          f"val {t['val']['documents']:,} / {t['val']['tokens']:,}")
    return 0
