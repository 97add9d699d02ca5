"""Shared fixtures and helpers: tiny dataset directories built through the real tokenizer and shard
writer; small corpora and builds through the real `python -m preprocess`; a Dolma-style corpus of
several sources served over HTTP on 127.0.0.1; the tools loaded as modules."""
from __future__ import annotations

import collections
import gzip
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from tokenizers import Tokenizer
from torch._dynamo.eval_frame import _debug_get_cache_entry_list
from torch._dynamo.utils import counters

import shards
import tokenizer as tk
from preprocess import http
from preprocess.readers import Record
from train import checkpoint as ckpt
from train.config import Config
from train.model import GPT, ModelConfig

ROOT = Path(__file__).resolve().parents[1]

# Small, varied English-like text so a BPE of a few hundred tokens has something to learn.
_WORDS = ("the model reads tokens from shards and learns to predict the next one while the loss "
          "falls slowly over many steps of training on a small corpus of plain text documents").split()


def sample_texts(n: int = 200, seed: int = 0) -> list[str]:
    """``n`` deterministic pseudo-random documents of 5..60 words."""
    texts = []
    for i in range(n):
        h = hashlib.sha256(f"{seed}:{i}".encode()).digest()
        length = 5 + h[0] % 56
        words = [_WORDS[(h[j % 32] + j * 7) % len(_WORDS)] for j in range(length)]
        texts.append(" ".join(words).capitalize() + ".")
    return texts


def build_dataset(out: Path, texts: list[str], vocab_size: int = 300, val_every: int = 10,
                  shard_tokens: int = 2000, dtype: str = "uint16") -> Path:
    """Write a dataset directory for ``texts``: every ``val_every``-th document goes to val.

    Uses the project's tokenizer and shard writer directly (not the preprocess pipeline), so tests
    of later stages do not depend on the builder.
    """
    out.mkdir(parents=True, exist_ok=True)
    tok = tk.train_bpe(texts, vocab_size=vocab_size, min_frequency=1)
    tok_sha = tk.save(tok, out / shards.TOKENIZER_NAME)
    eot = tk.eot_id(tok)
    enc = tk.make_encoder(tok)
    writers = {s: shards.ShardWriter(out, s, dtype, eot, shard_tokens) for s in shards.SPLITS}
    entries = []
    for i, text in enumerate(texts):
        split = "val" if i % val_every == val_every - 1 else "train"
        entry = writers[split].add(enc.encode(text))
        if entry:
            entries.append(entry)
    for w in writers.values():
        entry = w.flush()
        if entry:
            entries.append(entry)
    totals = {s: {"tokens": sum(e["tokens"] for e in entries if e["split"] == s),
                  "documents": sum(e["documents"] for e in entries if e["split"] == s)} for s in shards.SPLITS}
    shards.write_manifest(out, {
        "format_version": shards.FORMAT_VERSION, "dtype": dtype, "vocab_size": tok.get_vocab_size(),
        "eot_id": eot, "tokenizer_sha256": tok_sha, "shards": entries, "totals": totals,
        "inputs": [], "skipped": {}, "options": {"fixture": True},
    })
    return out




@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """A ~20k-token dataset (vocab 300, uint16, several train shards and one val shard). Read-only: copy
    it (``copy_dataset``) before changing anything in it."""
    return build_dataset(tmp_path_factory.mktemp("tiny") / "data", sample_texts(400))


@pytest.fixture(scope="session")
def task_files(tiny_dataset, tmp_path_factory) -> list[Path]:
    """Two small evaluation tasks made from the tiny dataset's val split by tools/make_tasks.py: multiple
    choice (next_words.jsonl) and LAMBADA's format (last_word.jsonl)."""
    out = tmp_path_factory.mktemp("tasks")
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "make_tasks.py"), str(tiny_dataset), "--out", str(out),
                           "--items", "24", "--words", "4"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [out / "next_words.jsonl", out / "last_word.jsonl"]


@pytest.fixture
def copy_dataset(tmp_path, tiny_dataset):
    def _copy() -> Path:
        dst = tmp_path / "data_copy"
        shutil.copytree(tiny_dataset, dst)
        return dst
    return _copy


# ---------------------------------------------------------------------------------------------------
# corpora and builds through `python -m preprocess`

