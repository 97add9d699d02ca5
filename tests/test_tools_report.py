"""tools/report.py: the page of a run, from a real short training and from records in today's format."""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

import shards
from tests.conftest import TINY, build, load_tool, sample_texts, write_jsonl_gz
from train.config import Config
from train.model import GPT, ModelConfig

report = load_tool("report")

GIB = 2 ** 30


def sections(markdown: str) -> list[str]:
    """The level-2 headings of the page."""
    return [line for line in markdown.splitlines() if line.startswith("## ")]


def images(markdown: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)


def assert_png(path: Path) -> None:
    """A whole PNG: the signature, an IHDR of a plausible size, and every chunk's CRC through IEND."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    pos, kinds = 8, []
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, (path, kind)
        kinds.append(kind)
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
            assert 400 <= width <= 3000 and 200 <= height <= 2000, (path, width, height)
        pos += 12 + length
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND", (path, kinds)


# ---------------------------------------------------------------------------------------------------
# records of the types the trainer is gaining, added to a copy of a real run's metrics.jsonl

PROMPTS = ("The model reads", "Once upon a time")


def add_new_records(records: list[dict], data: Path, params: int) -> list[dict]:
    """``records`` (a real run's) with what a run on 8 GPUs resumed once on 4 would add: "run" records at
    the start and at the resume, throughput, MFU and memory on the training records, bits per byte, task
    scores and evaluation time on the evaluations, samples at each evaluation, the config change. The
    figures are made up from the real ones (bits per byte from the real val loss at 4 bytes per token)."""
    evals = [r for r in records if r["type"] == "eval"]
    resume = evals[len(evals) // 2]["step"]
    session = {"type": "run", "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3", "world_size": 8,
               "precision": "bf16", "torch": "2.13.0", "params": params, "flops_per_token": 7.1e5,
               "data_dir": str(data)}
    out = [{**session, "step": 0}]
    for r in records:
        if r["type"] in ("run", "samples"):  # the real run's CPU session and samples give way to made-up ones
            continue
        r = dict(r)
        if r["type"] == "train":
            r.update(wall_tokens_per_s=0.9 * r["tokens_per_s"], mfu=0.3 + r["step"] / 1000,
                     peak_mem_device=(30 + r["step"] / 10) * GIB, peak_mem_host=6.5 * GIB)
        if r["type"] == "eval":
            k = [e["step"] for e in evals].index(r["step"])  # the k-th evaluation
            r.update(val_bpb=r["val_loss"] / math.log(2) / 4.0, eval_s=0.05,
                     tasks={"hellaswag": {"acc": 0.25 + 0.01 * k, "acc_norm": 0.26 + 0.02 * k, "items": 1000,
                                          "seconds": 1.2},
                            "lambada": {"acc": 0.05 * k, "acc_norm": None, "items": 500, "seconds": 0.3}})
        out.append(r)
        if r["type"] == "eval":
            out.append({"type": "samples", "step": r["step"], "samples": [
                {"prompt": PROMPTS[0], "completion": f" tokens | from *shards* at step {r['step']}<|endoftext|>"},
                {"prompt": PROMPTS[1], "completion": "the loss\nfell `slowly` [1]"}]})
        if r["step"] == resume and r["type"] == "eval":
            out.append({**session, "step": resume, "world_size": 4})
            out.append({"type": "config", "step": resume, "changes": [
                {"key": "training.max_steps", "from": 20, "to": records[-1]["step"]},
                {"key": "training.checkpoint_interval", "from": 100, "to": 50}]})
    return out


# ---------------------------------------------------------------------------------------------------
# the page of a real run

@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> Path:
    """A dataset built by `python -m preprocess` from two sources, so its manifest has a source table."""
    root = tmp_path_factory.mktemp("report")
    corpus = root / "corpus"
    corpus.mkdir()
    for k, (source, docs) in enumerate((("books", 60), ("wiki", 150))):
        for f in range(2):
            write_jsonl_gz(corpus / f"{source}-{f:04d}.json.gz", [
                {"id": f"{source}-{f}-{i}", "text": t} for i, t in enumerate(sample_texts(docs, seed=10 * k + f))])
    assert build(corpus, root / "data", "--workers", "1") == 0
    return root / "data"


def train_runs(data: Path, runs: dict[str, list[str]]) -> None:
    """Train each run (its extra overrides) at once, each a tiny `python -m train` of 30 steps."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = []
    for out, extra in runs.items():
        args = [sys.executable, "-m", "train", "--data", str(data), "--out", out, "--config", "demo"]
        for o in TINY + ["training.max_steps=30", *extra]:
            args += ["--set", o]
        procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        output = p.communicate(timeout=300)[0]
        assert p.returncode == 0, output


@pytest.mark.slow
def test_the_page_of_a_real_run_with_every_kind_of_record_and_a_comparison(tmp_path, two_sources, tiny_dataset,
                                                                           capsys):
    trained, other = tmp_path / "trained", tmp_path / "lower_lr"
    train_runs(two_sources, {str(trained): [], str(other): ["training.lr=1e-3"]})
    run = tmp_path / "full"
    shutil.copytree(trained, run)
    real = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    params = GPT(Config.from_dict(json.loads((run / "config.json").read_text())).model).num_params()
    records = add_new_records(real, two_sources, params)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    # one run: every section, and nothing missing
    assert report.main([str(run)]) == 0
    page_path = run / "report" / "report.md"
    assert capsys.readouterr().out.startswith(f"report written to {page_path} (5 figures: ")
    page = page_path.read_text()
    steps = [r["step"] for r in records]
    assert sections(page) == ["## Curves", f"## Task scores (step {steps[-1]})", "## Samples", "## Config",
                              "## Dataset", "## Throughput, memory and hardware", "## Config changes on resume"]
    assert images(page) == ["loss.png", "bpb.png", "tasks.png", "optimization.png", "throughput.png"]
    for name in images(page):
        assert_png(run / "report" / name)

    evals = [r for r in records if r["type"] == "eval"]
    best = min(evals, key=lambda r: r["val_loss"])
    summary = page.split("\n\n")[1]
    assert summary.startswith(f"A {report.count(params)}-parameter GPT (2 layers, d_model 64, 2 heads, context 32) "
                              f"trained for 30 steps on 3.8K tokens in ")
    assert " on 8 × NVIDIA H100 80GB HBM3, bf16, then 4 × NVIDIA H100 80GB HBM3, bf16." in summary
    assert (f"Final validation loss {evals[-1]['val_loss']:.3f} nats/token (best {best['val_loss']:.3f} at step "
            f"{best['step']}), perplexity {evals[-1]['val_ppl']:.1f}; {evals[-1]['val_bpb']:.3f} bits per byte "
            f"(best {min(r['val_bpb'] for r in evals):.3f}).") in summary
    k = len(evals) - 1
    assert summary.endswith(f"Task accuracy (normalised where defined): hellaswag {100 * (0.26 + 0.02 * k):.1f}%, "
                            f"lambada {100 * 0.05 * k:.1f}%.")

    # the samples: each prompt's completions in step order, escaped so that GitHub shows them as written
    assert f"| {evals[0]['step']} | **The model reads** |  tokens \\| from \\*shards\\* at step {evals[0]['step']}" \
           "&lt;\\|endoftext\\|&gt; |" in page
    assert f"| {evals[-1]['step']} |  | the loss<br>fell \\`slowly\\` \\[1\\] |" in page

    # the dataset: the manifest's splits and sources, and the epochs the run's tokens make
    manifest = shards.load_manifest(two_sources)
    for source in manifest["sources"]:
        assert (f"| {source['source']} | {source['files']} | {source['documents']} | "
                f"{report.count(source['tokens'])} | {100 * source['share']:.1f}% | "
                f"{100 * source['share_planned']:.1f}% |") in page
    train_tokens = sum(e["tokens"] for e in manifest["shards"] if e["split"] == "train")
    assert f"The run saw 3.8K tokens: {3840 / train_tokens:.2f} epochs of the train split." in page
    assert "not the dataset" not in page

    # throughput, memory, hardware, the resume
    trains = [r for r in records if r["type"] == "train"]
    assert f"| peak device memory | {max(r['peak_mem_device'] for r in trains) / GIB:.2f} GiB |" in page
    assert "| peak host memory | 6.50 GiB |" in page
    assert f"| MFU (median) | {100 * statistics.median(r['mfu'] for r in trains):.1f}% |" in page
    assert f"| evaluation time | {0.05 * len(evals):.1f} s (" in page
    resume = evals[len(evals) // 2]["step"]
    assert "| 0 | NVIDIA H100 80GB HBM3 | 8 | bf16 | 2.13.0 |" in page
    assert f"| {resume} | NVIDIA H100 80GB HBM3 | 4 | bf16 | 2.13.0 |" in page
    assert f"| {resume} | `training.max_steps` | `20` | `30` |" in page
    assert "| `training.lr` | `0.003` |" in page and "<details><summary>The whole config.json" in page

    # two runs: the first one's page with the comparison, into another directory, with another dataset
    out = tmp_path / "compare"
    assert report.main([str(run), str(other), "--out", str(out), "--data", str(tiny_dataset)]) == 0
    page = (out / "report.md").read_text()
    assert (f"`{tiny_dataset}`: vocabulary 300, uint16 shards. **This is not the dataset the run's latest checkpoint "
            f"was trained on**") in page
    assert "The manifest has no per-source table" in page
    assert sections(page) == ["## Curves", f"## Task scores (step {steps[-1]})", "## Samples",
                              "## Compared with lower_lr", "## Config", "## Dataset",
                              "## Throughput, memory and hardware", "## Config changes on resume"]
    assert images(page)[-2:] == ["compare.png", "throughput.png"]
    assert_png(out / "compare.png")
    compared = page.split("## Compared with lower_lr\n")[1].split("\n## ")[0]
    theirs = [json.loads(line) for line in (other / "metrics.jsonl").read_text().splitlines()]
    their_best = min(r["val_loss"] for r in theirs if r["type"] == "eval")
    assert f"| best val loss | {best['val_loss']:.3f} | {their_best:.3f} |" in compared
    their_bpb = [r["val_bpb"] for r in theirs if r["type"] == "eval"][-1]  # measured by the trainer
    assert f"| final val bits per byte | {evals[-1]['val_bpb']:.3f} | {their_bpb:.3f} |" in compared
    differ = compared.split("Config keys that differ:\n\n")[1]
    assert differ.splitlines()[2:] == ["| `training.lr` | `0.003` | `0.001` |"]


# ---------------------------------------------------------------------------------------------------
# the page of a run with only the records today's trainer writes

TODAY = [
    {"type": "train", "step": 1, "loss": 5.7, "lr": 6e-4, "grad_norm": 2.7, "tokens": 128, "tokens_per_s": 1600.0,
     "elapsed_s": 0.08},
    {"type": "train", "step": 2, "loss": 5.6, "lr": 1.2e-3, "grad_norm": 2.5, "tokens": 256, "tokens_per_s": 3500.0,
     "elapsed_s": 0.12},
    {"type": "eval", "step": 2, "loss": 5.6, "lr": 1.2e-3, "tokens": 256, "val_loss": 5.5, "val_ppl": 244.7,
     "best_val_loss": 5.5},
    {"type": "train", "step": 3, "loss": 5.4, "lr": 1.8e-3, "grad_norm": 1.9, "tokens": 384, "tokens_per_s": 4100.0,
     "elapsed_s": 0.15},
    {"type": "train", "step": 4, "loss": 5.1, "lr": 2.4e-3, "grad_norm": 1.5, "tokens": 512, "tokens_per_s": 4000.0,
     "elapsed_s": 0.19},
    {"type": "eval", "step": 4, "loss": 5.1, "lr": 2.4e-3, "tokens": 512, "val_loss": 5.2, "val_ppl": 181.3,
     "best_val_loss": 5.2},
]


def write_today_run(path: Path) -> ModelConfig:
    model = ModelConfig(vocab_size=300, seq_len=32, n_layers=2, d_model=64, n_heads=2)
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(Config(model=model).to_dict()))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TODAY))
    return model


