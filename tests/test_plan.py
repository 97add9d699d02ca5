"""The plan: sources, sizes, quotas, the seeded file order, the tokenizer sample and parts; and what a
sampled build over a Dolma-style list served over HTTP holds (tests/conftest.py: DOLMA_LIKE)."""
from __future__ import annotations

import collections
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tokenizers import Tokenizer

import shards
from preprocess import plan as plans
from preprocess.cli import main
from preprocess.readers import InputFile
from tests.conftest import (
    DOLMA_LIKE,
    ROOT,
    assert_nothing_lost,
    decoded_documents,
    file_hashes,
    load_tool,
    signature_words,
)

# --- sources ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path,source", [
    ("dolma/v1_7/cc_en_head-0123.json.gz", "cc_en_head"),
    ("https://olmo-data.org/dolma-v1_7/c4/c4-0007.json.gz?token=x", "c4"),
    ("algebraic-stack-train-0000.json.gz", "algebraic-stack-train"),
    ("redpajama/en_head_0000.json.gz", "en_head"),
    ("fineweb/data/CC-MAIN-2024-10/000_00000.parquet", "CC-MAIN-2024-10"),
    ("books.part.3.jsonl.zst", "books.part"),
    ("corpus.jsonl", "corpus"),
    ("notes/readme.txt", "readme"),
    ("hf:allenai/c4:en:train", "hf:allenai/c4:en:train"),
])
def test_a_source_is_the_file_name_without_its_shard_number(path, source):
    assert plans.source_of(path) == source


def test_a_source_pattern_overrides_the_rule_and_must_match_every_input():
    pattern = plans.compile_source_pattern(r"/(\w+)/[^/]+$")
    assert plans.source_of("data/wiki/part-0001.jsonl", pattern) == "wiki"
    with pytest.raises(plans.PlanError, match="does not match part-0001.jsonl"):
        plans.source_of("part-0001.jsonl", pattern)
    with pytest.raises(plans.PlanError, match="exactly one group"):
        plans.compile_source_pattern(r"(a)(b)")
    with pytest.raises(plans.PlanError, match="not a regular expression"):
        plans.compile_source_pattern(r"(")


def test_mix_parsing_names_what_is_wrong():
    assert plans.parse_mix("cc_en_head=0.5, c4=0.2") == {"cc_en_head": 0.5, "c4": 0.2}
    for bad, why in [("cc=0.7,c4=0.5", "add up to 1.2"), ("cc", "not SOURCE=SHARE"), ("cc=-1", "not SOURCE=SHARE"),
                     ("cc=x", "not SOURCE=SHARE"), ("cc=0.1,cc=0.2", "twice"), (",", "names no source")]:
        with pytest.raises(plans.PlanError, match=why):
            plans.parse_mix(bad)


# --- quotas, budgets, the seeded order ---------------------------------------------------------------

def _inputs(spec: dict[str, list[int]]) -> list[InputFile]:
    """Inputs named like Dolma's, sorted by name: {source: [file sizes]}."""
    return [InputFile(f"/d/{name}-{k:04d}.json.gz", "jsonl.gz", size)
            for name, sizes in sorted(spec.items()) for k, size in enumerate(sizes)]


SPEC = {"arxiv": [1000] * 4, "books": [5000], "cc_en_head": [3000, 2000, 4000, 3000, 2500, 3500, 3000, 3000],
        "wiki": [400, 600]}


def _planned(max_tokens=6000, rates=None, **kw) -> plans.Plan:
    p = plans.Plan.make(_inputs(SPEC), max_tokens=max_tokens, sample_bytes=10_000, **kw)
    p.set_rates(rates or {"arxiv": (1.0, 1000), "books": (0.5, 1000), "cc_en_head": (0.8, 1000), "wiki": (1.2, 1000)})
    return p