# Small and fast: a 300-token vocabulary and shards of a few hundred tokens, so every build writes
# several shards per split.
FAST = ["--vocab-size", "300", "--shard-tokens", "400", "--val-fraction", "0.2", "--quiet"]


def write_jsonl_gz(path: Path, records: list, tail: bytes = b"") -> Path:
    lines = b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)
    path.write_bytes(gzip.compress(lines + tail, mtime=0))
    return path


def make_corpus(root: Path, n_files: int = 3, docs_per_file: int = 40, seed: int = 0) -> list[str]:
    """``n_files`` Dolma-style .json.gz files of distinct documents; returns every text in stream order."""
    root.mkdir(parents=True, exist_ok=True)
    texts = sample_texts(n_files * docs_per_file, seed=seed)
    for f in range(n_files):
        chunk = texts[f * docs_per_file:(f + 1) * docs_per_file]
        write_jsonl_gz(root / f"part_{f:02d}.json.gz",
                       [{"id": f"s{seed}-{f}-{i}", "text": t, "source": "test"} for i, t in enumerate(chunk)])
    return texts


def file_hashes(directory: Path) -> dict[str, str]:
    """sha256 of every file of a dataset directory (hidden build/corpus folders aside)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(directory).iterdir()) if p.is_file()}


def decoded_documents(directory: Path) -> dict[str, collections.Counter]:
    """Every document in the shards, decoded with HF tokenizers, counted per split."""
    m = shards.load_manifest(directory)
    tok = Tokenizer.from_file(str(Path(directory) / shards.TOKENIZER_NAME))
    out = {s: collections.Counter() for s in shards.SPLITS}
    for entry in m["shards"]:
        for doc in shards.iter_documents(directory, entry, m["dtype"]):
            out[entry["split"]][tok.decode(doc.tolist(), skip_special_tokens=False)] += 1
    return out


def assert_nothing_lost(directory: Path, good: list[str], maybe: tuple[str, ...] = ()) -> None:
    """Every good document is in the shards exactly once, and nothing else is (the --expected idea of
    check_dataset.py: ``maybe`` documents may or may not be there)."""
    docs = decoded_documents(directory)
    seen = docs["train"] + docs["val"]
    want = collections.Counter(good)  # a text the input holds twice must be there twice
    lost = want - seen
    assert not lost, f"{sum(lost.values())} good documents lost, e.g. {next(iter(lost))[:80]!r}"
    extra = seen - want
    for t in maybe:
        if extra[t] <= 1:
            extra.pop(t, None)
    assert not extra, f"{sum(extra.values())} unexpected or duplicated documents, e.g. {next(iter(extra))[:80]!r}"
    assert shards.verify_dataset(directory, tk.fingerprint(Path(directory) / shards.TOKENIZER_NAME)) == []


def build(corpus: Path, out: Path, *extra: str) -> int:
    from preprocess.cli import main
    return main(["--input", str(corpus), "--out", str(out), *FAST, *extra])


# ---------------------------------------------------------------------------------------------------
# an HTTP server with faults: cut connections, ignored ranges, 404

FAST_RETRY = http.Retry(attempts=3, backoff_s=0.01, timeout_s=5)
N_DOCS = 3000
DOCS = [{"id": i, "text": f"document {i}: " + "lorem ipsum " * (i % 7)} for i in range(N_DOCS)]
JSONL = b"".join(json.dumps(d).encode() + b"\n" for d in DOCS)
EXPECTED = [Record(d["text"], str(d["id"]), d["id"] + 1) for d in DOCS]


def _parquet_bytes() -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]}), buf, row_group_size=2)
    return buf.getvalue()


FILES = {"docs.json.gz": gzip.compress(JSONL, mtime=0), "docs.jsonl": JSONL, "t.parquet": _parquet_bytes()}


class FlakyHandler(BaseHTTPRequestHandler):
    """Serves FILES under a mode prefix: /ok/, /cut-once/ (the first response stops half-way),
    /always-cut/ (no response goes past the middle of the file), /no-range/ (ignores Range and cuts
    the first response), anything else 404. Range requests get 206 with Content-Range."""

    def do_GET(self):
        mode, _, name = self.path.lstrip("/").partition("/")
        data = FILES.get(name)
        self.server.log.append((self.path, self.headers.get("Range")))
        if data is None or mode not in ("ok", "cut-once", "always-cut", "no-range"):
            self.send_error(404)
            return
        start, end = 0, len(data)
        rng = self.headers.get("Range")
        if rng and mode != "no-range":
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(len(data), int(last) + 1 if last else len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        stop = end
        first_request = sum(1 for p, _ in self.server.log if p == self.path) == 1
        if mode in ("cut-once", "no-range") and first_request:
            stop = start + (end - start) // 2
        elif mode == "always-cut":
            stop = min(end, len(data) // 2)
        self.wfile.write(data[start:stop])  # then the connection closes (HTTP/1.0): a cut when stop < end

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    """Serves FILES with the faults FlakyHandler describes; ``url(path)`` names them."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FlakyHandler)
    srv.log = []
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def url(server):
    server.log.clear()
    return lambda path: f"http://127.0.0.1:{server.server_address[1]}/{path}"