def test_a_run_with_todays_records_gets_a_whole_page_that_names_what_is_missing(tmp_path):
    model = write_today_run(tmp_path / "today")
    page_path = report.write_report(tmp_path / "today")
    page = page_path.read_text()
    assert page_path == tmp_path / "today" / "report" / "report.md"
    assert sections(page) == ["## Curves", "## Config", "## Throughput, memory and hardware", "## Not recorded"]
    assert images(page) == ["loss.png", "optimization.png", "throughput.png"]
    for name in images(page):
        assert_png(page_path.parent / name)
    assert sorted(p.name for p in page_path.parent.iterdir()) == ["loss.png", "optimization.png", "report.md",
                                                                  "throughput.png"]
    params = GPT(model).num_params()
    assert page.split("\n\n")[1] == (
        f"A {report.count(params)}-parameter GPT (2 layers, d_model 64, 2 heads, context 32) trained for 4 steps "
        f"on 512 tokens in 0.2 s. Final validation loss 5.200 nats/token (best 5.200 at step 4), perplexity 181.3.")
    assert f"| parameters (without position embeddings) | {params:,} |" in page
    assert "| tokens/s, training (median) | 3.8K |" in page  # the median of 1600, 3500, 4100, 4000
    missing = page.split("## Not recorded")[1]
    for what in ("bits per byte", "hardware", "task scores", "samples", "dataset", "MFU", "peak device memory",
                 "peak host memory", "wall-clock tokens/s"):
        assert f"- **{what}**: " in missing, what
    assert "pass `--data DIR`" in missing