def test_a_proportional_plan_gives_every_source_its_share_of_the_input_in_tokens():
    p = _planned()
    est = {"arxiv": 4000, "books": 2500, "cc_en_head": 19200, "wiki": 1200}
    total = sum(est.values())
    for s in p.sources:
        assert s.est_tokens == est[s.name]
        assert s.share == pytest.approx(est[s.name] / total)
        assert s.quota == round(6000 * est[s.name] / total)
    # per source: whole files while their estimates fit the quota, then one with the rest as its budget
    by_source = collections.defaultdict(list)
    owner = p.source_of_input()
    for i, budget in p.reads:
        by_source[owner[i]].append((i, budget))
    for s in p.sources:
        reads = by_source[s.name]
        assert [i for i, _ in reads] == s.files[:len(reads)]  # a prefix of the seeded order
        whole = [i for i, b in reads if b is None]
        assert all(b is None for _, b in reads[:-1])
        estimate = sum(p.inputs[i][2] * s.tokens_per_byte for i in whole)
        assert estimate + (reads[-1][1] or 0) == pytest.approx(s.quota, abs=1)


def test_the_file_order_is_seeded_not_the_list_order():
    a, b, c = _planned(seed=0), _planned(seed=0), _planned(seed=1)
    assert a.reads == b.reads
    cc = {s.name: s.files for s in a.sources}["cc_en_head"]
    assert cc != sorted(cc) and sorted(cc) == sorted({s.name: s.files for s in c.sources}["cc_en_head"])
    assert cc != {s.name: s.files for s in c.sources}["cc_en_head"]
    # the reads interleave the sources (by how far into its quota each read lies), not one after another
    owner = [a.source_of_input()[i] for i, _ in a.reads]
    changes = sum(x != y for x, y in itertools.pairwise(owner))
    assert changes > len(set(owner)) - 1, owner


def test_a_mix_gives_named_sources_their_share_and_the_rest_to_the_others_by_size():
    p = _planned(mix={"books": 0.2, "wiki": 0.1})
    q = {s.name: s for s in p.sources}
    assert q["books"].target == pytest.approx(0.2) and q["wiki"].target == pytest.approx(0.1)
    rest = q["arxiv"].est_tokens + q["cc_en_head"].est_tokens
    assert q["arxiv"].target == pytest.approx(0.7 * q["arxiv"].est_tokens / rest)
    assert q["books"].quota == 1200 and q["wiki"].quota == 600
    # every source named: the shares are scaled to add up to 1; a source at 0 is left out
    p = _planned(mix={"books": 0.1, "wiki": 0.1, "arxiv": 0.2, "cc_en_head": 0.0})
    q = {s.name: s for s in p.sources}
    assert [q[n].target for n in ("books", "wiki", "arxiv", "cc_en_head")] == pytest.approx([0.25, 0.25, 0.5, 0])
    assert not any(p.source_of_input()[i] == "cc_en_head" for i, _ in p.reads)


def test_a_source_smaller_than_its_quota_is_read_whole_and_the_plan_says_so():
    p = _planned(mix={"wiki": 0.5})
    wiki = {s.name: s for s in p.sources}["wiki"]
    assert wiki.quota == wiki.est_tokens == 1200 < 3000
    assert all(b is None for i, b in p.reads if p.source_of_input()[i] == "wiki")
    assert "wiki holds about 1.20k tokens, less than its target of 3.00k: it is read whole" in plans.describe(p)


def test_mix_names_must_be_sources():
    with pytest.raises(plans.PlanError, match="names c4, which is not a source.*arxiv, books, cc_en_head, wiki"):
        plans.Plan.make(_inputs(SPEC), max_tokens=100, mix={"c4": 0.5}, sample_bytes=10)


def test_parts_stride_the_plans_reads():
    p = _planned()
    parts = [p.part_reads((i, 3)) for i in (1, 2, 3)]
    assert sorted(r for part in parts for r in part) == sorted(p.reads)
    assert parts[1] == p.reads[1::3]


def test_without_max_tokens_or_with_in_order_every_input_is_read_in_the_order_given():
    for kw in ({"max_tokens": None}, {"max_tokens": 500, "in_order": True}):
        p = plans.Plan.make(_inputs(SPEC), sample_bytes=100, **kw)
        assert p.reads == [[i, None] for i in range(len(p.inputs))]
        assert p.mode == ("whole" if kw["max_tokens"] is None else "in_order")


