"""Rehearse the flagship Dolma build: a simulated Dolma v1.7 list served on 127.0.0.1, built by the real CLI.

    python tools/bench_dolma.py [--modes range,norange,flaky,slow] [--max-tokens 200M] [--scale 1]
                                [--out /tmp/bench_dolma]
    python tools/bench_dolma.py --serve --mode range [--scale 0.01] [--port 8000]   # the server alone

For each mode it starts the server, runs ``python -m preprocess --input-list URLS --max-tokens N --out DIR``
exactly as a user would (default options otherwise, so the default ``--tokenizer-sample-bytes``),
watches its processes through /proc, and prints one table: planning time; the bytes the server sent
(its own count, per phase) against the compressed bytes of the documents the build kept; the
tokenizer's training time and peak memory; the encode rate; the peak RSS of all the build's processes;
and the projected wall time and download of the whole 5B-token build on a 16-core machine with a
1 Gbit/s link.

The list
--------
2,419 URLs named like those of Dolma's ``urls/v1_7.txt`` (``.../dolma-v1_7/cc_en_head/cc_en_head-0000.json.gz``;
the numbering, including the two numbers the real list skips, as in the ``DOLMA_DATASETS`` table of
marin's ``experiments/pretraining_datasets.py``, which lists v1_7.txt's files). Each source's share of
the bytes follows its tokens in the dataset card's table, "Summary Statistics (v1.7)" of
https://huggingface.co/datasets/allenai/dolma (README.md, 2024-04-17 release), the whole list being
the card's 4.5 TB of gzip:

    card row (files in the list)              documents (M)   OLMo tokens (B)   files   gzip per file
    Dolma's CC (cc_en_head/middle/tail)             875.2          1,195.5       1,098        2.1 GB
    Refined Web (falcon)                              -              456.4         500        1.8 GB
    StarCoder (starcoder)                             -              263.8          49       10.5 GB
    C4 (c4)                                         249.9            138.4         171        1.6 GB
    Reddit (reddit)                                 377.4             79.9          78        2.0 GB
    Semantic Scholar (pes2o)                         38.8             57.2          26        4.3 GB
    arXiv (arxiv)                                     1.5             28.0         100        0.5 GB
    StackExchange (stackexchange)                    29.3             19.6          26        1.5 GB
    Flan (tulu_flan)                                 52.1             16.5          66        0.5 GB
    CC News (cc_news_head/middle/tail)               22.0             14.3           9        3.1 GB
    OpenWebMath (open-web-math-train)                 2.9             12.6          13        1.9 GB
    Algebraic Stack (algebraic-stack-train)           2.8             12.6          16        1.5 GB
    Project Gutenberg (books)                        0.056             5.3           3        3.4 GB
    MegaWika (megawika)                               3.2              4.6         262       0.03 GB
    Wikipedia & Wikibooks (wiki)                      6.2              3.7           2        3.6 GB

A source's bytes are its tokens times 1.95 bytes of gzip per token (4.5 TB / 2,308.5B tokens), split
evenly over its files, each file then +-10% by a hash of its name. Documents per source only set the
mean document length (tokens per document x 4 bytes of text); the card gives none for Refined Web and
StarCoder (2,600 and 4,400 bytes are assumed). ``--scale`` multiplies every file's size; ``--urls N``
keeps about N files, each group's share (at least one file each).

The documents
-------------
One JSON object per line with Dolma's fields (``id``, ``text``, ``source``, ``added``, ``created``,
``metadata``), in one gzip member per file. The text is drawn per source from a style: English-like
prose (web, news, forum, books, encyclopedia, academic, instructions) whose words follow a double power
law (Zipf with exponent 1 for the 10,000 most frequent words, real English function words first,
then a rarer tail, as Ferrer i Cancho and Sole found for large English corpora: about 9% of words beyond
rank 10,000), numbers, punctuation and line breaks; LaTeX for arxiv and open-web-math; code (Python-,
C-like and Lean-like tokens, snake and camel-case identifiers) for starcoder, algebraic-stack and parts
of stackexchange. So a BPE finds per source a plausible tokens per byte and a large, growing
vocabulary, which is what the tokenizer's training memory depends on. The tail is set so that the
default 1 GB tokenizer sample (about 200M words) holds about 2.5M distinct words: vocabularies grow as
Heaps' law k * n**b with b 0.4-0.7; 2.5M in 200M words is an assumption (raw web text, with its case,
numbers, names and code, has several times the vocabulary of the cleaned text those laws are usually
fitted on), and a sample with more distinct words needs more memory to train on.

How a 2 GB gzip file is served without being stored
---------------------------------------------------
Each file is a gzip header, then its body cut into chunks of a fixed compressed size (``--chunk-kb``,
1 MiB), then an empty final deflate block and the trailer (CRC-32 and length of the whole text). Chunk
j of a file holds whole documents drawn from a random generator seeded by (``--seed``, file name, j)
alone, compressed from a fresh ISA-L deflate state (level 1) and closed with a sync flush, then padded
with empty deflate blocks to exactly its size (under 0.1% of the bytes). So:

* every file's size is known before any of it is generated, from its name and the scale: HEAD answers
  with Content-Length at once, as a CDN does for a stored object;
* a Range request at offset X generates only the chunk holding X (a chunk never refers back into the
  one before it); the last few chunks generated are kept in a memory cache (``--cache-mb``);
* the trailer's CRC-32 is combined from the chunks' own CRCs; a request for the trailer generates the
  chunks not yet generated (a client reading the file to its end has generated them all by then).

What the client sees is one valid gzip member (its CRC is checked), a single file of the given size,
byte-identical on every request, with a strong ETag: what a static file on a CDN gives. What differs
from a file written in one go by ``gzip`` is invisible to a client: the deflate blocks restart their
dictionary at every chunk (a 32 KB window lost per 1 MiB: slightly worse compression) and there are
empty blocks between chunks.

Server modes (``--modes`` for the runner, ``--mode`` and the fault options for ``--serve``)
------------------------------------------------------------------------------------------
``range``   answers Range requests (206), as CDNs and S3 do.
``norange`` ignores Range and answers 200 with the whole body, as Python's ``http.server`` does.
``flaky``   ``range``, and a share of the requests answered 503 with Retry-After (``--fail-rate``,
            ``--retry-after``; ``--outage D/E``: all requests refused for D seconds every E seconds), and a
            share of the bodies cut by a connection reset (``--reset-rate``).
``slow``    ``range`` through one shared link of ``--link-mbit`` (default 1 Gbit/s x 2/16: the flagship's
            link per core, on this machine's two).
The server counts the body bytes it sends (written into the socket) per request and per file: those
counts are the figures the table shows. ``GET /_stats`` returns them as JSON.

The projection
--------------
From the measured figures, for 5B tokens on 16 cores and 125 MB/s:
* download = the kept bytes of the 5B plan at full size (each source's quota at its measured tokens per
  byte of gzip) + the fixed overhead (what was fetched beyond the kept documents of files read whole or
  not kept at all: the tokenizer sample and the measurement) + d x the unkept remainders of the 5B
  plan's cut files, where d is the share of the cut files' remainders fetched here (1: read to the end;
  from a server that ignores Range always 1, as a file opened there comes whole);
* wall time = planning (measured, plus 2,400 HEADs at 64 in flight on a 100 ms round trip) + the
  tokenizer's training as measured here (an upper bound: its word counting uses every core) +
  the measurement as measured + the main pass: the longest of the workers' CPU time (measured per token)
  for 5B tokens spread over 15 cores, the main process's CPU time (it alone reads, decompresses and
  writes: measured per byte the main pass read, from the spool or the network) for what the 5B main pass
  reads, and the main pass's download at 125 MB/s.
"""
from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from isal import isal_zlib

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------
# the list: the dataset card's sources and the URL list's files

LIST_BYTES = 4.5e12           # the card's size of v1_7 (gzip)
CARD_TOKENS = 2308.5e9        # the card's total of OLMo tokens
BYTES_PER_TOKEN = LIST_BYTES / CARD_TOKENS
TEXT_BYTES_PER_TOKEN = 4.0    # to turn the card's tokens per document into a document length

# card row -> (documents in millions or None, OLMo tokens in billions, record "source" field, style)
CARD = {
    "cc": (875.2, 1195.5, "common-crawl", "web"),
    "falcon": (None, 456.4, "falcon", "web"),
    "starcoder": (None, 263.8, "starcoder", "code"),
    "c4": (249.9, 138.4, "c4", "web"),
    "reddit": (377.4, 79.9, "reddit", "forum"),
    "pes2o": (38.8, 57.2, "s2", "academic"),
    "arxiv": (1.5, 28.0, "redpajama/arxiv", "latex"),
    "stackexchange": (29.3, 19.6, "redpajama/stackexchange", "qa"),
    "flan": (52.1, 16.5, "tulu_flan", "instruct"),
    "cc_news": (22.0, 14.3, "cc_news", "news"),
    "open-web-math": (2.9, 12.6, "proof-pile-2/open-web-math", "math_web"),
    "algebraic-stack": (2.8, 12.6, "proof-pile-2/algebraic-stack", "proof_code"),
    "gutenberg": (0.0556, 5.3, "gutenberg", "books"),
    "megawika": (3.2, 4.6, "megawika", "wiki"),
    "wiki": (6.2, 3.7, "wiki", "wiki"),
}
ASSUMED_DOC_BYTES = {"falcon": 2600, "starcoder": 4400}