# ---------------------------------------------------------------------------------------------------
# a Dolma-style corpus: sources of very different sizes, files named and sorted like Dolma's

# source, files, documents per file, words per document, the records' own "source" field
DOLMA_LIKE = (
    ("algebraic-stack-train", 2, 360, (80, 200), "redpajama/algebraic-stack"),
    ("arxiv", 3, 280, (150, 400), "redpajama/arxiv"),
    ("books", 1, 72, (1500, 3000), "gutenberg"),
    ("c4", 4, 800, (40, 120), "c4"),
    ("cc_en_head", 12, 960, (60, 200), "common-crawl/head"),
    ("wiki", 1, 480, (50, 150), "wikipedia"),
)
_COMMON = ("the of and to in a is that for it as with was on be by this are from at or an which "
           "have not but all they one were had has their more can been there when who will").split()


def signature_words(source: str, n: int = 24) -> list[str]:
    """Made-up words only ``source`` uses, most frequent first (no other source shares a letter pair
    with them often enough to matter: each is drawn from its own seeded generator)."""
    rng = random.Random(f"words:{source}")
    words: list[str] = []
    while len(words) < n:
        w = "".join(rng.choice("bcdfghjklmnpqrstvwxz") + rng.choice("aeiouy") for _ in range(rng.randint(3, 4)))
        if w not in words:
            words.append(w)
    return words


