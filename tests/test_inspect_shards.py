"""tools/inspect_shards.py on the tiny dataset: summary, verify (each kind of damage), decode, stats."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import shards
import tokenizer as tk
from tests.conftest import load_tool, sample_texts

ROOT = Path(__file__).resolve().parents[1]


inspect_shards = load_tool("inspect_shards")


def run(capsys, *argv) -> tuple[int, str, str]:
    code = inspect_shards.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def split_docs(directory: Path, split: str) -> list[list[int]]:
    manifest = shards.load_manifest(directory)
    return [d.tolist() for e in shards.split_shards(manifest, split)
            for d in shards.iter_documents(directory, e, manifest["dtype"])]


def test_summary_json_matches_manifest(capsys, tiny_dataset):
    code, out, _ = run(capsys, "summary", tiny_dataset, "--json")
    assert code == 0
    s = json.loads(out)
    manifest = shards.load_manifest(tiny_dataset)
    for split in shards.SPLITS:
        assert s["splits"][split]["tokens"] == manifest["totals"][split]["tokens"]
        assert s["splits"][split]["documents"] == manifest["totals"][split]["documents"]
        assert s["splits"][split]["shards"] == len(shards.split_shards(manifest, split))
    assert s["splits"]["val"]["documents"] == 40  # every 10th of 400 documents
    assert s["vocab_size"] == 300 and s["dtype"] == "uint16"
    assert s["tokenizer_sha256"] == tk.fingerprint(tiny_dataset / "tokenizer.json")
    assert s["size_on_disk"]["total_bytes"] == sum(p.stat().st_size for p in tiny_dataset.iterdir())


def test_summary_text_is_readable(capsys, tiny_dataset):
    code, out, _ = run(capsys, "summary", tiny_dataset)
    assert code == 0
    manifest = shards.load_manifest(tiny_dataset)
    val = manifest["totals"]["val"]
    val_row = next(line for line in out.splitlines() if line.strip().startswith("val "))
    assert val_row.split()[2:4] == [f"{val['documents']:,}", f"{val['tokens']:,}"]
    assert "uint16 · vocab 300" in out and "size on disk" in out


def test_verify_passes_a_sound_dataset(capsys, tiny_dataset):
    code, out, _ = run(capsys, "verify", tiny_dataset)
    assert code == 0
    assert out.startswith(f"OK {tiny_dataset}")


def _flip_byte(d: Path) -> str:
    path = d / "train_000001.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 0x01  # low bit of a token id: still a valid id, only the checksum can tell
    path.write_bytes(bytes(data))
    return "train_000001.bin: sha256 does not match"


def _truncate(d: Path) -> str:
    path = d / "train_000002.bin"
    path.write_bytes(path.read_bytes()[:-6])
    return "train_000002.bin: "


def _missing(d: Path) -> str:
    (d / "val_000000.bin").unlink()
    return "val_000000.bin: missing"


def _stray(d: Path) -> str:
    (d / "train_000099.bin").write_bytes(b"\x00\x00")
    return "train_000099.bin: stray shard file"


def _wrong_tokenizer(d: Path) -> str:
    tk.save(tk.train_bpe(sample_texts(50, seed=7), vocab_size=280, min_frequency=1), d / "tokenizer.json")
    return "tokenizer.json has fingerprint"


def _bad_index(d: Path) -> str:
    path = d / "train_000000.idx"
    offsets = np.fromfile(path, dtype="<u8")
    offsets[1] += 1  # now points one token past a separator
    offsets.tofile(path)
    return "train_000000.idx: an offset does not point at the separator"


def _index_count(d: Path) -> str:
    path = d / "val_000000.idx"
    path.write_bytes(path.read_bytes()[:-8])
    return "val_000000.idx: "


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _missing, _stray, _wrong_tokenizer, _bad_index,
                                    _index_count])
def test_verify_names_each_kind_of_damage(capsys, copy_dataset, damage):
    d = copy_dataset()
    expected = damage(d)
    code, out, _ = run(capsys, "verify", d)
    assert code == 1
    assert out.startswith(f"FAILED {d}")
    assert any(line.startswith(f"  - {expected}") for line in out.splitlines()), out
    code, out, _ = run(capsys, "verify", d, "--json")
    r = json.loads(out)
    assert code == 1 and r["ok"] is False and any(p.startswith(expected) for p in r["problems"])


def test_verify_missing_tokenizer_and_manifest(capsys, copy_dataset):
    d = copy_dataset()
    (d / "tokenizer.json").unlink()
    code, out, _ = run(capsys, "verify", d)
    assert code == 1 and "  - tokenizer.json: missing" in out
    (d / "manifest.json").unlink()
    code, out, _ = run(capsys, "verify", d)
    assert code == 1 and "has no manifest.json" in out


def test_decode_documents_by_index_with_ids(capsys, tiny_dataset):
    docs = split_docs(tiny_dataset, "val")
    tok = tk.load(tiny_dataset / "tokenizer.json")
    code, out, _ = run(capsys, "decode", tiny_dataset, "--doc", 0, 39, "--json")
    assert code == 0
    items = json.loads(out)["items"]
    assert [i["ids"] for i in items] == [docs[0], docs[39]]
    assert items[0]["text"] == tok.decode(docs[0]) == sample_texts(400)[9]  # val doc 0 is text 9
    code, out, _ = run(capsys, "decode", tiny_dataset, "--doc", 5, "--ids")
    assert f"ids: {docs[5]}" in out and tok.decode(docs[5]) in out


def test_decode_random_is_seeded(capsys, tiny_dataset):
    a = json.loads(run(capsys, "decode", tiny_dataset, "--random", 4, "--seed", 3, "--json")[1])["items"]
    b = json.loads(run(capsys, "decode", tiny_dataset, "--random", 4, "--seed", 3, "--json")[1])["items"]
    assert [i["index"] for i in a] == [i["index"] for i in b]
    assert len({i["index"] for i in a}) == 4


def test_decode_windows_match_the_loader(capsys, tiny_dataset):
    manifest = shards.load_manifest(tiny_dataset)
    first, second = (np.asarray(shards.open_tokens(tiny_dataset, e, "uint16"))
                     for e in shards.split_shards(manifest, "train")[:2])
    # windows start every seq_len tokens within a shard; the first shard holds (n - 1) // seq_len of them
    n0 = (len(first) - 1) // 200
    code, out, _ = run(capsys, "decode", tiny_dataset, "--split", "train", "--window", n0 - 1, n0,
                       "--seq-len", 200, "--json")
    a, b = json.loads(out)["items"]
    assert code == 0
    assert a["ids"] == first[(n0 - 1) * 200:n0 * 200 + 1].tolist() and a["file"] == "train_000000.bin"
    assert b["ids"] == second[:201].tolist() and b["file"] == "train_000001.bin"
    assert b["text"].startswith("<|endoftext|>")


def test_decode_out_of_range_is_a_clear_error(capsys, tiny_dataset):
    code, out, err = run(capsys, "decode", tiny_dataset, "--doc", 40)
    assert code == 2 and out == ""
    assert err == "error: document 40 is out of range: the val split has 40 documents (0..39)\n"


def test_decode_a_negative_random_count_is_a_clear_error(capsys, tiny_dataset):
    code, out, err = run(capsys, "decode", tiny_dataset, "--random", -3)
    assert code == 2 and out == "" and err == "error: --random -3: give how many documents to draw, at least 1\n"


def test_stats_counts_are_exact(capsys, tiny_dataset, tmp_path):
    manifest = shards.load_manifest(tiny_dataset)
    stream = np.concatenate([shards.open_tokens(tiny_dataset, e, "uint16") for e in manifest["shards"]])
    counts = np.bincount(stream, minlength=300)
    plot = tmp_path / "stats.png"
    code, out, _ = run(capsys, "stats", tiny_dataset, "--json", "--top", 3, "--plot", plot)
    assert code == 0
    s = json.loads(out)
    assert s["tokens"] == len(stream) and s["documents"] == 400
    assert s["separator_share"] == 400 / len(stream)
    top = np.argsort(-counts, kind="stable")[:3]
    assert [(t["id"], t["count"]) for t in s["top_tokens"]] == [(int(i), int(counts[i])) for i in top]
    lengths = [len(d) for split in shards.SPLITS for d in split_docs(tiny_dataset, split)]
    assert sum(s["document_length"]["histogram"]["counts"]) == 400
    assert s["document_length"]["p100"] == max(lengths) and s["document_length"]["p0"] == min(lengths)
    # every document is decoded for bytes per token here (400 < --sample-docs)
    tok = tk.load(tiny_dataset / "tokenizer.json")
    assert s["bytes_per_token"] == sum(len(tok.decode(d).encode()) for split in shards.SPLITS
                                       for d in split_docs(tiny_dataset, split)) / sum(lengths)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stats_text_output(capsys, tiny_dataset):
    code, out, _ = run(capsys, "stats", tiny_dataset, "--split", "val")
    assert code == 0
    assert "split val · 40 documents" in out and "separator share" in out and "most frequent tokens" in out


def test_missing_directory_is_an_error_without_traceback(capsys, tmp_path):
    for command in ("summary", "decode", "stats"):
        code, out, err = run(capsys, command, tmp_path / "nope")
        assert code == 2 and err.startswith(f"error: dataset directory {tmp_path / 'nope'} does not exist")


def test_runs_as_a_script():
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "inspect_shards.py"), "--help"],
                       capture_output=True, text=True, cwd="/")
    assert r.returncode == 0 and "verify" in r.stdout and "decode" in r.stdout
