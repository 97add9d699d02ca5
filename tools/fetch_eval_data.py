"""Fetch the public task files that training and ``python -m train.evaluate`` score: HellaSwag, ARC, LAMBADA.

    python tools/fetch_eval_data.py                         # all of them into data/eval/
    python tools/fetch_eval_data.py --only hellaswag --out data/eval
    python tools/fetch_eval_data.py --arc-zip ~/Downloads/ARC-V1-Feb2018.zip

Each file is fetched from its publisher, in the publisher's own format, checked, and written to
``OUT/NAME.jsonl`` under the task's name in lm-evaluation-harness (so a task's scores are keyed
``hellaswag``, ``arc_easy``, ``arc_challenge``, ``lambada_openai``):

=================  =================================================================  ======  ==========
name               source                                                             items   checked by
=================  =================================================================  ======  ==========
hellaswag          rowanz/hellaswag ``data/hellaswag_val.jsonl`` at commit a29ff8e     10042   git blob id
arc_easy           AI2's ``ARC-V1-Feb2018.zip``: ``ARC-Easy/ARC-Easy-Test.jsonl``      2376    sha256
arc_challenge      AI2's ``ARC-V1-Feb2018.zip``: ``ARC-Challenge/ARC-Challenge-Test``  1172    sha256
lambada_openai     OpenAI's ``gpt-2/data/lambada_test.jsonl``                          5153    sha256
=================  =================================================================  ======  ==========

Where the checksums come from (none of the files could be downloaded where this tool was written):

* hellaswag: the git blob id of the file in the rowanz/hellaswag repository's tree at that commit
  (git's content address: sha1 of ``"blob SIZE\\0"`` + the bytes), so the file is exactly the
  repository's. Its sha256 is printed after the download.
* lambada_openai: sha256 ``4aa8d02c...`` as published in EleutherAI's lambada_openai dataset card and
  in lm-evaluation-harness's former LAMBADA task (1,819,752 bytes).
* arc_easy, arc_challenge: the zip is 680 MB, nearly all of it a corpus these tasks do not use, so the
  two test files are read out of it with HTTP range requests (a few hundred kB; the zip's CRC-32 checks
  each). Their sha256 values are those another project pins for the same members; they were not
  confirmed here. ``--arc-zip`` takes a zip downloaded by hand instead, checked as a whole against the
  sha256 Hugging Face's ai2_arc builder records for it (its members are then taken as they are).

A file already in ``OUT`` that passes its check is kept. A file that fails its check is not written,
and the tool says what it got and what it expected. A source without a recorded checksum would be
written with its sha256 printed and marked unverified; every source here has one.
"""
# no `from __future__ import annotations`: the tests load this script as a module outside sys.modules,
# where dataclasses cannot resolve string annotations
import argparse
import hashlib
import io
import json
import sys
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a fresh clone

import shards  # noqa: E402
from train.tasks import TaskError, read_task  # noqa: E402

ARC_ZIP_URL = "https://ai2-public-datasets.s3.amazonaws.com/arc/ARC-V1-Feb2018.zip"
# Hugging Face datasets' ai2_arc builder, dataset_infos.json: the zip it downloads (then from
# s3-us-west-2.amazonaws.com/ai2-website/data/ARC-V1-Feb2018.zip), 680,841,265 bytes
ARC_ZIP_SHA256 = "6d2d5ab50b2ceec6ba5f79c921be77cf2de712ea25a2b3f4fff3acc101cecfa0"
TIMEOUT_S = 60


class FetchError(shards.PipelineError):
    """A file that cannot be fetched or does not pass its check; the message says what to do."""


@dataclass(frozen=True)
class Source:
    name: str                    # the file is OUT/NAME.jsonl; the task's name
    kind: str                    # train/tasks.py's format
    url: str
    items: int                   # items the published file holds
    sha256: str | None = None    # of the file (or of the zip member)
    git_blob: str | None = None  # git's blob id of the file, where the repository gives that instead
    member: str | None = None    # the file's path inside the zip at ``url``
    provenance: str = ""