def dolma_like_corpus(root: Path) -> dict:
    """Write the DOLMA_LIKE corpus under ``root`` as ``SOURCE-NNNN.json.gz`` files with Dolma's record
    fields. Returns {source: {"files": [paths], "texts": [texts in file order], "field": ...}}."""
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for source, n_files, docs, (lo, hi), field in DOLMA_LIKE:
        rng = random.Random(f"docs:{source}")
        words = signature_words(source)
        weights = [1 / (r + 1) for r in range(len(words))]  # Zipf: the first words are the most frequent
        paths, texts = [], []
        for f in range(n_files):
            records = []
            for d in range(docs + rng.randint(-docs // 4, docs // 4)):
                n = rng.randint(lo, hi)
                own, common = rng.choices(words, weights, k=n), rng.choices(_COMMON, k=n)
                coins = [rng.random() for _ in range(n)]
                body = [w if r < 0.6 else c for w, c, r in zip(own, common, coins, strict=True)]
                text = " ".join(body).capitalize() + "."
                texts.append(text)
                records.append({"id": f"{source}-{f:04d}-{d}", "text": text, "source": field,
                                "added": "2024-04-01T00:00:00Z", "created": "2023-01-01T00:00:00Z",
                                "metadata": {"length": len(text)}})
            path = root / f"{source}-{f:04d}.json.gz"
            write_jsonl_gz(path, records)
            paths.append(path)
        out[source] = {"files": paths, "texts": texts, "field": field}
    return out


class StaticHandler(BaseHTTPRequestHandler):
    """Serves the files of ``server.root`` with HEAD, GET and Range; records every request and counts
    the body bytes it sends (``sent``, and per file ``sent_by``), written in small pieces to a small
    send buffer, so a client that stops reading is not counted as having been sent the whole file.
    ``server.missing`` names files that answer 404; with ``server.ranges`` False it ignores Range and
    sends the whole file (status 200), as Python's http.server and some proxies do."""

    protocol_version = "HTTP/1.0"

    def _file(self) -> bytes | None:
        name = self.path.lstrip("/")
        path = self.server.root / name
        if name in self.server.missing or not path.is_file():
            self.send_error(404)
            return None
        return path.read_bytes()

    def do_HEAD(self):
        self.server.log.append(("HEAD", self.path, None))
        data = self._file()
        if data is None:
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        rng = self.headers.get("Range")
        self.server.log.append(("GET", self.path, rng))
        data = self._file()
        if data is None:
            return
        start, end = 0, len(data)
        if rng and self.server.ranges:
            first, _, last = rng.removeprefix("bytes=").partition("-")
            start, end = int(first), min(len(data), int(last) + 1 if last else len(data))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start))
        self.send_header("ETag", '"v1"')
        self.end_headers()
        try:
            for pos in range(start, end, 8192):
                piece = data[pos:min(end, pos + 8192)]
                self.wfile.write(piece)
                with self.server.lock:
                    self.server.sent += len(piece)
                    name = self.path.lstrip("/")
                    self.server.sent_by[name] = self.server.sent_by.get(name, 0) + len(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def log_message(self, *args):
        pass


class _SmallBufferServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a real server's backlog: the planner's 64 HEADs in flight are not refused

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        super().server_bind()

    def get_request(self):
        conn, addr = super().get_request()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        return conn, addr


@pytest.fixture
def static_server():
    """A server for files under ``srv.root`` (set it); ``srv.url(name)``, ``srv.sent``, ``srv.sent_by``,
    ``srv.log``; ``srv.ranges = False`` makes it ignore Range."""
    srv = _SmallBufferServer(("127.0.0.1", 0), StaticHandler)
    srv.root, srv.missing, srv.log, srv.sent, srv.lock = None, set(), [], 0, threading.Lock()
    srv.sent_by, srv.ranges = {}, True
    srv.url = lambda name: f"http://127.0.0.1:{srv.server_address[1]}/{name}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def dolma_like(tmp_path_factory) -> tuple[Path, dict]:
    """The DOLMA_LIKE corpus, written once: (its directory, what dolma_like_corpus returns)."""
    root = tmp_path_factory.mktemp("dolma") / "v1_7"
    return root, dolma_like_corpus(root)


# ---------------------------------------------------------------------------------------------------
# the tools

def load_tool(name: str):
    """``tools/NAME.py`` as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as an import registers it: dataclasses look their module up there
    spec.loader.exec_module(module)
    return module

# ---------------------------------------------------------------------------------------------------
# runs: tiny trainings and run directories

# the overrides of a tiny CPU training of the demo preset
TINY = ["model.seq_len=32", "model.n_layers=2", "model.d_model=64", "model.n_heads=2", "training.batch_size=4",
        "training.warmup_steps=5", "training.lr=3e-3", "training.log_interval=1", "training.eval_interval=10",
        "training.eval_windows=8", "training.device=cpu", "training.precision=fp32",
        "training.sample_tokens=0"]  # samples (1-2 s an evaluation here) are tested in tests/test_train_evals.py


def losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["type"] == "train"}


def val_losses(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in records if r["type"] == "eval"}


class Compiled:
    """What torch.compile did in this process since the ``compiled`` fixture started."""

    @staticmethod
    def graphs() -> int:
        """Graphs compiled for GPT.forward: one per grad mode, train/eval mode and input shape it met."""
        return len(_debug_get_cache_entry_list(GPT.forward.__code__))

    @staticmethod
    def graph_breaks() -> dict[str, int]:
        return dict(counters["graph_break"])


@pytest.fixture
def compiled():
    """An empty torch.compile cache and counters (an earlier test's graphs would otherwise be reused, and
    its recompiles counted), emptied again after the test."""
    torch._dynamo.reset()
    counters.clear()
    yield Compiled
    torch._dynamo.reset()
    counters.clear()


def check_two_ranks_match_one_with_double_accumulation(data: Path, tmp_path: Path, preset: str,
                                                       overrides: list[str]) -> None:
    """8 steps of ``preset`` under torchrun with 2 gloo ranks x accumulation 2, then in one process x 4:
    the same loss at every step and the same val losses (rel 1e-5)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    common = overrides + ["training.max_steps=8", "training.checkpoint_interval=4", "training.eval_interval=4"]

    def run(out, launcher, accum):
        args = launcher + ["-m", "train", "--data", str(data), "--out", str(out), "--config", preset]
        for o in common + [f"training.grad_accum_steps={accum}"]:
            args += ["--set", o]
        done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    # one process first: under compile its graphs are in inductor's cache when the two ranks compile
    run(tmp_path / "one", [sys.executable], accum=4)
    out = run(tmp_path / "ddp", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                 "--nproc_per_node", "2"], accum=2)
    assert "2 process(es)" in out
    ddp, one = losses(tmp_path / "ddp"), losses(tmp_path / "one")
    assert sorted(ddp) == sorted(one) == list(range(1, 9))
    for step in one:
        assert math.isclose(ddp[step], one[step], rel_tol=1e-5), (step, ddp[step], one[step])
    evals = [[r for r in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
              if r["type"] == "eval"] for name in ("ddp", "one")]
    assert len(evals[0]) == len(evals[1]) == 2
    for a, b in zip(*evals, strict=True):
        assert math.isclose(a["val_loss"], b["val_loss"], rel_tol=1e-5)
        assert math.isclose(a["val_bpb"], b["val_bpb"], rel_tol=1e-5)
        # task scores: the items are split between the ranks and the counts summed
        assert {k: v["items"] for k, v in a.get("tasks", {}).items()} == \
            {k: v["items"] for k, v in b.get("tasks", {}).items()}
        for name, score in a.get("tasks", {}).items():
            assert math.isclose(score["acc"], b["tasks"][name]["acc"], abs_tol=1e-9), name