def test_the_tokenizer_sample_is_spread_over_the_sources_in_their_shares():
    p = plans.Plan.make(_inputs(SPEC), max_tokens=6000, sample_bytes=10_000)
    budgets = {s.name: (b, n) for s, b, n in p.sample_budgets()}
    sizes = {name: sum(v) for name, v in SPEC.items()}  # one kind: shares by size before measuring
    for name, (b, n) in budgets.items():
        assert b == pytest.approx(10_000 * sizes[name] / sum(sizes.values()), abs=1)
        assert 1 <= n <= plans.SAMPLE_FILES
    assert budgets["cc_en_head"][1] < len(SPEC["cc_en_head"])  # the files the quota needs, not all of them


def test_a_sampled_plan_needs_every_size():
    inputs = [InputFile("hf:allenai/c4", "hf", None), InputFile("/d/wiki-0000.json.gz", "jsonl.gz", 100)]
    with pytest.raises(plans.PlanError, match="has none.*use --in-order"):
        plans.Plan.make(inputs, max_tokens=100, sample_bytes=10)
    assert plans.Plan.make(inputs, max_tokens=100, in_order=True, sample_bytes=10).reads == [[0, None], [1, None]]
    # one source of unknown size is all of the sample: read in order until --max-tokens
    assert plans.Plan.make(inputs[:1], max_tokens=100, sample_bytes=10).mode == "in_order"


# --- a Dolma-style list over HTTP ---------------------------------------------------------------------

def _serve(static_server, dolma_like, tmp_path, missing=()) -> tuple[Path, int]:
    root, _ = dolma_like
    static_server.root = root
    static_server.missing = set(missing)
    names = sorted(p.name for p in root.iterdir())
    urls = tmp_path / "v1_7.txt"
    urls.write_text("".join(static_server.url(n) + "\n" for n in names))
    return urls, sum((root / n).stat().st_size for n in names)


def _tokens_per_source(dolma_like, tokenizer: Path) -> dict[str, int]:
    """Every source's tokens in the whole list (separators included), with the build's tokenizer."""
    tok = Tokenizer.from_file(str(tokenizer))
    return {name: sum(len(e.ids) + 1 for e in tok.encode_batch(c["texts"])) for name, c in dolma_like[1].items()}


TENTH = ["--vocab-size", "2000", "--tokenizer-sample-bytes", "100k", "--val-fraction", "0.01", "--quiet"]