SOURCES = (
    Source("hellaswag", "hellaswag",
           "https://raw.githubusercontent.com/rowanz/hellaswag/a29ff8e9a04bba4bd6588223785ce105328adc57/data/"
           "hellaswag_val.jsonl", 10042, git_blob="0f5ee25d72216f12317d5d8a7b92deafa423d81e",
           provenance="git blob id in rowanz/hellaswag's tree at commit a29ff8e"),
    Source("arc_easy", "arc", ARC_ZIP_URL, 2376,
           sha256="ce32a0774b4beb1977d2c6b16dda5dd2b24fdc9c7f506882c452678676bd09be",
           member="ARC-V1-Feb2018-2/ARC-Easy/ARC-Easy-Test.jsonl",
           provenance="sha256 pinned by another project for this member; not confirmed here"),
    Source("arc_challenge", "arc", ARC_ZIP_URL, 1172,
           sha256="9fa8ffb3e3a1f88cb302d53dd95aae81e39209ad9bcf974376b319d8fd35717c",
           member="ARC-V1-Feb2018-2/ARC-Challenge/ARC-Challenge-Test.jsonl",
           provenance="sha256 pinned by another project for this member; not confirmed here"),
    Source("lambada_openai", "lambada", "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
           5153, sha256="4aa8d02cd17c719165fc8a7887fddd641f43fcafa4b1c806ca8abc31fabdb226",
           provenance="sha256 in EleutherAI's lambada_openai dataset card and lm-eval's former LAMBADA task"),
)


# ---------------------------------------------------------------------------------------------------
# reading over HTTP

def _open(request: urllib.request.Request):
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # noqa: S310 - the URLs above
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e
        raise FetchError(f"cannot fetch {request.full_url}: {reason}. Check the network, or download it by hand "
                         f"and put the file in place (see the tool's --help)") from None


def get(url: str) -> bytes:
    with _open(urllib.request.Request(url)) as r:
        return r.read()


class RangeReader(io.RawIOBase):
    """A read-only, seekable view of a file on an HTTP server that answers Range requests, so that
    ``zipfile`` reads one member of a large archive (its directory at the end, then the member) without
    the rest. Each miss fetches at least ``chunk`` bytes from the position read."""

    def __init__(self, url: str, chunk: int = 256 << 10):
        self.url, self.chunk, self.pos, self.fetched = url, chunk, 0, 0
        with _open(urllib.request.Request(url, method="HEAD")) as r:
            self.size = int(r.headers.get("Content-Length", -1))
        if self.size < 0:
            raise FetchError(f"{url} does not say its size (no Content-Length); download the file by hand")
        self.buf_start, self.buf = 0, b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def _fill(self, n: int) -> None:
        end = min(self.size, self.pos + max(n, self.chunk))
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{end - 1}"})
        with _open(request) as r:
            if r.status != 206:
                raise FetchError(f"{self.url} does not answer range requests; download the whole file by hand and "
                                 f"pass it with --arc-zip")
            self.buf_start, self.buf = self.pos, r.read()
        self.fetched += len(self.buf)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self.size - self.pos
        size = min(size, self.size - self.pos)
        if size <= 0:
            return b""
        if not self.buf_start <= self.pos or self.pos + size > self.buf_start + len(self.buf):
            self._fill(size)
        at = self.pos - self.buf_start
        self.pos += size
        return self.buf[at:at + size]

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


# ---------------------------------------------------------------------------------------------------
# checking and writing