# file-name group, card row, the shard numbers v1_7.txt holds
FILE_GROUPS = [
    ("algebraic-stack-train", "algebraic-stack", range(16)),
    ("arxiv", "arxiv", range(100)),
    ("books", "gutenberg", range(3)),
    ("c4", "c4", range(171)),
    ("cc_en_head", "cc", range(275)),
    ("cc_en_middle", "cc", [*range(239), *range(240, 380)]),
    ("cc_en_tail", "cc", [*range(153), *range(154, 445)]),
    ("cc_news_head", "cc_news", range(5)),
    ("cc_news_middle", "cc_news", range(3)),
    ("cc_news_tail", "cc_news", range(1)),
    ("falcon", "falcon", range(500)),
    ("megawika", "megawika", range(262)),
    ("open-web-math-train", "open-web-math", range(13)),
    ("pes2o", "pes2o", range(26)),
    ("reddit", "reddit", range(78)),
    ("stackexchange", "stackexchange", range(26)),
    ("starcoder", "starcoder", range(49)),
    ("tulu_flan", "flan", range(66)),
    ("wiki", "wiki", range(2)),
]
MIN_FILE_BYTES = 4096


@dataclass
class DolmaFile:
    """One file of the list: where it is, what it holds, and how its body is cut into chunks."""
    number: int      # its index in the list
    group: str       # cc_en_head
    name: str        # cc_en_head-0042.json.gz
    row: str         # the card row: cc
    size: int        # bytes of gzip, the whole file
    chunk_base: int = 0
    chunk_extra: int = 0
    n_chunks: int = 0

    @property
    def path(self) -> str:
        return f"/dolma-v1_7/{self.group}/{self.name}"

    def layout(self, chunk_bytes: int) -> None:
        """Cut the body (the file less 10 bytes of header, 2 of final block, 8 of trailer) into chunks
        of about ``chunk_bytes``: the first ``chunk_extra`` chunks one byte longer than the rest."""
        body = self.size - GZIP_HEADER_LEN - len(FINAL_BLOCK) - 8
        self.n_chunks = max(1, round(body / chunk_bytes))
        self.chunk_base, self.chunk_extra = divmod(body, self.n_chunks)

    def chunk_start(self, j: int) -> int:
        return GZIP_HEADER_LEN + j * self.chunk_base + min(j, self.chunk_extra)

    def chunk_size(self, j: int) -> int:
        return self.chunk_base + (1 if j < self.chunk_extra else 0)

    def chunk_at(self, offset: int) -> int:
        """The chunk holding byte ``offset`` of the file (header and tail belong to none: -1, n_chunks)."""
        if offset < GZIP_HEADER_LEN:
            return -1
        pos = offset - GZIP_HEADER_LEN
        long_part = self.chunk_extra * (self.chunk_base + 1)
        j = pos // (self.chunk_base + 1) if pos < long_part else self.chunk_extra + (pos - long_part) // self.chunk_base
        return min(j, self.n_chunks)


def dolma_list(scale: float, urls: int | None, chunk_bytes: int) -> list[DolmaFile]:
    """The simulated v1_7 list: every file's name and size (``urls``: about that many files)."""
    files_per_row: dict[str, int] = {}
    for _, row, numbers in FILE_GROUPS:
        files_per_row[row] = files_per_row.get(row, 0) + len(numbers)
    total_files = sum(files_per_row.values())
    out = []
    for group, row, numbers in FILE_GROUPS:
        numbers = list(numbers)
        if urls is not None:
            numbers = numbers[:max(1, round(len(numbers) * urls / total_files))]
        mean = CARD[row][1] * 1e9 * BYTES_PER_TOKEN / files_per_row[row]
        for k in numbers:
            name = f"{group}-{k:04d}.json.gz"
            jitter = 0.9 + 0.2 * (zlib.crc32(name.encode()) / 2**32)
            f = DolmaFile(len(out), group, name, row, max(MIN_FILE_BYTES, int(mean * jitter * scale)))
            f.layout(chunk_bytes)
            out.append(f)
    return out


# ---------------------------------------------------------------------------------------------------
# text: a lexicon with a double power law, and per-source styles

FUNCTION_WORDS = (
    "the of and to a in is that for it as was with be by on not he I this are or his from at which but have "
    "an had they you were their one all we can her has there been if more when will would who so no she other "
    "its may these what them than some him time into only do could new about two first then also any like our "
    "my out such over most people up made see after use years where way because many between well each used "
    "how same both said work through under even those part must while should before make still found just "
    "three life being world since both much own back every day different here take great made against good "
    "system number however way during without state each within high around data include small long end"
).split()
SYLLABLES = (
    "ba be bi bo bu ca ce ci co cu da de di do du fa fe fi fo ga ge go ha he hi ho ka ke ki la le li lo lu ma "
    "me mi mo mu na ne ni no nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo wa we "
    "wi ya yo za ze tion ment ing er ed ly al ous ive able ist ity con pro pre com dis ex in un an ar or en"
).split()
LEXICON_SIZE = 1 << 18   # words held in a table; rarer ones are spelled when drawn
HEAD_RANKS = 10_000      # Zipf exponent 1 up to this rank, exponent 2 beyond
HEAD_SHARE = math.log(HEAD_RANKS) / (1 + math.log(HEAD_RANKS))  # continuity of the two laws at HEAD_RANKS


def spell(rank: int) -> str:
    """The word of a rank: English function words first, then syllables in a mixed radix (rarer words are
    longer, and no two ranks share a spelling)."""
    if rank < len(FUNCTION_WORDS):
        return FUNCTION_WORDS[rank]
    k = rank - len(FUNCTION_WORDS)
    parts = []
    while True:
        k, d = divmod(k, len(SYLLABLES))
        parts.append(SYLLABLES[d])
        if k == 0:
            return "".join(parts)
        k -= 1