def _tenth(dolma_like) -> str:
    """About a tenth of the list's tokens (estimated from its words: about one token each)."""
    words = sum(len(t.split()) for c in dolma_like[1].values() for t in c["texts"])
    return str(words // 10)


def _shares(manifest) -> dict[str, float]:
    return {r["source"]: r["share"] for r in manifest["sources"]}


def _kept_bytes(manifest, root: Path) -> int:
    """The compressed bytes of what a build kept, found here from the files themselves: a file read to
    its end, whole; a file cut at its budget, the shortest prefix that inflates to the records it took."""
    import zlib

    def prefix(data: bytes, lines: int) -> int:
        lo, hi = 0, len(data)
        while lo < hi:
            mid = (lo + hi) // 2
            try:
                enough = zlib.decompressobj(wbits=31).decompress(data[:mid]).count(b"\n") >= lines
            except zlib.error:
                enough = False
            lo, hi = (lo, mid) if enough else (mid + 1, hi)
        return lo
    kept = 0
    for x in manifest["inputs"]:
        data = (root / x["path"].rsplit("/", 1)[1]).read_bytes()
        if x["status"] == "ok":
            kept += len(data)
        elif x["status"].startswith("partly read"):
            kept += prefix(data, x["records"])
    return kept


@pytest.mark.slow
def test_a_sampled_build_of_a_dolma_style_list_holds_its_mix_and_downloads_little_more_than_it_keeps(
        static_server, dolma_like, tmp_path, capsys):
    urls, list_bytes = _serve(static_server, dolma_like, tmp_path)
    out = tmp_path / "sample"
    assert main(["--input-list", str(urls), "--out", str(out), "--max-tokens", _tenth(dolma_like), *TENTH,
                 "--workers", "2"]) == 0
    sent = static_server.sent
    m = shards.load_manifest(out)
    whole = _tokens_per_source(dolma_like, out / shards.TOKENIZER_NAME)
    total = sum(whole.values())
    kept = sum(r["tokens"] for r in m["sources"])
    assert 0.08 < kept / total < 0.12
    for source, share in _shares(m).items():
        want = whole[source] / total
        assert abs(share - want) <= max(0.015, 0.15 * want), (source, share, want)
    # every byte fetched once: the tokenizer sample, the measurement and the main pass share one download,
    # and a cut file is read only as far as the build keeps (its checksum unchecked, and listed so)
    kept = _kept_bytes(m, dolma_like[0])
    assert sent <= 1.5 * kept, f"the server sent {sent / kept:.2f}x the compressed bytes of what was kept"
    cut = [x["path"] for x in m["inputs"] if x["status"].startswith("partly read")]
    assert cut and m["unverified_cut_files"] == cut and {x["checksum"] for x in m["inputs"] if x["path"] in cut} == {
        "cut"}
    assert m["download"]["read_bytes"] == sum(x.get("read_bytes", 0) for x in m["inputs"])
    assert kept <= m["download"]["read_bytes"] <= sent <= m["download"]["expected_bytes"]
    # the records' own source field is counted, and agrees with the file names here
    fields = {name: c["field"] for name, c in dolma_like[1].items()}
    assert {fields[r["source"]]: r["tokens"] for r in m["sources"]} == {
        k: v["tokens"] for k, v in m["record_sources"].items()}
    # the tokenizer learned every source's frequent words
    vocab = Tokenizer.from_file(str(out / shards.TOKENIZER_NAME)).get_vocab()
    for source, *_ in DOLMA_LIKE:
        assert all("Ġ" + w in vocab for w in signature_words(source)[:5]), source
    assert (out / plans.PLAN_NAME).exists() and m["plan"]["sha256"] == plans.load(out).sha256()
    # tools/inspect_shards.py summary shows the per-source rows the build printed, and the cut files
    capsys.readouterr()
    assert load_tool("inspect_shards").main(["summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"cut at their budget, so not checksum-verified ({len(cut)}): {cut[0]}" in text
    for r in m["sources"]:
        row = next(line.split() for line in text.splitlines() if line.split()[:1] == [r["source"]])
        assert row[1:6] == [str(r["files_planned"]), "/", str(r["files_opened"]), "/", str(r["files_finished"])]
        assert row[6:8] == [f"{r['documents']:,}", f"{r['tokens']:,}"]

    # the same command with --in-order reads the list's first sources only: the problem the plan solves
    # (its tokenizer sample is still drawn across the sources: --in-order keeps the reading order only)
    first = tmp_path / "in-order"
    assert main(["--input-list", str(urls), "--out", str(first), "--max-tokens", _tenth(dolma_like), "--in-order",
                 *TENTH]) == 0
    shares = _shares(shards.load_manifest(first))
    assert shares["cc_en_head"] == 0 and shares["wiki"] == 0 and shares["algebraic-stack-train"] > 0.2


@pytest.mark.slow
def test_from_a_server_that_ignores_range_each_file_is_downloaded_once_at_most(static_server, dolma_like, tmp_path):
    urls, _ = _serve(static_server, dolma_like, tmp_path)
    static_server.ranges = False  # every GET is answered with the whole file, as http.server does
    out = tmp_path / "sample"
    assert main(["--input-list", str(urls), "--out", str(out), "--max-tokens", _tenth(dolma_like), *TENTH]) == 0
    root = dolma_like[0]
    assert static_server.sent_by, "nothing was downloaded"
    for name, sent in static_server.sent_by.items():
        assert sent <= (root / name).stat().st_size, f"{name} was downloaded {sent / (root / name).stat().st_size:.2f}x"
    # the same documents as from a server that takes ranges (the tokenizer is the same: the same sample)
    static_server.ranges = True
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "ranged"), "--max-tokens", _tenth(dolma_like),
                 *TENTH]) == 0
    assert decoded_documents(out) == decoded_documents(tmp_path / "ranged")