def test_a_second_report_leaves_no_figure_of_the_first(tmp_path):
    write_today_run(tmp_path / "today")
    out = tmp_path / "out"
    out.mkdir()
    (out / "bpb.png").write_bytes(b"an earlier report's figure")
    report.write_report(tmp_path / "today", out)
    assert not (out / "bpb.png").exists()


def test_markdown_cells_show_text_as_written():
    assert report.cell("a|b <|endoftext|> *x* _y_ `z` [l](u) ~s~ #h\\ & \nnext") == (
        "a\\|b &lt;\\|endoftext\\|&gt; \\*x\\* \\_y\\_ \\`z\\` \\[l\\](u) \\~s\\~ \\#h\\\\ &amp; <br>next")


def test_units():
    assert [report.count(n) for n in (512, 3840, 98_432, 5.2e6, 3e9, 1.5e12)] == \
        ["512", "3.8K", "98.4K", "5.2M", "3.0B", "1.5T"]
    assert [report.duration(s) for s in (0.19, 59.94, 245, 3 * 3600 + 301, 2 * 86400 + 7200)] == \
        ["0.2 s", "59.9 s", "4m05s", "3h05m", "2d 02h"]
    assert report.gib(1.5 * GIB) == "1.50 GiB"


def test_user_errors_are_one_line(tmp_path, capsys, monkeypatch):
    assert report.main([str(tmp_path / "none")]) == 2
    assert capsys.readouterr().err == (f"error: {tmp_path / 'none' / 'metrics.jsonl'} does not exist "
                                       f"(no such directory)\n")
    write_today_run(tmp_path / "today")
    assert report.main([str(tmp_path / "today"), "--data", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith(f"error: --data {tmp_path} holds no manifest.json; pass the dataset")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an environment without matplotlib shows
    assert report.main([str(tmp_path / "today")]) == 2
    assert capsys.readouterr().err == ("error: the report draws its curves with matplotlib, which is not installed; "
                                       "`pip install matplotlib` (or `pip install -e '.[tools]'`) and run it again\n")


def test_help_names_the_sections(capsys):
    with pytest.raises(SystemExit):
        report.main(["--help"])
    text = capsys.readouterr().out
    assert "RUN2" in text and "--data DIR" in text and "--out DIR" in text and "bits per byte" in text