def word_ranks(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` word ranks (0 = most frequent) from the double power law."""
    u = rng.random(n)
    head = rng.random(n) < HEAD_SHARE
    ranks = np.where(head, np.floor(np.exp(u * math.log(HEAD_RANKS + 1))) - 1,
                     np.floor(HEAD_RANKS / np.maximum(u, 1e-12)))
    return np.minimum(ranks, 2**40).astype(np.int64)


# Pieces of text per style, JSON-escaped as they appear in the file (a newline is the two bytes \n, a
# LaTeX backslash the two bytes \\), with weights. A piece carries its own leading space.
PROSE_PUNCT = {b",": 50, b".": 45, b":": 4, b";": 2, b"?": 3, b"!": 1, b" -": 3, b"'s": 5, b" (": 3, b")": 3,
               rb" \"": 3, rb"\"": 3}
LINE_BREAKS = {rb"\n": 1, rb"\n\n": 2}
CODE_PIECES = {rb"\n": 10, rb"\n    ": 14, rb"\n        ": 8, rb"\n            ": 3, b"(": 12, b")": 12,
               b", ": 9, b" = ": 8, b".": 10, b":": 5, b" {": 3, b"}": 3, b";": 5, b"[": 3, b"]": 3,
               b"return ": 3, b"def ": 2, b"if ": 3, b"else": 1, b"for ": 2, b" in ": 2, b"import ": 1,
               b"self": 6, b"const ": 1, b"int ": 2, b"void ": 1, b"let ": 1, b"function ": 1, b" == ": 2,
               b" + ": 2, b" - ": 1, b" * ": 1, b" -> ": 1, b"None": 1, b"true": 1, b"false": 1, b"0": 3,
               b"1": 2, rb"\"": 4, b"# ": 1, b"// ": 1, b"class ": 1, b"public ": 1, b"static ": 1}
PROOF_PIECES = {rb"\n": 8, rb"\n  ": 12, rb"\n    ": 6, b"theorem ": 2, b"lemma ": 2, b" : ": 6, b" :=": 4,
                b" by": 4, b" simp": 3, b" rw [": 3, b"]": 4, b"(": 6, b")": 6, b" \\u2200 ": 2,
                b" \\u2192 ": 3, b" = ": 5, b" * ": 2, b" + ": 2, b"intro ": 2, b"exact ": 2, b"apply ": 2,
                b"have ": 2, b"Nat": 2, b"Real": 1, b"def ": 2, b"end": 1, b"Proof.": 1, b"Qed.": 1}
LATEX_PIECES = {b" $": 8, b"$": 8, rb"\\frac{": 2, b"}{": 2, b"}": 7, b"_{": 4, b"^{": 3, b"_": 2, b"^2": 2,
                rb" \\alpha": 1, rb" \\beta": 1, rb" \\lambda": 1, rb" \\sum_{": 1, rb" \\int_": 1,
                rb" \\mathbf{": 1, rb" \\mathcal{": 1, rb" \\cite{": 1, rb" \\ref{": 1, rb" \\label{": 0.3,
                rb"\n\\section{": 0.3, rb"\n\\begin{equation}\n": 0.4, rb"\n\\end{equation}\n": 0.4,
                rb" \\leq ": 1, rb" \\in ": 1, b" = ": 3, b" + ": 2, b" x": 2, b" n": 2, b" i": 1, b" k": 1,
                b"(": 2, b")": 2, rb" \\\\": 0.5, b" & ": 0.5}
FORUM_PIECES = {b" I": 10, b" I'm": 3, b" don't": 2, b" it's": 2, b" you're": 1, b" lol": 0.5, b" &gt;": 0.7,
                b" :)": 0.2, b" https://www.reddit.com/r/": 0.2, b" edit:": 0.3, b" EDIT:": 0.2, b"...": 2}
BOOK_PIECES = {rb" \"": 6, rb",\"": 4, rb".\"": 4, b" Mr.": 1, b" Mrs.": 0.5, rb"\n\nCHAPTER ": 0.05,
               b" said": 3, b" --": 1, b" _": 0.2, b"_": 0.2}
WIKI_PIECES = {rb"\n\n== ": 0.4, rb" ==\n": 0.4, b" (born": 0.2, b" The": 3, b" In": 1, b" km": 0.3,
               b" (": 2, b")": 2, b" [1]": 0.3, b" U.S.": 0.2}
ACADEMIC_PIECES = {b" et al.": 1.5, b" [": 2, b"]": 2, b" (Fig.": 0.5, b" Table": 0.5, b" p <": 0.3, b"%": 1,
                   b" (": 2, b")": 2, b" \\u00b1": 0.2, rb"\n\n": 0.5}
QA_PIECES = {rb"\n\n": 3, rb"\n```\n": 0.8, b" `": 1.5, b"`": 1.5, b" I": 3, b" Thanks": 0.3, b" EDIT:": 0.2}
INSTRUCT_PIECES = {rb"\n\nQuestion: ": 1, rb"\nAnswer: ": 1, rb"\nOptions:\n- ": 0.5, rb"\n- ": 1.5,
                   rb"\n\nPremise: ": 0.3, rb"\nHypothesis: ": 0.3, b" Q:": 0.5, b" A:": 0.5,
                   rb"\n\nTranslate": 0.2, rb"\n\nAnswer the following question": 0.3}
WEB_PIECES = {b" Click here": 0.1, b" |": 0.5, b" \\u00a9": 0.1, b" www.": 0.2, b".com": 0.3, b" &": 0.3}
NEWS_PIECES = {b" said": 2, b" (AP)": 0.2, b" \\u2014": 1, b" Reuters": 0.2, b" percent": 0.5, b" million": 0.5}


@dataclass(frozen=True)
class Style:
    """How one source's text is made: the share of each kind of piece, and the pieces of its own."""
    word: float          # a lexicon word, lower case
    capital: float       # a lexicon word, capitalised
    punct: float
    number: float
    line: float          # a line break
    own: float           # a piece of ``pieces``
    ident: float = 0.0   # a code identifier
    pieces: dict = field(default_factory=dict)


STYLES = {
    "web": Style(75, 7, 12, 2.5, 2, 1.5, pieces=WEB_PIECES),
    "news": Style(74, 9, 12, 3, 1.5, 1.5, pieces=NEWS_PIECES),
    "forum": Style(74, 3, 13, 1.5, 3, 5.5, pieces=FORUM_PIECES),
    "books": Style(76, 6, 13, 0.2, 1.5, 3.3, pieces=BOOK_PIECES),
    "wiki": Style(72, 10, 12, 4, 1, 2, pieces=WIKI_PIECES),
    "academic": Style(72, 5, 13, 4, 1, 5, pieces=ACADEMIC_PIECES),
    "latex": Style(50, 3, 9, 3, 2, 33, pieces=LATEX_PIECES),
    "math_web": Style(58, 4, 10, 4, 2, 22, pieces=LATEX_PIECES),
    "qa": Style(60, 4, 11, 2, 3, 8, ident=12, pieces=QA_PIECES),
    "instruct": Style(70, 7, 12, 2, 1, 8, pieces=INSTRUCT_PIECES),
    "code": Style(3, 1, 0, 3, 0, 58, ident=35, pieces=CODE_PIECES),
    "proof_code": Style(3, 2, 0, 2, 0, 58, ident=35, pieces=PROOF_PIECES),
}
IDENTIFIERS = 1 << 16    # code identifiers held in a table (snake_case, camelCase, short names)
KINDS = ("word", "capital", "punct", "number", "line", "own", "ident")


class Lexicon:
    """Every style's pieces in one table of bytes: lexicon words (lower case, then capitalised), then
    each style's punctuation, line breaks, own pieces and identifiers, as index ranges with weights."""

    def __init__(self):
        words = [spell(r) for r in range(LEXICON_SIZE)]
        self.table: list[bytes] = [b" " + w.encode() for w in words] + [b" " + w.capitalize().encode() for w in words]
        self.ranges: dict[str, dict[str, tuple[int, np.ndarray]]] = {}
        rng = np.random.default_rng(12345)
        idents = self._identifiers(rng, words)
        for name, style in STYLES.items():
            kinds = {}
            for kind, pieces in (("punct", PROSE_PUNCT), ("line", LINE_BREAKS), ("own", style.pieces)):
                kinds[kind] = self._add(list(pieces), [float(w) for w in pieces.values()])
            if style.ident:
                kinds["ident"] = self._add(idents, list(1.0 / np.arange(1, len(idents) + 1)))
            self.ranges[name] = kinds
        self.lengths = np.array([len(t) for t in self.table], dtype=np.int64)

    def _add(self, pieces: list[bytes], weights: list[float]) -> tuple[int, np.ndarray]:
        start = len(self.table)
        self.table.extend(pieces)
        cdf = np.cumsum(weights)
        return start, cdf / cdf[-1]

    @staticmethod
    def _identifiers(rng: np.random.Generator, words: list[str]) -> list[bytes]:
        """Code identifiers: one to three lexicon words, snake_case or camelCase, or a short name."""
        out = []
        ranks = (word_ranks(rng, 3 * IDENTIFIERS) % LEXICON_SIZE).reshape(IDENTIFIERS, 3).tolist()
        for i, n in enumerate(rng.integers(1, 4, IDENTIFIERS).tolist()):
            parts = [words[r] for r in ranks[i][:n]]
            form = i % 4
            if form == 0:
                ident = "_".join(parts)
            elif form == 1:
                ident = parts[0] + "".join(p.capitalize() for p in parts[1:])
            elif form == 2:
                ident = "".join(p.capitalize() for p in parts)
            else:
                ident = parts[0][:3]
            out.append(ident.encode())
        return out


def _numbers(rng: np.random.Generator, n: int) -> list[bytes]:
    """``n`` numbers as prose holds them: years, counts, decimals, percentages, thousands."""
    kind = rng.integers(0, 10, n)
    a = rng.integers(0, 100_000, n)
    out = []
    for k, x in zip(kind.tolist(), a.tolist(), strict=True):
        if k < 4:
            out.append(b" %d" % (1900 + x % 125))
        elif k < 7:
            out.append(b" %d" % (x % 100))
        elif k < 8:
            out.append(b" %d.%d" % (x % 100, x % 10))
        elif k < 9:
            out.append(b" %d%%" % (x % 100))
        else:
            out.append(b" %d,%03d" % (x // 1000 % 100 + 1, x % 1000))
    return out


def pieces_stream(lex: Lexicon, style_name: str, rng: np.random.Generator, nbytes: int) -> tuple[bytes, np.ndarray]:
    """At least ``nbytes`` of JSON-escaped text in ``style_name``, drawn piece by piece, and the byte
    offset where each piece ends (about 6 MB/s: used once per style, for its buffer)."""
    style, ranges = STYLES[style_name], lex.ranges[style_name]
    weights = np.array([getattr(style, k) for k in KINDS], dtype=np.float64)
    kind_cdf = np.cumsum(weights) / weights.sum()
    n = nbytes // 3 + 64  # pieces average more than 3 bytes: one round is enough
    kinds = np.searchsorted(kind_cdf, rng.random(n), side="right")
    idx = np.zeros(n, dtype=np.int64)
    fresh: dict[int, bytes] = {}  # position -> a piece not in the table (a rare word, a number)
    for k, kind in enumerate(KINDS):
        where = np.flatnonzero(kinds == k)
        if not len(where):
            continue
        if kind in ("word", "capital"):
            ranks = word_ranks(rng, len(where))
            rare = ranks >= LEXICON_SIZE
            idx[where] = np.where(rare, 0, ranks + (0 if kind == "word" else LEXICON_SIZE))
            for pos, r in zip(where[rare].tolist(), ranks[rare].tolist(), strict=True):
                w = spell(r)
                fresh[pos] = b" " + (w.capitalize() if kind == "capital" else w).encode()
        elif kind == "number":
            fresh.update(zip(where.tolist(), _numbers(rng, len(where)), strict=True))
        else:
            start, cdf = ranges[kind]
            idx[where] = start + np.minimum(np.searchsorted(cdf, rng.random(len(where)), side="right"), len(cdf) - 1)
    pieces = [lex.table[i] for i in idx.tolist()]
    for pos, piece in fresh.items():
        pieces[pos] = piece
    ends = np.cumsum([len(p) for p in pieces], dtype=np.int64)
    cut = int(np.searchsorted(ends, nbytes)) + 1
    return b"".join(pieces[:cut]), ends[:cut]


SPAN_PIECES = 16  # mean pieces of a style's buffer between two fresh words
TAIL_ALPHA = 0.5  # fresh words: P(rank > r) = (HEAD_RANKS / r) ** TAIL_ALPHA


class Texts:
    """Each style's text, fast: spans of a buffer of its pieces (``buffer_bytes``, made once per style, kept
    in ``cache_dir`` when given), each followed by a fresh word drawn from a heavy tail beyond rank
    HEAD_RANKS (TAIL_ALPHA). The buffer holds the style's frequent words, punctuation and pieces in their
    shares; the fresh words (one in about 13 words, as the double power law puts 9% of words beyond rank
    10,000) make the vocabulary grow with the text as a real corpus's does: 1.5M fresh draws hold 0.47M
    distinct words, 15M (about the default 1 GB sample) 2.2M, a growth as n**0.67."""

    def __init__(self, lex: Lexicon, buffer_bytes: int, cache_dir: Path | None = None):
        self.lex, self.buffer_bytes, self.cache_dir = lex, buffer_bytes, cache_dir
        self.buffers: dict[str, tuple[bytes, np.ndarray]] = {}
        self.lock = threading.Lock()

    def buffer(self, style: str) -> tuple[bytes, np.ndarray]:
        """The style's buffer and its piece boundaries (starting with 0)."""
        with self.lock:
            if style not in self.buffers:
                self.buffers[style] = self._load(style) or self._make(style)
            return self.buffers[style]

    def _path(self, style: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"{style}-{self.buffer_bytes}-v1.npz"

    def _load(self, style: str):
        path = self._path(style)
        if path is None or not path.exists():
            return None
        with np.load(path) as z:
            return z["text"].tobytes(), z["ends"]

    def _make(self, style: str):
        text, ends = pieces_stream(self.lex, style, np.random.default_rng([7, zlib.crc32(style.encode())]),
                                   self.buffer_bytes)
        ends = np.concatenate([[0], ends])
        path = self._path(style)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.npz")
            np.savez(tmp, text=np.frombuffer(text, dtype=np.uint8), ends=ends)
            os.replace(tmp, path)
        return text, ends

    def stream(self, style: str, rng: np.random.Generator, nbytes: int) -> tuple[bytes, np.ndarray]:
        """At least ``nbytes`` of text and the offset where each of its items (a span, a fresh word) ends."""
        buf, ends = self.buffer(style)
        per_span = ends[-1] / (len(ends) - 1) * SPAN_PIECES + 9
        items, total = [], 0
        while total < nbytes:
            n = int((nbytes - total) / per_span * 1.05) + 8
            lengths = np.minimum(rng.geometric(1 / SPAN_PIECES, n), len(ends) - 2)
            first = rng.integers(0, len(ends) - 1 - lengths)
            a, b = ends[first].tolist(), ends[first + lengths].tolist()
            u = np.maximum(rng.random(n), 1e-9)
            ranks = np.minimum(np.floor(HEAD_RANKS * u ** (-1 / TAIL_ALPHA)), 2**62).astype(np.int64).tolist()
            table = self.lex.table
            for x, y, r in zip(a, b, ranks, strict=True):
                items.append(buf[x:y])
                items.append(table[r] if r < LEXICON_SIZE else b" " + spell(r).encode())
            total += sum(y - x for x, y in zip(a, b, strict=True)) + sum(len(w) for w in items[-2 * n + 1::2])
        return b"".join(items), np.cumsum([len(x) for x in items], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------
# documents and chunks

ADDED = b"2024-04-01T00:00:00.000Z"


def mean_doc_bytes(row: str) -> float:
    docs, tokens = CARD[row][0], CARD[row][1]
    if docs is None:
        return ASSUMED_DOC_BYTES[row]
    return tokens / docs * 1e3 * TEXT_BYTES_PER_TOKEN


CREATED = [time.strftime("%Y-%m-%dT00:00:00.000Z", time.gmtime(1.1e9 + d * 86400)).encode() for d in range(5000)]


def _metadata(style: str, rng: np.random.Generator, lex: Lexicon, n: int) -> list[bytes]:
    """``n`` documents' metadata: a URL for web text, a repository and path for code, an id for papers."""
    w = [lex.table[r].strip() for r in (word_ranks(rng, 3 * n) % LEXICON_SIZE).tolist()]
    if style in ("code", "proof_code"):
        ext = b".lean" if style == "proof_code" else b".py"
        return [b'{"repo_name": "%s/%s", "path": "src/%s%s"}' % (w[3 * i], w[3 * i + 1], w[3 * i + 2], ext)
                for i in range(n)]
    if style in ("latex", "academic"):
        return [b'{"id": "%d.%05d"}' % (1000 + a % 1400, a % 99999) for a in rng.integers(0, 2**31, n).tolist()]
    return [b'{"url": "https://www.%s.com/%s/%s", "language": "en"}' % (w[3 * i], w[3 * i + 1], w[3 * i + 2])
            for i in range(n)]


def documents(texts: Texts, f: DolmaFile, rng: np.random.Generator, lengths: list[int]) -> list[bytes]:
    """JSON lines of documents whose texts have about ``lengths`` bytes, in Dolma's format."""
    _, _, source, style = CARD[f.row]
    text, ends = texts.stream(style, rng, sum(lengths))
    # each document ends just after a fresh word (the stream's odd items), at least one word past the last
    cut = np.searchsorted(ends, np.cumsum(lengths), side="left")
    cut += 1 - cut % 2
    steps = 2 * np.arange(len(cut))
    cut = np.maximum.accumulate(cut - steps) + steps
    stops = ends[cut[cut < len(ends)]].tolist()  # documents the stream is too short for are left out
    lengths = lengths[:len(stops)]
    ids = rng.integers(0, 2**63, size=(len(lengths), 2)).tolist()
    days = rng.integers(0, len(CREATED), len(lengths)).tolist()
    meta = _metadata(style, rng, texts.lex, len(lengths))
    source = source.encode()
    lines, start = [], 0
    for d, end in enumerate(stops):
        body = text[start + (1 if text[start:start + 1] == b" " else 0):end]
        start = end
        lines.append(b'{"id": "%016x%016x", "text": "%s", "source": "%s", "added": "%s", "created": "%s", '
                     b'"metadata": %s}\n' % (ids[d][0], ids[d][1], body, source, ADDED, CREATED[days[d]], meta[d]))
    return lines


def doc_lengths(rng: np.random.Generator, mean: float, budget: int, cap: int) -> list[int]:
    """Lognormal document lengths (sigma 1, the given mean), each at most ``cap``, adding up to ``budget``."""
    mu = math.log(mean) - 0.5
    out, total = [], 0
    while total < budget:
        for x in np.exp(rng.normal(mu, 1.0, 64)).tolist():
            n = int(min(max(x, 64), cap, budget - total))
            if n < 64:
                return out
            out.append(n)
            total += n
            if total >= budget:
                break
    return out


# gzip framing: a header without name or time, an empty final block after the chunks
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
GZIP_HEADER_LEN = len(GZIP_HEADER)
FINAL_BLOCK = b"\x03\x00"   # an empty fixed-Huffman block with BFINAL set
LEVEL = 1                   # ISA-L's level: fast; the text compresses 2.0-2.3x (v1.7's card implies about 2.5)


def padding(n: int) -> bytes:
    """``n`` bytes of empty deflate blocks, from a byte boundary to a byte boundary (n >= 5, n != 8).

    k empty fixed-Huffman blocks (10 bits each) then an empty stored block (3 bits, then to the byte,
    then LEN 0 and NLEN) take ceil((10k + 3) / 8) + 4 bytes: 5, 6, 7, 9 for k = 0..3; sums of those
    make every n >= 5 but 8."""
    def group(k: int) -> bytes:
        bits = [0, 1, 0] + [0] * 7  # BFINAL 0, BTYPE 01 (stored least significant bit first), EOB 0000000
        stream = bits * k + [0, 0, 0]
        value = sum(b << i for i, b in enumerate(stream))
        return value.to_bytes((len(stream) + 7) // 8, "little") + b"\x00\x00\xff\xff"
    sizes = {5: 0, 6: 1, 7: 2, 9: 3}
    for a in (0, 6, 7, 9):
        for b in (0, 6, 7, 9):
            rest = n - a - b
            if rest >= 0 and rest % 5 == 0 and (a or b or rest):
                return b"".join(group(sizes[x]) for x in (a, b) if x) + group(0) * (rest // 5)
    raise ValueError(f"no padding of {n} bytes")


def _fits(remaining: int) -> bool:
    return remaining == 0 or (remaining >= 5 and remaining != 8)


def _deflate(data: bytes) -> bytes:
    c = isal_zlib.compressobj(LEVEL, isal_zlib.DEFLATED, -15)
    return c.compress(data) + c.flush(isal_zlib.Z_SYNC_FLUSH)


@dataclass
class Chunk:
    data: bytes          # exactly the chunk's size of raw deflate
    text_len: int        # uncompressed bytes
    crc: int             # CRC-32 of the uncompressed bytes
    line_ends: np.ndarray  # uncompressed offset after each document's line


def make_chunk(texts: Texts, f: DolmaFile, j: int, seed: int, ratio: float) -> Chunk:
    """Chunk ``j`` of ``f``: whole documents, deflated, padded to the chunk's size; a function of
    (seed, file name, j) alone. ``ratio``: the source's uncompressed bytes per compressed byte, to size
    the text (a chunk that comes out too long is made again with less)."""
    size = f.chunk_size(j)
    rng = np.random.default_rng([seed, zlib.crc32(f.name.encode()), j])
    mean = mean_doc_bytes(f.row)
    reserve = min(16384, size // 8)
    budget = int((size - reserve) * ratio * 0.97)
    lengths = doc_lengths(rng, mean, budget, cap=max(64, budget))
    lines = documents(texts, f, rng, lengths) if lengths else []
    while True:
        body = _deflate(b"".join(lines))
        if len(body) <= size - reserve // 2 or not lines:
            break
        lines = lines[:max(0, len(lines) - max(1, len(lines) // 10))]
    pieces, remaining = [body], size - len(body)
    # top the chunk up with short documents, each deflated alone so one that does not fit is dropped
    shrink = 0.8
    while remaining >= 600 and shrink > 0.05:
        want = int((remaining - 300) * ratio * shrink) - 200
        if want < 64:
            break
        line = documents(texts, f, rng, [int(min(want, max(64, rng.exponential(mean))))])[0]
        seg = _deflate(line)
        if len(seg) <= remaining and _fits(remaining - len(seg)):
            pieces.append(seg)
            lines.append(line)
            remaining -= len(seg)
        else:
            shrink /= 2
    if not _fits(remaining):  # only when nothing went in at all (a chunk too small for one document)
        raise ValueError(f"{f.name}: chunk {j} of {size} bytes cannot be filled; use a larger --scale")
    pieces.append(padding(remaining) if remaining else b"")
    data = b"".join(pieces)
    text = b"".join(lines)
    return Chunk(data, len(text), zlib.crc32(text), np.cumsum([len(x) for x in lines], dtype=np.int64))


# CRC-32 of a concatenation from the parts' CRCs (zlib's crc32_combine: multiplication modulo the
# CRC polynomial by x^(8 * length of the second part))
_POLY = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if a & (m - 1) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


_X2N = [1 << 30]
for _ in range(31):
    _X2N.append(_multmodp(_X2N[-1], _X2N[-1]))


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    p, k, n = 1 << 31, 3, len2
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return _multmodp(p, crc1) ^ crc2


# ---------------------------------------------------------------------------------------------------
# the simulated list: chunks generated on demand, a cache, the trailer, what a build kept

class Simulation:
    """The files of the list and what has been generated of them (thread-safe)."""

    def __init__(self, files: list[DolmaFile], texts: Texts, seed: int, cache_bytes: int):
        self.files = files
        self.by_path = {f.path: f for f in files}
        self.by_name = {f.name: f for f in files}
        self.texts, self.seed, self.cache_bytes = texts, seed, cache_bytes
        self.cache: OrderedDict[tuple[int, int], Chunk] = OrderedDict()
        self.cached = 0
        self.pending: dict[tuple[int, int], threading.Event] = {}
        # file -> chunk -> (crc, text_len, line ends), for every chunk ever generated
        self.known: dict[int, dict[int, tuple[int, int, np.ndarray]]] = {}
        self.ratios: dict[str, float] = {}
        self.lock = threading.Lock()
        self.prefetcher = ThreadPoolExecutor(2, thread_name_prefix="prefetch")
        self.generated = {"chunks": 0, "gzip_bytes": 0, "text_bytes": 0, "cpu_s": 0.0}

    def ratio(self, row: str) -> float:
        """Uncompressed bytes per compressed byte of ``row``'s documents, measured once on 1 MB of them."""
        with self.lock:
            if row in self.ratios:
                return self.ratios[row]
        f = next(x for x in self.files if x.row == row)
        rng = np.random.default_rng([self.seed, zlib.crc32(row.encode()), 2**31])
        lines = documents(self.texts, f, rng, doc_lengths(rng, mean_doc_bytes(row), 1 << 20, 1 << 20))
        data = b"".join(lines)
        with self.lock:
            self.ratios[row] = len(data) / len(_deflate(data))
            return self.ratios[row]

    def chunk(self, f: DolmaFile, j: int) -> Chunk:
        """Chunk ``j`` of ``f``, from the cache or generated (once, however many threads ask)."""
        key = (f.number, j)
        while True:
            with self.lock:
                if key in self.cache:
                    self.cache.move_to_end(key)
                    return self.cache[key]
                event = self.pending.get(key)
                if event is None:
                    event = self.pending[key] = threading.Event()
                    break
            event.wait()
        try:
            ratio = self.ratio(f.row)
            c0 = time.thread_time()
            chunk = make_chunk(self.texts, f, j, self.seed, ratio)
            cpu = time.thread_time() - c0
            with self.lock:
                self.known.setdefault(f.number, {})[j] = (chunk.crc, chunk.text_len, chunk.line_ends)
                self.cache[key] = chunk
                self.cached += len(chunk.data)
                while self.cached > self.cache_bytes and len(self.cache) > 1:
                    _, old = self.cache.popitem(last=False)
                    self.cached -= len(old.data)
                g = self.generated
                g["chunks"] += 1
                g["gzip_bytes"] += len(chunk.data)
                g["text_bytes"] += chunk.text_len
                g["cpu_s"] += cpu
            return chunk
        finally:
            with self.lock:
                del self.pending[key]
            event.set()

    def prefetch(self, f: DolmaFile, j: int) -> None:
        if 0 <= j < f.n_chunks:
            with self.lock:
                if (f.number, j) in self.cache or (f.number, j) in self.pending:
                    return
            self.prefetcher.submit(self.chunk, f, j)

    def chunk_facts(self, f: DolmaFile, j: int) -> tuple[int, int, np.ndarray]:
        with self.lock:
            facts = self.known.get(f.number, {}).get(j)
        if facts is None:
            self.chunk(f, j)
            with self.lock:
                facts = self.known[f.number][j]
        return facts

    def trailer(self, f: DolmaFile) -> bytes:
        """The gzip trailer: CRC-32 and length (mod 2**32) of the whole text, from the chunks' own."""
        crc, length = 0, 0
        for j in range(f.n_chunks):
            c, n, _ = self.chunk_facts(f, j)
            crc = crc32_combine(crc, c, n)
            length += n
        return struct.pack("<II", crc, length & 0xFFFFFFFF)

    def pieces(self, f: DolmaFile, start: int, end: int):
        """The bytes ``[start, end)`` of ``f``, in pieces (generating the chunks they fall in, the next
        one ahead of need)."""
        pos = start
        while pos < end:
            j = f.chunk_at(pos)
            if j < 0:
                data, base = GZIP_HEADER, 0
            elif j >= f.n_chunks:
                base = f.size - len(FINAL_BLOCK) - 8
                data = FINAL_BLOCK + self.trailer(f)
            else:
                if f.chunk_start(j) + f.chunk_size(j) < end:
                    self.prefetch(f, j + 1)
                data, base = self.chunk(f, j).data, f.chunk_start(j)
            piece = memoryview(data)[pos - base:min(end - base, len(data))]
            yield piece
            pos += len(piece)

    def kept_offset(self, f: DolmaFile, records: int) -> int:
        """The compressed offset where the first ``records`` documents of ``f`` end (within a chunk, in
        proportion to the text before it)."""
        seen = 0
        for j in range(f.n_chunks):
            _, text_len, ends = self.chunk_facts(f, j)
            if seen + len(ends) >= records:
                k = records - seen
                inside = int(ends[k - 1]) / text_len if k else 0.0
                return f.chunk_start(j) + round(f.chunk_size(j) * inside)
            seen += len(ends)
        return f.size


# ---------------------------------------------------------------------------------------------------
# the server

@dataclass
class Faults:
    """What goes wrong, decided by a seeded generator (so two runs see the same sequence)."""
    fail_rate: float = 0.0     # share of requests answered 503
    retry_after: int = 1       # seconds, in the 503's Retry-After
    outage: tuple[float, float] | None = None  # (seconds refused, every so many seconds)
    reset_rate: float = 0.0    # share of bodies cut by a connection reset
    started: float = field(default_factory=time.time)
    rng: random.Random = field(default_factory=lambda: random.Random(0))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def refuse(self) -> bool:
        if self.outage is not None:
            down, every = self.outage
            if (time.time() - self.started) % every >= every - down:
                return True
        with self.lock:
            return self.rng.random() < self.fail_rate

    def cut_at(self, length: int) -> int | None:
        """Where to reset this body (bytes into it), or None."""
        with self.lock:
            if length and self.rng.random() < self.reset_rate:
                return self.rng.randrange(length)
        return None


class Link:
    """One shared link of ``rate`` bytes/s for every connection (None: unlimited)."""

    def __init__(self, rate: float | None):
        self.rate, self.free_at, self.lock = rate, time.monotonic(), threading.Lock()

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self.lock:
            now = time.monotonic()
            self.free_at = max(self.free_at, now) + n / self.rate
            wait = self.free_at - now
        time.sleep(wait)


class ListServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512   # 64 HEADs in flight are not refused by the backlog

    def __init__(self, port: int, sim: Simulation, ranges: bool, faults: Faults, link: Link):
        super().__init__(("127.0.0.1", port), Handler)
        self.sim, self.ranges, self.faults, self.link = sim, ranges, faults, link
        self.requests: list[dict] = []
        self.lock = threading.Lock()

    def record(self, rec: dict) -> None:
        with self.lock:
            self.requests.append(rec)

    def stats(self) -> dict:
        with self.lock:
            requests = list(self.requests)
        files: dict[str, dict] = {}
        for r in requests:
            if r["file"] is not None:
                x = files.setdefault(r["file"], {"sent": 0, "requests": 0, "size": self.sim.by_name[r["file"]].size})
                x["sent"] += r["sent"]
                x["requests"] += 1
        with self.sim.lock:
            generated = dict(self.sim.generated)
        return {"sent": sum(r["sent"] for r in requests), "requests": requests, "files": files,
                "generated": generated, "cpu_s": time.process_time(), "ranges": self.ranges}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ListServer
    PIECE = 1 << 16   # bytes per socket write: the counts are exact to what the kernel accepted

    def log_message(self, *args) -> None:
        pass

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the connection was reset on purpose

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/_stats":
            return self._json(self.server.stats())
        if url.path == "/_kept":
            q = urllib.parse.parse_qs(url.query)
            f = self.server.sim.by_name[q["file"][0]]
            return self._json({"offset": self.server.sim.kept_offset(f, int(q["records"][0])), "size": f.size})
        if url.path == "/_shutdown":
            self._json({"ok": True})
            threading.Thread(target=self.server.shutdown, daemon=True).start()
            return None
        self._serve(body=True)

    def _json(self, obj) -> None:
        data = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self, body: bool) -> None:
        srv = self.server
        f = srv.sim.by_path.get(urllib.parse.urlsplit(self.path).path)
        rec = {"file": f.name if f else None, "method": self.command, "range": self.headers.get("Range"),
               "status": 0, "length": 0, "sent": 0, "end": "complete", "t0": time.time(), "t1": 0.0}
        try:
            self._respond(f, body, rec)
        except (BrokenPipeError, ConnectionResetError):
            rec["end"] = "client closed"
            self.close_connection = True
        finally:
            rec["t1"] = time.time()
            srv.record(rec)

    def _respond(self, f: DolmaFile | None, body: bool, rec: dict) -> None:
        srv = self.server
        if srv.faults.refuse():
            rec["status"] = 503
            self.send_response(503)
            self.send_header("Retry-After", str(srv.faults.retry_after))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if f is None:
            rec["status"] = 404
            self.send_error(404)
            return
        start, end, status = 0, f.size, 200
        asked = self.headers.get("Range") if srv.ranges else None
        if asked:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", asked.strip())
            if not m or not (m.group(1) or m.group(2)):
                rec["status"] = 416
                self.send_error(416)
                return
            if m.group(1):
                start, end = int(m.group(1)), min(f.size, int(m.group(2)) + 1 if m.group(2) else f.size)
            else:  # bytes=-N: the last N bytes
                start, end = max(0, f.size - int(m.group(2))), f.size
            if start >= f.size or start >= end:
                rec["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{f.size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        rec["status"], rec["length"] = status, end - start
        self.send_response(status)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(end - start))
        self.send_header("Last-Modified", "Mon, 15 Apr 2024 00:00:00 GMT")
        if srv.ranges:
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{zlib.crc32(f"{f.name}:{f.size}:{srv.sim.seed}".encode()):08x}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{f.size}")
        self.end_headers()
        if not body:
            return
        cut = srv.faults.cut_at(end - start)
        limit = end - start if cut is None else cut
        for piece in srv.sim.pieces(f, start, end):
            for k in range(0, len(piece), self.PIECE):
                part = piece[k:k + self.PIECE]
                if rec["sent"] + len(part) > limit:
                    part = part[:limit - rec["sent"]]
                srv.link.take(len(part))
                self.wfile.write(part)
                rec["sent"] += len(part)
                if rec["sent"] >= limit and cut is not None:
                    self._reset()
                    rec["end"] = "reset"
                    return

    def _reset(self) -> None:
        """Close the connection with a TCP reset, as a proxy or a dropped link does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


def start_server(args) -> ListServer:
    files = dolma_list(args.scale, args.urls, args.chunk_kb << 10)
    texts = Texts(Lexicon(), args.style_kb << 10, Path(args.text_cache) if args.text_cache else None)
    sim = Simulation(files, texts, args.seed, args.cache_mb << 20)
    outage = None
    if args.outage:
        down, _, every = args.outage.partition("/")
        outage = (float(down), float(every))
    faults = Faults(fail_rate=args.fail_rate, retry_after=args.retry_after, outage=outage, reset_rate=args.reset_rate)
    link = Link(args.link_mbit * 1e6 / 8 if args.link_mbit else None)
    return ListServer(args.port, sim, args.mode == "range", faults, link)


def serve(args) -> None:
    """``--serve``: serve the list until stopped (SIGTERM, Ctrl-C or GET /_shutdown)."""
    server = start_server(args)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls = "".join(base + f.path + "\n" for f in server.sim.files)
    if args.list:
        Path(args.list).write_text(urls)
    total = sum(f.size for f in server.sim.files)
    ready = {"port": server.server_address[1], "base": base, "files": len(server.sim.files), "bytes": total,
             "list": args.list}
    if args.ready:
        tmp = Path(args.ready).with_suffix(".tmp")
        tmp.write_text(json.dumps(ready))
        os.replace(tmp, args.ready)
    print(f"serving {len(server.sim.files):,} files ({total / 1e9:,.1f} GB of gzip) at {base}/dolma-v1_7/ "
          f"({args.mode}){'; the list is in ' + args.list if args.list else ''}", flush=True)
    signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


# ---------------------------------------------------------------------------------------------------
# the runner: the flagship command against the server, watched through /proc

MODES = ("range", "norange", "flaky", "slow")
FLAGSHIP_TOKENS = 5e9
FLAGSHIP_CORES = 16
FLAGSHIP_LINK = 125e6          # bytes/s: 1 Gbit/s
FLAGSHIP_RTT = 0.1             # s, for the HEAD requests of the plan (64 in flight)
TICK = os.sysconf("SC_CLK_TCK")

# what the build says as it goes (stderr notes) and at the end (stdout summary)
MARKS = {
    "sized": re.compile(r"sized ([\d,]+) URLs with HEAD requests in ([\d.]+) s"),
    "train_start": re.compile(r"training a [\d,]+-token"),
    "trained": re.compile(r"tokenizer trained in ([\d.]+) s"),
    "measured": re.compile(r"measured (\d+) sources in ([\d.]+) s"),
    "encoding": re.compile(r"encoding: ([\d,]+) tokens in ([\d.,]+) s"),
}


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            out.setdefault(ppid, []).append(int(name))
    return out


def _tree(pid: int) -> list[int]:
    children, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _proc(pid: int) -> tuple[int, float] | None:
    """(PSS bytes, CPU seconds) of a process, or None when it is gone. PSS counts a page shared by n
    processes as 1/n of it in each: the workers are forked from the main process after the tokenizer
    was trained, and their RSS would count its pages once per worker."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        pss = int(re.search(r"^Pss:\s+(\d+) kB", Path(f"/proc/{pid}/smaps_rollup").read_text(), re.M).group(1)) * 1024
    except (OSError, AttributeError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return pss, (int(fields[11]) + int(fields[12])) / TICK


def _hwm(pid: int) -> int:
    """A process's own peak RSS so far (VmHWM), bytes."""
    try:
        return int(re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text()).group(1)) * 1024
    except (OSError, AttributeError):
        return 0


class Watch(threading.Thread):
    """Samples a build's processes every ``interval`` seconds: the sum of their PSS (its peak is the
    build's peak memory, to within a sample), each one's CPU time, the main process's VmHWM and the
    largest VmHWM of any of them (until the tokenizer is trained: the child process that trains it)."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_rss, self.cpu, self.main_hwm, self.tree_hwm = 0, {}, 0, 0
        self.stopped = threading.Event()
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        total, most = 0, 0
        for pid in _tree(self.pid):
            got = _proc(pid)
            if got is None:
                continue
            total += got[0]
            most = max(most, _hwm(pid))
            with self.lock:
                self.cpu[pid] = got[1]
        hwm = _hwm(self.pid)
        with self.lock:
            self.peak_rss = max(self.peak_rss, total)
            self.main_hwm = max(self.main_hwm, hwm)
            self.tree_hwm = max(self.tree_hwm, most, hwm)

    def main_cpu(self) -> float:
        with self.lock:
            return self.cpu.get(self.pid, 0.0)

    def others_cpu(self) -> float:
        """CPU time of the main process's children so far (the last sample of each, gone or not)."""
        with self.lock:
            return sum(t for pid, t in self.cpu.items() if pid != self.pid)


@dataclass
class Run:
    """One build against one server mode, and what was measured of it."""
    mode: str
    out: Path
    rc: int = -1
    error: str = ""
    started: float = 0.0
    marks: dict = field(default_factory=dict)          # mark -> (wall time it was printed, match groups)
    main_hwm_trained: int = 0                           # the largest VmHWM of the build's processes (the main
                                                        # one, the child that trains) when the tokenizer was trained
    main_cpu_measured: float = 0.0                      # main process's CPU time when the measurement ended
    others_cpu_measured: float = 0.0                    # its children's then (the child that trained the tokenizer)
    main_cpu_end: float = 0.0
    peak_rss: int = 0
    max_process_rss: int = 0
    cpu_total: float = 0.0
    wall: float = 0.0
    stats: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)            # file name -> (kept bytes, whole?)
    check: str = ""


def _server_command(mode: str, args, out: Path) -> list[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve",
           "--mode", "norange" if mode == "norange" else "range", "--scale", repr(args.scale),
           "--chunk-kb", str(args.chunk_kb), "--cache-mb", str(args.cache_mb),
           "--style-kb", str(args.style_kb), "--seed", str(args.seed), "--text-cache", str(args.out_dir / "styles"),
           "--list", str(out / "urls.txt"), "--ready", str(out / "server.json")]
    if args.urls is not None:
        cmd += ["--urls", str(args.urls)]
    if mode == "flaky":
        cmd += ["--fail-rate", repr(args.fail_rate), "--retry-after", str(args.retry_after),
                "--reset-rate", repr(args.reset_rate)] + (["--outage", args.outage] if args.outage else [])
    if mode == "slow":
        cmd += ["--link-mbit", repr(args.link_mbit)]
    return cmd


def _get(base: str, path: str, timeout: float = 600) -> dict:
    with urllib.request.urlopen(base + path, timeout=timeout) as r:
        return json.loads(r.read())


def rehearse(mode: str, args) -> Run:
    out = args.out_dir / mode
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    run = Run(mode, out)
    server = subprocess.Popen(_server_command(mode, args, out), stdout=subprocess.DEVNULL,
                              stderr=open(out / "server.log", "w"))
    try:
        deadline = time.time() + 300
        while not (out / "server.json").exists():
            if server.poll() is not None or time.time() > deadline:
                raise SystemExit(f"the server for mode {mode} did not start; see {out / 'server.log'}")
            time.sleep(0.1)
        base = json.loads((out / "server.json").read_text())["base"]
        _build(run, args, out)
        run.stats = _get(base, "/_stats")
        _read_outputs(run, base)
        run.check = _check_counts(base, run)
    finally:
        try:
            _get(base, "/_shutdown", timeout=10)
        except (OSError, UnboundLocalError):
            server.terminate()
        server.wait(60)
    return run


def _build(run: Run, args, out: Path) -> None:
    cmd = [sys.executable, "-m", "preprocess", "--input-list", str(out / "urls.txt"),
           "--max-tokens", str(args.max_tokens), "--out", str(out / "data"), *args.build_args]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    log = open(out / "build.log", "w")
    log.write(" ".join(cmd) + "\n")
    run.started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watch = Watch(proc.pid)
    watch.start()
    lines: list[str] = []

    def read(stream, name):
        for line in stream:
            now = time.time()
            log.write(f"{now - run.started:8.2f} {name} {line}")
            log.flush()
            lines.append(line)
            for mark, rx in MARKS.items():
                m = rx.search(line)
                if m and mark not in run.marks:
                    run.marks[mark] = (now, m.groups())
                    if mark == "trained":
                        run.main_hwm_trained = max(_hwm(proc.pid), watch.tree_hwm)
                    if mark == "measured":
                        watch.sample()
                        run.main_cpu_measured = watch.main_cpu()
                        run.others_cpu_measured = watch.others_cpu()
    readers = [threading.Thread(target=read, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=read, args=(proc.stderr, "err"), daemon=True)]
    for t in readers:
        t.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    run.wall = time.time() - run.started
    watch.stopped.set()
    watch.join()
    for t in readers:
        t.join()
    log.close()
    run.rc = proc.returncode
    run.peak_rss, run.main_cpu_end = watch.peak_rss, watch.main_cpu()
    run.main_hwm_trained = run.main_hwm_trained or watch.main_hwm
    run.max_process_rss = usage.ru_maxrss * 1024
    run.cpu_total = usage.ru_utime + usage.ru_stime
    if run.rc != 0:
        errors = [x.strip() for x in lines if "error" in x.lower() or "cannot" in x.lower()]
        run.error = (errors[-1] if errors else lines[-1].strip() if lines else f"exit {run.rc}")[:160]


def _read_outputs(run: Run, base: str) -> None:
    data = run.out / "data"
    for name, attr in (("manifest.json", "manifest"), ("plan.json", "plan")):
        if (data / name).exists():
            setattr(run, attr, json.loads((data / name).read_text()))
    for x in run.manifest.get("inputs", []):
        name = x["path"].rsplit("/", 1)[-1]
        if not x.get("documents"):
            continue
        whole = x.get("status") == "ok"
        records = x.get("records", x["documents"])
        offset = x["size"] if whole else _get(base, f"/_kept?file={name}&records={records}")["offset"]
        run.kept[name] = (offset, whole)


def _check_counts(base: str, run: Run) -> str:
    """The server's counts against themselves and against what a client receives: the runner fetches a
    range and a whole file, and compares the bytes it got with the server's count of those requests."""
    s = run.stats
    problems = []
    per_file = sum(x["sent"] for x in s["files"].values())
    if per_file != s["sent"]:
        problems.append(f"per-file sum {per_file:,} != total {s['sent']:,}")
    short = [r for r in s["requests"] if r["end"] == "complete" and r["method"] == "GET" and r["sent"] != r["length"]]
    if short:
        problems.append(f"{len(short)} complete responses carried fewer bytes than promised")
    urls = (run.out / "urls.txt").read_text().split()
    url = urls[len(urls) // 2]
    received = []
    for headers in ({"Range": "bytes=100-4999"}, {}):
        for _ in range(20):  # a flaky server may refuse or cut a few tries
            try:
                with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r:
                    received.append(len(r.read()))
                break
            except (OSError, http.client.HTTPException):
                time.sleep(0.2)
    for _ in range(100):  # a handler records its request just after the client has read the last byte
        checks = [r for r in _get(base, "/_stats")["requests"][len(s["requests"]):]
                  if r["end"] == "complete" and r["status"] in (200, 206)]
        if len(checks) >= len(received):
            break
        time.sleep(0.05)
    if received != [r["sent"] for r in checks]:
        problems.append(f"the runner received {received} bytes, the server counted {[r['sent'] for r in checks]}")
    return "ok" if not problems else "; ".join(problems)


# ---------------------------------------------------------------------------------------------------
# the table

def _gb(n: float | None) -> str:
    if n is None:
        return "?"
    return f"{n / 1e9:,.2f} GB" if abs(n) >= 1e8 else f"{n / 1e6:,.1f} MB"


def _mark_time(run: Run, mark: str) -> float | None:
    return run.marks[mark][0] if mark in run.marks else None


def phase_bytes(run: Run, per_file: bool = False) -> dict[str, int]:
    """Body bytes the server sent in each phase of the build, by when each request began: the tokenizer
    sample (until the tokenizer was trained), the measurement of tokens per byte, the main pass; with
    ``per_file``, the main pass's bytes of each file."""
    trained, measured = _mark_time(run, "trained") or 0.0, _mark_time(run, "measured") or 0.0
    out = {"sample": 0, "measure": 0, "main": 0}
    files: dict[str, int] = {}
    for r in run.stats.get("requests", []):
        if r["method"] != "GET" or r["file"] is None:
            continue
        phase = "sample" if r["t0"] < trained else "measure" if r["t0"] < measured else "main"
        out[phase] += r["sent"]
        if phase == "main":
            files[r["file"]] = files.get(r["file"], 0) + r["sent"]
    return files if per_file else out


def client_count(manifest: dict) -> int | None:
    """Bytes the build says it downloaded, when its manifest records them (a field of each input whose
    name speaks of downloaded or fetched bytes); None when it does not."""
    total, found = 0, False
    for x in manifest.get("inputs", []):
        for key, value in x.items():
            if isinstance(value, int) and "bytes" in key and ("download" in key or "fetched" in key):
                total += value
                found = True
    return total if found else None


def worker_cpu_of(run: Run) -> float:
    """CPU time of the main pass's workers: every child's, less those that ended before the main pass
    (the tokenizer is trained in a child process)."""
    return max(run.cpu_total - run.main_cpu_end - run.others_cpu_measured, 1e-9)


def projection(run: Run, args) -> dict | None:
    """The whole 5B-token build on FLAGSHIP_CORES cores and a FLAGSHIP_LINK link (see the module docstring)."""
    enc = run.marks.get("encoding")
    if run.rc != 0 or enc is None or not run.kept:
        return None
    tokens = int(enc[1][0].replace(",", ""))
    kept_bytes = sum(k for k, _ in run.kept.values())
    main = phase_bytes(run, per_file=True)
    beyond = remainder = 0
    for name, x in run.stats["files"].items():
        kept, whole = run.kept.get(name, (0, False))
        if kept and not whole:  # a cut file: what the main pass fetched beyond its kept part
            # (from a server that ignores Range the whole file came at its first request, the sample's:
            # by design the rest of a file opened there is always fetched)
            fetched = x["sent"] if run.mode == "norange" else main.get(name, 0)
            beyond += min(max(0, fetched - kept), x["size"] - kept)
            remainder += x["size"] - kept
    fixed = run.stats["sent"] - kept_bytes - beyond
    d = beyond / remainder if remainder else 0.0
    overall_tpb = sum(t["tokens"] for t in run.manifest["totals"].values()) / kept_bytes
    tpb = {s["name"]: s.get("tokens_per_byte") or overall_tpb for s in run.plan.get("sources", [])}
    full: dict[str, list[int]] = {}
    for f in dolma_list(1.0, None, args.chunk_kb << 10):
        full.setdefault(f.group, []).append(f.size)
    est = sum(sum(sizes) * tpb.get(group, overall_tpb) for group, sizes in full.items())
    kept_5b = remainder_5b = 0.0
    for sizes in full.values():
        need = FLAGSHIP_TOKENS * sum(sizes) / est   # bytes of gzip: the source's quota at its tokens per byte
        kept_5b += need
        cum = 0
        for size in sizes:
            cum += size
            if cum >= need:
                remainder_5b += cum - need
                break
    phases = phase_bytes(run)
    download = kept_5b + fixed + d * remainder_5b
    main_download = download - phases["sample"] - phases["measure"]
    # what the main pass reads, spooled or fetched (from a server that ignores Range the rest of each cut
    # file is fetched whole but only spooled: the main pass reads the kept part)
    main_read = kept_5b + (0.0 if run.mode == "norange" else d * remainder_5b)
    main_cpu = run.main_cpu_end - run.main_cpu_measured          # reads, decompresses, writes: per byte read
    read_here = (run.manifest.get("download") or {}).get("read_bytes") or phases["main"]
    worker_cpu = worker_cpu_of(run)                              # parse and encode: per token
    t_plan = (_mark_time(run, "train_start") or _mark_time(run, "sized") or run.started) - run.started
    t_plan += sum(len(sizes) for sizes in full.values()) / 64 * FLAGSHIP_RTT  # HEADs 64 at a time
    t_train = float(run.marks["trained"][1][0]) if "trained" in run.marks else 0.0
    t_measure = float(run.marks["measured"][1][1]) if "measured" in run.marks else 0.0
    t_main = max(FLAGSHIP_TOKENS * worker_cpu / tokens / (FLAGSHIP_CORES - 1),
                 main_read * main_cpu / max(read_here, 1), main_download / FLAGSHIP_LINK)
    return {"download": download, "kept": kept_5b, "fixed": fixed, "d": d, "remainder": remainder_5b,
            "wall": t_plan + t_train + t_measure + t_main, "t_main": t_main, "t_train": t_train}


def rows(run: Run, args) -> list[tuple[str, str]]:
    s, out = run.stats, []
    build = "ok" if run.rc == 0 else f"FAILED (exit {run.rc}): {run.error}"
    out.append(("build", build))
    sized = run.marks.get("sized")
    plan_end = _mark_time(run, "train_start") or _mark_time(run, "sized")
    out.append(("planning (start to plan)", "?" if plan_end is None else
                f"{plan_end - run.started:.1f} s" + (f" (HEAD: {sized[1][1]} s)" if sized else "")))
    phases = phase_bytes(run)
    out.append(("sent: tokenizer sample", _gb(phases["sample"])))
    out.append(("sent: measurement", _gb(phases["measure"])))
    out.append(("sent: main pass", _gb(phases["main"])))
    kept = sum(k for k, _ in run.kept.values())
    ratio = f" = {s['sent'] / kept:.2f}x" if kept else ""
    out.append(("sent / kept (gzip)", f"{_gb(s['sent'])} / {_gb(kept)}{ratio}"))
    files = s.get("files", {})
    if files:
        name, x = max(files.items(), key=lambda kv: kv[1]["sent"] / kv[1]["size"])
        fetched = sum(1 for y in files.values() if y["sent"])  # the others were only sized (HEAD)
        out.append(("files fetched; most of one", f"{fetched}; {x['sent'] / x['size']:.2f}x of {name}"))
    mine = client_count(run.manifest)
    if mine is not None:
        out.append(("the build's own count", _gb(mine)))
    out.append(("byte counts check", run.check))
    if "trained" in run.marks:
        out.append(("tokenizer: training", f"{float(run.marks['trained'][1][0]):,.1f} s"))
        out.append(("tokenizer: peak RSS", _gb(run.main_hwm_trained)))
    enc = run.marks.get("encoding")
    if enc:
        tokens, secs = int(enc[1][0].replace(",", "")), float(enc[1][1].replace(",", ""))
        worker_cpu = worker_cpu_of(run)
        out.append(("encoding: tokens", f"{tokens:,} in {secs:,.1f} s"))
        main_cpu = run.main_cpu_end - run.main_cpu_measured
        out.append(("encoding: M tokens/s", f"{tokens / secs / 1e6:.2f} wall, {tokens / worker_cpu / 1e6:.2f} per "
                                            f"worker CPU-s (main process: {main_cpu:,.0f} CPU-s)"))
    out.append(("peak memory, all processes", f"{_gb(run.peak_rss)} PSS (largest RSS: {_gb(run.max_process_rss)})"))
    g = s.get("generated", {})
    if g.get("cpu_s"):
        out.append(("server: generated", f"{_gb(g['gzip_bytes'])} gzip, {g['gzip_bytes'] / g['cpu_s'] / 1e6:.1f} MB/s "
                                          f"per core ({g['text_bytes'] / g['cpu_s'] / 1e6:.0f} MB/s of text)"))
    refused = sum(1 for r in s.get("requests", []) if r["status"] == 503)
    resets = sum(1 for r in s.get("requests", []) if r["end"] == "reset")
    out.append(("server: requests, 503s, resets", f"{len(s.get('requests', [])):,}, {refused}, {resets}"))
    out.append(("build wall time", f"{run.wall:,.1f} s"))
    p = projection(run, args)
    if p:
        out.append(("5B build: download (kept)", f"{_gb(p['download'])} ({_gb(p['kept'])})"))
        out.append(("5B build: wall, 16 cores, 1 Gbit/s",
                    f"{p['wall'] / 3600:.2f} h (main pass {p['t_main'] / 3600:.2f} h)"))
    return out


def print_table(runs: list[Run], args) -> None:
    table = [rows(r, args) for r in runs]
    labels = [label for label, _ in max(table, key=len)]
    cells = [dict(t) for t in table]
    width = max(len(x) for x in labels)
    cols = [max([len(r.mode)] + [len(c.get(label, "")) for label in labels]) for r, c in zip(runs, cells, strict=True)]
    print(f"\n{'':<{width}}  " + "  ".join(f"{r.mode:<{w}}" for r, w in zip(runs, cols, strict=True)))
    for label in labels:
        print(f"{label:<{width}}  " + "  ".join(f"{c.get(label, '-'):<{w}}" for c, w in zip(cells, cols, strict=True)))
    files = dolma_list(args.scale, args.urls, args.chunk_kb << 10)
    print(f"\nlist: {len(files):,} files, {sum(f.size for f in files) / 1e9:,.1f} GB of gzip "
          f"(--scale {args.scale:g} of v1.7's 4.5 TB); --max-tokens {args.max_tokens:,}; "
          f"build options: {' '.join(args.build_args) or 'defaults'}")
    for r in runs:
        p = projection(r, args)
        if p:
            print(f"{r.mode}: 5B download = kept {_gb(p['kept'])} + fixed {_gb(p['fixed'])} (sample, measurement, "
                  f"re-reads) + {p['d']:.2f} x {_gb(p['remainder'])} (the cut files' unkept remainders)")


# ---------------------------------------------------------------------------------------------------

def main(argv=None) -> None:
    from preprocess.options import parse_count

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    run = p.add_argument_group("the rehearsal")
    run.add_argument("--modes", default="range,norange",
                     help=f"server modes to build against, comma-separated, of {', '.join(MODES)} "
                          f"(default range,norange)")
    run.add_argument("--max-tokens", type=parse_count, default=parse_count("200M"),
                     help="the build's --max-tokens (default 200M: about a minute of encoding on 2 cores, after "
                          "5-9 minutes of tokenizer training on the default sample; 1B: about five minutes)")
    run.add_argument("--out", dest="out_dir", type=Path, default=Path("/tmp/bench_dolma"),
                     help="working directory: one folder per mode (replaced) with the build, its log and the list")
    run.add_argument("--tokenizer-sample-bytes", help="passed to the build (default: the build's own default)")
    run.add_argument("--vocab-size", help="passed to the build (default: the build's own default)")
    run.add_argument("--workers", help="passed to the build (default: the build's own default)")
    lst = p.add_argument_group("the list")
    lst.add_argument("--scale", type=float, default=1.0,
                     help="every file's size times this (default 1: 1-2 GB files, 8-13 minutes a build on 2 cores "
                          "with Range; a build that fetches its cut files whole, from a server that ignores Range "
                          "or with --verify-cut-files, fetches 42 GB of them at full size: 0.0625 keeps it to "
                          "about 11 minutes)")
    lst.add_argument("--urls", type=int, help="about this many files, each group's share (default: all 2,419)")
    lst.add_argument("--seed", type=int, default=0, help="the documents' seed (default 0)")
    lst.add_argument("--chunk-kb", type=int, default=1024, help="compressed size of a chunk (default 1024)")
    lst.add_argument("--cache-mb", type=int, default=512, help="memory for chunks generated lately (default 512)")
    lst.add_argument("--style-kb", type=int, default=2048, help="each style's text buffer (default 2048)")
    lst.add_argument("--text-cache", help="folder to keep the style buffers in (the runner uses OUT/styles)")
    srv = p.add_argument_group("the server")
    srv.add_argument("--serve", action="store_true", help="only serve the list (until Ctrl-C or GET /_shutdown)")
    srv.add_argument("--mode", choices=("range", "norange"), default="range", help="with --serve (default range)")
    srv.add_argument("--port", type=int, default=0, help="with --serve (default: any free port)")
    srv.add_argument("--list", help="with --serve: write the URL list here")
    srv.add_argument("--ready", help="with --serve: write the port and list here once serving (JSON)")
    srv.add_argument("--fail-rate", type=float, default=0.0,
                     help="share of requests answered 503 (default 0; the flaky mode uses 0.02 unless given)")
    srv.add_argument("--retry-after", type=int, default=1, help="the 503s' Retry-After, seconds (default 1)")
    srv.add_argument("--outage", help="D/E: refuse every request for D seconds every E seconds")
    srv.add_argument("--reset-rate", type=float, default=0.0,
                     help="share of bodies cut by a connection reset (default 0; the flaky mode uses 0.005 "
                          "unless given)")
    srv.add_argument("--link-mbit", type=float, default=0.0,
                     help="one shared link of this many Mbit/s (default unlimited; the slow mode uses 125 "
                          "unless given)")
    args = p.parse_args(argv)
    if args.serve:
        serve(args)
        return
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown or not modes:
        p.error(f"--modes: {', '.join(unknown) or 'none given'}; choose from {', '.join(MODES)}")
    args.fail_rate = args.fail_rate or 0.02
    args.reset_rate = args.reset_rate or 0.005
    args.link_mbit = args.link_mbit or 1000 * 2 / FLAGSHIP_CORES
    args.build_args = [x for opt in ("tokenizer_sample_bytes", "vocab_size", "workers") if getattr(args, opt)
                       for x in ("--" + opt.replace("_", "-"), getattr(args, opt))]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for mode in modes:
        print(f"{mode}: serving the list and building {args.max_tokens:,} tokens ...", flush=True)
        runs.append(rehearse(mode, args))
    print_table(runs, args)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