@pytest.mark.slow
def test_verify_cut_files_reads_them_to_their_end_and_a_damaged_end_is_then_caught(static_server, dolma_like,
                                                                                  tmp_path, capsys):
    root = tmp_path / "v1_7"
    shutil.copytree(dolma_like[0], root)
    static_server.root = root
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(static_server.url(p.name) + "\n" for p in sorted(root.iterdir())))
    args = ["--input-list", str(urls), "--max-tokens", _tenth(dolma_like), *TENTH]
    assert main(["--out", str(tmp_path / "default"), *args]) == 0
    default = shards.load_manifest(tmp_path / "default")
    cut = [x["path"].rsplit("/", 1)[1] for x in default["inputs"] if x.get("checksum") == "cut"]
    assert cut
    assert main(["--out", str(tmp_path / "p"), "--plan", *args]) == 0
    plan_text = capsys.readouterr().out
    assert (f"{len(cut)} compressed files are cut at their budget and read only that far, so their gzip checksums "
            f"are not checked; --verify-cut-files reads them to their ends") in plan_text
    static_server.sent_by.clear()
    assert main(["--out", str(tmp_path / "verified"), *args, "--verify-cut-files"]) == 0
    verified = shards.load_manifest(tmp_path / "verified")
    assert verified["unverified_cut_files"] == []
    assert {x["checksum"] for x in verified["inputs"] if x["path"].rsplit("/", 1)[1] in cut} == {"verified"}
    for name in cut:  # read to the end (each of these files is one gzip member)
        assert static_server.sent_by[name] >= (root / name).stat().st_size
    assert [e["sha256"] for e in verified["shards"]] == [e["sha256"] for e in default["shards"]]
    # a cut file damaged past its cut: by default the build does not reach the damage; verifying does
    name = cut[0]
    data = bytearray((root / name).read_bytes())
    data[-8] ^= 0xFF  # the member's CRC
    (root / name).write_bytes(bytes(data))
    assert main(["--out", str(tmp_path / "default2"), *args]) == 0
    assert main(["--out", str(tmp_path / "verified2"), *args, "--verify-cut-files"]) == 2
    err = capsys.readouterr().err
    assert f"{name}: corrupt gzip data" in err and "are not kept" in err


@pytest.mark.slow
def test_mix_weights_are_honoured(static_server, dolma_like, tmp_path):
    urls, _ = _serve(static_server, dolma_like, tmp_path)
    out = tmp_path / "mix"
    assert main(["--input-list", str(urls), "--out", str(out), "--max-tokens", _tenth(dolma_like),
                 "--mix", "books=0.3,wiki=0.1", *TENTH]) == 0
    m = shards.load_manifest(out)
    shares = _shares(m)
    assert shares["books"] == pytest.approx(0.3, abs=0.015) and shares["wiki"] == pytest.approx(0.1, abs=0.015)
    whole = _tokens_per_source(dolma_like, out / shards.TOKENIZER_NAME)
    rest = {s: v for s, v in whole.items() if s not in ("books", "wiki")}
    for source, tokens in rest.items():  # the unnamed ones share the remaining 60% by their size
        assert shares[source] == pytest.approx(0.6 * tokens / sum(rest.values()), abs=0.015)


def test_plan_prints_the_table_and_fetches_no_body(static_server, dolma_like, tmp_path, capsys):
    urls, _ = _serve(static_server, dolma_like, tmp_path)
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "p"), "--max-tokens", "200k", "--plan"]) == 0
    out = capsys.readouterr().out
    assert {method for method, _, _ in static_server.log} == {"HEAD"} and static_server.sent == 0
    assert len(static_server.log) == sum(files for _, files, *_ in DOLMA_LIKE)
    for source, files, *_ in DOLMA_LIKE:
        assert any(line.split()[:2] == [source, str(files)] for line in out.splitlines()), out
    assert "quota" in out and "200.00k" in out and not (tmp_path / "p").exists()


def test_a_url_that_cannot_be_sized_is_named_or_skipped(static_server, dolma_like, tmp_path, capsys):
    urls, _ = _serve(static_server, dolma_like, tmp_path, missing={"c4-0002.json.gz"})
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "p"), "--max-tokens", "200k", "--plan"]) == 2
    err = capsys.readouterr().err
    assert "c4-0002.json.gz: HTTP 404" in err and "--skip-bad-files" in err and "Traceback" not in err
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "p"), "--max-tokens", "200k", "--plan",
                 "--skip-bad-files"]) == 0
    captured = capsys.readouterr()
    assert "c4-0002.json.gz: HTTP 404" in captured.err and "1 input files could not be opened" in captured.out