def wait_for(predicate, proc, timeout=60):
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}: {proc.stdout.read()}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.005)


def save_checkpoint(run: Path, step: int, model: torch.nn.Module, config: dict, optimizer=None, best: bool = True,
                    keep: int = 1, fingerprints: dict | None = None) -> Path:
    """A checkpoint of ``model`` at ``step`` (and ``optimizer``'s state), through the trainer's own snapshot
    and writer, named ``latest`` (and ``best`` if ``best``)."""
    parts = {"model": ckpt.Weights(model), "optimizer": optimizer, "rng": ckpt.RNG(), "config": ckpt.Record(config),
             "train_state": ckpt.Record({"step": step}),
             "fingerprints": ckpt.Record(fingerprints) if fingerprints else None}
    snap = ckpt.snapshot(parts, True, ckpt.HostCopies())
    return ckpt.write(run, step, snap, keep=keep, pointers=("latest", "best") if best else ("latest",))


def make_run(run: Path, dataset: Path, seed: int = 0, **model_options) -> Path:
    """A run directory holding one checkpoint of a tiny random-weight model and the dataset's tokenizer,
    written through the trainer's own checkpoint code."""
    torch.manual_seed(seed)
    cfg = Config()
    cfg.model = ModelConfig(**{"vocab_size": 300, "seq_len": 32, "n_layers": 2, "d_model": 32, "n_heads": 2,
                               **model_options})
    model = GPT(cfg.model)
    run.mkdir(parents=True)
    shutil.copyfile(dataset / "tokenizer.json", run / "tokenizer.json")
    save_checkpoint(run, 1, model, cfg.to_dict(), torch.optim.AdamW(model.parameters()))
    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, tiny_dataset) -> Path:
    return make_run(tmp_path_factory.mktemp("run") / "run", tiny_dataset)


EXPORT_TINY = dict(seq_len=32, n_layers=2, d_model=64, n_heads=4)
HF_TOLERANCE = 1e-4  # max abs logit difference, fp32


def make_random_run(root: Path, dataset: Path, seed: int = 0, **options) -> Path:
    """A run directory holding one checkpoint of a tiny GPT with random weights everywhere.

    Every parameter is drawn at random (norm weights around 1, biases around 0, matrices wider than the
    init), so a swapped, untransposed or dropped tensor shows in the logits. Saved through
    train/checkpoint.py's own save path, with the dataset's tokenizer beside it as a run has it.
    """
    manifest = shards.load_manifest(dataset)
    cfg = ModelConfig(vocab_size=manifest["vocab_size"], **{**EXPORT_TINY, **options})
    torch.manual_seed(seed)
    model = GPT(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.1)
            elif "norm" in name:
                p.normal_(1.0, 0.1)
            else:
                p.normal_(0.0, 0.1)
    run = root / "run"
    run.mkdir(parents=True)
    shutil.copy(dataset / shards.TOKENIZER_NAME, run / shards.TOKENIZER_NAME)
    save_checkpoint(run, 1, model, Config(model=cfg).to_dict(), torch.optim.SGD(model.parameters(), lr=0.1))
    return run