def git_blob_id(data: bytes) -> str:
    """git's id of a file with these bytes (``git hash-object``)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def check(source: Source, data: bytes) -> str:
    """How ``data`` was verified ("sha256", "git blob id", or "unverified"); a FetchError if it fails."""
    sha = hashlib.sha256(data).hexdigest()
    if source.sha256:
        if sha != source.sha256:
            raise FetchError(f"{source.name}: {source.url}{' ' + source.member if source.member else ''} has sha256 "
                             f"{sha}, expected {source.sha256} ({source.provenance}); not written. The publisher "
                             f"may have changed the file: compare it with the original before using it")
        return "sha256"
    if source.git_blob:
        blob = git_blob_id(data)
        if blob != source.git_blob:
            raise FetchError(f"{source.name}: {source.url} has git blob id {blob}, expected {source.git_blob} "
                             f"({source.provenance}); not written")
        return "git blob id"
    return "unverified"


def check_arc_zip(arc_zip: Path) -> None:
    """A FetchError unless ``arc_zip`` is the ARC-V1-Feb2018.zip on record."""
    digest = hashlib.sha256()
    with open(arc_zip, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != ARC_ZIP_SHA256:
        raise FetchError(f"{arc_zip} has sha256 {digest.hexdigest()}, but ARC-V1-Feb2018.zip has {ARC_ZIP_SHA256} "
                         f"(Hugging Face's ai2_arc record); download it again from {ARC_ZIP_URL}")


def read_zip_member(source: Source, archive) -> bytes:
    """``source.member`` out of ``archive`` (a path, or a RangeReader over the URL); zipfile checks its CRC-32."""
    try:
        with zipfile.ZipFile(archive) as z:
            return z.read(source.member)
    except (zipfile.BadZipFile, KeyError) as e:
        raise FetchError(f"{source.url}: cannot read {source.member} from the zip ({e}); download the zip by hand "
                         f"and pass it with --arc-zip") from None


def fetch_source(source: Source, out: Path, arc_zip: Path | None = None) -> dict:
    """Fetch, check and write one source (kept as it is when a copy in ``out`` passes its check)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{source.name}.jsonl"
    if path.exists():
        data = path.read_bytes()
        try:
            return {**_written(source, path, data, check(source, data)), "fetched_bytes": 0, "kept": True}
        except FetchError:
            pass  # a damaged or different copy: fetched again
    note = None
    if source.member and arc_zip is not None:
        data, fetched = read_zip_member(source, arc_zip), 0
        verified = "zip sha256"  # the whole zip is the recorded one: its members are what they are
        try:
            check(source, data)
        except FetchError as e:
            note = f"the zip is the recorded one, but its member differs from the member checksum on record: {e}"
    elif source.member:
        reader = RangeReader(source.url)
        data, fetched = read_zip_member(source, reader), reader.fetched
        verified = check(source, data)
    else:
        data = get(source.url)
        fetched = len(data)
        verified = check(source, data)
    shards.atomic_write_bytes(path, data)
    return {**_written(source, path, data, verified), "fetched_bytes": fetched, "kept": False, "note": note}


def _written(source: Source, path: Path, data: bytes, verified: str) -> dict:
    try:
        items = len(read_task(path, source.kind).items)
    except TaskError as e:
        raise FetchError(f"{path} does not read as a {source.kind} task file: {e}") from None
    return {"name": source.name, "path": str(path), "items": items, "expected_items": source.items,
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "verified": verified,
            "provenance": source.provenance}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/fetch_eval_data.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--out", type=Path, default=Path("data/eval"), help="where the files go (default: data/eval)")
    p.add_argument("--only", action="append", choices=[s.name for s in SOURCES], default=[],
                   help="fetch only this one (repeatable)")
    p.add_argument("--arc-zip", type=Path, metavar="ZIP", help="read ARC from this ARC-V1-Feb2018.zip instead")
    args = p.parse_args(argv)
    rows = []
    try:
        if args.arc_zip is not None:
            check_arc_zip(args.arc_zip)
        for source in SOURCES:
            if args.only and source.name not in args.only:
                continue
            rows.append(fetch_source(source, args.out, args.arc_zip))
            r = rows[-1]
            how = "NOT VERIFIED: no recorded checksum" if r["verified"] == "unverified" else f"{r['verified']} ok"
            print(f"{r['name']:<16} {r['items']:>6,} items  {'kept' if r['kept'] else 'written'} {r['path']}  "
                  f"sha256 {r['sha256']}  ({how})", flush=True)
            if r.get("note"):
                print(f"note: {r['note']}")
            if r["items"] != r["expected_items"]:
                print(f"note: {r['path']} holds {r['items']} items; the published file holds {r['expected_items']}")
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nscore them: python -m train.evaluate RUN {' '.join('--tasks ' + r['path'] for r in rows)}\n"
          f"or while training, as the config's training.eval_tasks: {json.dumps([r['path'] for r in rows])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