def test_planning_2400_urls_takes_seconds(static_server, tmp_path, capsys):
    """Dolma's list is about 2,400 URLs: every one is sized with a HEAD request, many in flight."""
    root = tmp_path / "files"
    root.mkdir()
    (root / "x.json.gz").write_bytes(b"\x1f\x8b" + b"\0" * 100)
    static_server.root = root
    names = [f"{src}-{k:04d}.json.gz" for src, n in (("cc_en_head", 1600), ("c4", 600), ("books", 200))
             for k in range(n)]
    for n in names:
        os.link(root / "x.json.gz", root / n)
    urls = tmp_path / "urls.txt"
    urls.write_text("".join(static_server.url(n) + "\n" for n in names))
    t0 = time.perf_counter()
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "p"), "--max-tokens", "1e6", "--plan"]) == 0
    elapsed = time.perf_counter() - t0
    assert sum(1 for m, _, _ in static_server.log if m == "HEAD") == 2400
    out = capsys.readouterr().out
    assert "2,400 input files in 3 sources" in out
    print(f"planned 2,400 URLs in {elapsed:.1f} s")  # shown with -s; the note quotes it


def _spooled(out: Path) -> dict[str, int]:
    """File name -> bytes its spool holds in OUT/.build/fetched (what a rerun does not fetch again)."""
    spooled = {}
    for meta in (out / shards.BUILD_DIR / "fetched").glob("*.json"):
        data = meta.with_suffix(".data")
        if data.exists():
            spooled[json.loads(meta.read_text())["url"].rsplit("/", 1)[1]] = data.stat().st_size
    return spooled


def _command(urls: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "preprocess", "--input-list", str(urls), "--out", str(out), *TENTH,
            "--shard-tokens", "5000", *extra]


@pytest.mark.slow
def test_a_sampled_build_is_the_same_for_any_workers_and_after_kill_9(static_server, dolma_like, tmp_path):
    urls, _ = _serve(static_server, dolma_like, tmp_path)
    tenth = ["--max-tokens", _tenth(dolma_like)]
    for workers in ("1", "2"):
        static_server.sent = 0
        done = subprocess.run(_command(urls, tmp_path / f"w{workers}", *tenth, "--workers", workers), cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    uninterrupted = static_server.sent
    reference = file_hashes(tmp_path / "w1")
    assert file_hashes(tmp_path / "w2") == reference
    n_train = sum(1 for name in reference if name.startswith("train_") and name.endswith(".bin"))
    assert n_train >= 20
    out = tmp_path / "killed"
    static_server.sent, in_flight = 0, 0
    for k in (0, n_train // 3, 2 * n_train // 3):  # after the plan is measured, then well into the main pass
        spooled, before = _spooled(out), dict(static_server.sent_by)
        proc = subprocess.Popen(_command(urls, out, *tenth, "--workers", "2"), cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        target = out / shards.shard_file_name("train", k)
        deadline = time.monotonic() + 60
        while not target.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.002)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        # what was in flight: bytes the server sent for a file that its spool did not get (a file whose
        # spool is gone was finished and released: what was sent for it was used)
        after = _spooled(out)
        in_flight += sum(max(0, n - before.get(name, 0) - (after[name] - spooled.get(name, 0)))
                         for name, n in static_server.sent_by.items() if name in after)
    done = subprocess.run(_command(urls, out, *tenth, "--workers", "2"), cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "resuming the build" in done.stderr, done.stderr
    assert file_hashes(out) == reference
    # the reruns fetched again at most what was in flight when each was killed (and a byte per request,
    # the one a continuation repeats to compare)
    requests = len([x for x in static_server.log if x[0] == "GET"])
    assert static_server.sent <= uninterrupted + in_flight + requests, (static_server.sent, uninterrupted, in_flight)


@pytest.mark.slow
def test_parts_of_a_sampled_plan_merge_to_the_one_machine_build(static_server, dolma_like, tmp_path):
    urls, _ = _serve(static_server, dolma_like, tmp_path)
    tenth = ["--max-tokens", _tenth(dolma_like)]
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "tok"), "--tokenizer-only", *TENTH]) == 0
    tok = str(tmp_path / "tok" / shards.TOKENIZER_NAME)
    assert main(["--input-list", str(urls), "--out", str(tmp_path / "one"), "--tokenizer", tok, *tenth, *TENTH]) == 0
    for i in (1, 2, 3):
        assert main(["--input-list", str(urls), "--out", str(tmp_path / f"p{i}"), "--tokenizer", tok,
                     "--part", f"{i}/3", *tenth, *TENTH]) == 0
    assert main(["merge", *(str(tmp_path / f"p{i}") for i in (1, 2, 3)), "--out", str(tmp_path / "merged")]) == 0
    one, merged = decoded_documents(tmp_path / "one"), decoded_documents(tmp_path / "merged")
    assert one == merged and sum(one["train"].values()) > 500
    a, b = shards.load_manifest(tmp_path / "one"), shards.load_manifest(tmp_path / "merged")
    assert [(r["source"], r["tokens"], r["files_finished"]) for r in a["sources"]] == \
        [(r["source"], r["tokens"], r["files_finished"]) for r in b["sources"]]
    assert (tmp_path / "merged" / plans.PLAN_NAME).read_bytes() == (tmp_path / "one" / plans.PLAN_NAME).read_bytes()
    assert_nothing_lost(tmp_path / "merged", [t for c in one.values() for t in c.elements()])
    json.loads((tmp_path / "merged" / "manifest.json").read_text())  # written last, whole


def test_a_resumed_build_refuses_a_changed_plan(tmp_path, monkeypatch, capsys):
    from tests.conftest import FAST, make_corpus

    corpus = tmp_path / "corpus"
    make_corpus(corpus, n_files=4, docs_per_file=40)
    args = ["--input", str(corpus), "--out", str(tmp_path / "out"), *FAST, "--max-tokens", "3000"]

    def killed(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(shards, "write_manifest", killed)
    assert main(args) == 130
    monkeypatch.undo()
    (corpus / "part_03.json.gz").write_bytes((corpus / "part_00.json.gz").read_bytes()[:-1] + b"\0")  # changed
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "the plan of the unfinished build" in err and "the input files differ" in err and "part_03" in err


def test_file_names_that_are_not_utf8_are_planned_built_and_recorded(tmp_path):
    """A name that is not UTF-8 (Python holds its undecodable bytes as lone surrogates) seeds the file order
    as its bytes, and is written to plan.json and manifest.json as a JSON escape that reads back the same."""
    from tests.conftest import write_jsonl_gz

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    names = [b"caf\xe9-0000.json.gz", b"caf\xe9-0001.json.gz", b"plain-0000.json.gz"]
    for k, name in enumerate(names):
        path = Path(os.fsdecode(os.path.join(os.fsencode(corpus), name)))
        write_jsonl_gz(path, [{"id": f"{k}-{i}", "text": f"document {i} of file {k}: " + "words " * 20}
                              for i in range(40)])
    out = tmp_path / "out"
    command = [sys.executable, "-m", "preprocess", "--input", str(corpus), "--out", str(out), "--vocab-size", "300",
               "--max-tokens", "2000"]
    for extra in (["--plan"], []):  # printed on a real stdout and stderr, not captured in memory
        done = subprocess.run(command + extra, cwd=ROOT, capture_output=True)
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        assert b"Traceback" not in done.stderr
    m = shards.load_manifest(out)
    recorded = sorted(os.fsencode(x["path"]) for x in m["inputs"])
    assert recorded == sorted(os.path.join(os.fsencode(corpus), n) for n in names)
    assert plans.load(out).fixed()["inputs"] == plans.Plan.from_dict(
        json.loads((out / plans.PLAN_NAME).read_text(encoding="utf-8"))).fixed()["inputs"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True)  # the plan reads back: up to date
    assert done.returncode == 0 and b"is up to date" in done.stderr
