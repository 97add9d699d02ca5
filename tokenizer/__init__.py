"""The tokenizer: a byte-level BPE trained and saved with HF ``tokenizers``, encoded fast where exact.

HF ``tokenizers`` is the reference: it trains the vocabulary and ``tokenizer.json`` is its file
format (``transformers.PreTrainedTokenizerFast(tokenizer_file=...)`` loads it as is). For encoding a
corpus, :func:`make_encoder` builds a ``tiktoken`` engine from the same merges (rank = token id, the
same GPT-2 split pattern). It is several times faster and gives the same ids for a BPE vocabulary
trained here; every build checks that on a sample first and falls back to HF, saying why, otherwise.

Documents are encoded as plain text: a literal ``<|endoftext|>`` inside a document becomes ordinary
tokens, so the separator id only ever appears where the shard writer puts it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from functools import cached_property, lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

EOT_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 32000
# The GPT-2 pre-tokenization pattern: what HF's ByteLevel(use_regex=True) splits on.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_SURROGATE = re.compile("[\ud800-\udfff]")

# Text the encoder equivalence check always includes, whatever the corpus: the cases where two BPE
# implementations are most likely to part ways.
EQUIVALENCE_PROBES = (
    "Hello, world! It's a test: don't, won't, I'll, we've, they're, she'd, I'm.",
    "  leading spaces\n\n\ttabs\r\nwindows line\u00a0nbsp   trailing   ",
    "emoji 😀👍🏽👨‍👩‍👧 flags 🇯🇵 CJK 日本語の文章 中文 한국어 عربى עברית हिन्दी",
    "combining e\u0301 a\u0308 \u0041\u030a zero\u200bwidth \ufeffbom control \x00\x01\x1b[0m\x7f",
    "numbers 1234567890 3.14159 1e-10 0xDEADBEEF 1,000,000",
    "code: def f(x):\n    return x ** 2  # comment\n\tif (a && b) { c->d[0] = '\\n'; }",
    "<|endoftext|> inside a document stays text <|endoftext|>",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "".join(chr(c) for c in range(32, 127)) + "".join(chr(c) for c in range(160, 400)),
)


class TokenizerError(Exception):
    """A tokenizer problem the user can act on; the message says what to do."""


# ---------------------------------------------------------------------------------------------------
# training, saving, loading

def new_bpe_tokenizer() -> Tokenizer:
    """An untrained byte-level BPE: no normalizer, GPT-2 split, byte-level decoding, so that
    ``decode(encode(s)) == s`` for every valid Unicode string."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def train_bpe(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE, min_frequency: int = 2,
              show_progress: bool = False, length: int | None = None) -> Tokenizer:
    """Train a byte-level BPE on ``texts``. ``<|endoftext|>`` gets id 0; all 256 bytes are in the vocabulary."""
    if vocab_size < 256 + 1:
        raise TokenizerError(f"--vocab-size {vocab_size} is too small: a byte-level BPE needs at least 257 "
                             f"tokens (256 bytes and the separator)")
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=show_progress)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return tok


def save(tok: Tokenizer, path: str | os.PathLike) -> str:
    """Save ``tok`` as ``tokenizer.json`` atomically; returns its fingerprint."""
    path = Path(path)
    text = tok.to_str(pretty=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return fingerprint_text(text)


def load(path: str | os.PathLike) -> Tokenizer:
    return read(path).tok


class TokenizerFile:
    """A tokenizer.json read once: the tokenizer, its parsed JSON and (computed when first asked for)
    its fingerprint."""

    def __init__(self, tok: Tokenizer, spec: dict):
        self.tok = tok
        self.spec = spec

    @cached_property
    def sha256(self) -> str:
        return _canonical_sha256(self.spec)


def read(path: str | os.PathLike) -> TokenizerFile:
    """Load ``path``, parsing its text once for the tokenizer and its JSON (a build needs both)."""
    path = Path(path)
    if not path.exists():
        raise TokenizerError(f"tokenizer file {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
        spec = json.loads(text)
        tok = Tokenizer.from_str(text)
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
        raise TokenizerError(f"{path} is not a tokenizer.json that HF tokenizers can load: {e}") from None
    eot_id(tok, source=path)
    return TokenizerFile(tok, spec)


def eot_id(tok: Tokenizer, source: str | os.PathLike = "tokenizer") -> int:
    i = tok.token_to_id(EOT_TOKEN)
    if i is None:
        raise TokenizerError(f"{source} has no {EOT_TOKEN} token; the shards need it as the document "
                             f"separator. Train a tokenizer here (omit --tokenizer) or add the token")
    return i


def fingerprint_text(text: str) -> str:
    """sha256 of the canonical form of a tokenizer.json (keys sorted, no whitespace), so formatting
    differences do not change it but any change of vocabulary, merges or settings does."""
    return _canonical_sha256(json.loads(text))


def _canonical_sha256(spec: dict) -> str:
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def fingerprint(path: str | os.PathLike) -> str:
    return fingerprint_text(Path(path).read_text(encoding="utf-8"))


def repair_surrogates(text: str) -> tuple[str, int]:
    """Replace lone UTF-16 surrogates (JSON's ``"\\ud800"`` yields them) with U+FFFD; returns the count.

    Such a string cannot be encoded as UTF-8, so neither tokenizer engine can take it as is.
    """
    if not _SURROGATE.search(text):
        return text, 0
    repaired, n = _SURROGATE.subn("\ufffd", text)
    return repaired, n


# ---------------------------------------------------------------------------------------------------
# encoding engines

@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's bytes_to_unicode: the printable character standing for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def _tiktoken_incompatibility(spec: dict) -> str | None:
    """Why a tiktoken engine cannot reproduce the tokenizer ``spec`` (its parsed JSON), or None."""
    model = spec.get("model") or {}
    if model.get("type") != "BPE":
        return f"model is {model.get('type')}, not BPE"
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            return f"BPE option {key}={model[key]!r} is set"
    if spec.get("normalizer"):
        return "the tokenizer has a normalizer"
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") != "ByteLevel" or pre.get("add_prefix_space") or not pre.get("use_regex", True):
        return "pre-tokenizer is not ByteLevel(add_prefix_space=False, use_regex=True)"
    added = spec.get("added_tokens", [])
    plain = [t["content"] for t in added if not t.get("special")]
    if plain:  # HF matches these inside text even when it encodes special tokens as text
        return f"the tokenizer has added tokens that are not special, e.g. {plain[0]!r}"
    vocab = model.get("vocab") or {}
    decoder = _byte_decoder()
    if any(ch not in vocab for ch in decoder):
        return "the vocabulary lacks some of the 256 single bytes"
    special = {t["content"] for t in added}
    if not set("".join(t for t in vocab if t not in special)) <= decoder.keys():
        token = next(t for t in vocab if t not in special and any(ch not in decoder for ch in t))
        return f"token {token!r} is not byte-level"
    return None


class Encoder:
    """Encodes documents to ids with either engine; ``engine`` says which one it uses and ``reason`` why."""

    def __init__(self, tok: Tokenizer, engine: str, reason: str = "", spec: dict | None = None):
        """``spec`` is ``tok``'s parsed JSON when the caller has it already (it saves a parse)."""
        self.tok = tok
        self.engine = engine
        self.reason = reason
        self.vocab_size = tok.get_vocab_size()
        # the tiktoken.Encoding itself, for callers that want its array output (encode_to_numpy)
        self.tiktoken_encoding = None
        if engine == "tiktoken":
            spec = spec or json.loads(tok.to_str())
            self._tt = self.tiktoken_encoding = _tiktoken_encoding(spec)
            # texts holding one of these take the list path (see encode_batch)
            self._specials = tuple(t["content"] for t in spec.get("added_tokens", []))
        elif engine == "hf":
            self._hf = Tokenizer.from_str(tok.to_str())
            self._hf.encode_special_tokens = True  # a literal "<|endoftext|>" in a document is text
        else:
            raise ValueError(f"unknown engine {engine!r}")

    def encode(self, text: str) -> list[int]:
        if self.engine == "tiktoken":
            return self._tt.encode_ordinary(text)
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], arrays: bool = False) -> list:
        """Encode several documents in this thread (the build parallelises across processes).

        ``arrays=True`` lets the tiktoken engine return each document's ids as a uint32 numpy array
        straight from its token buffer: no Python int per token, about a fifth less time than the
        lists plus a conversion. Its special tokens are registered only so that its search for them
        is a plain string search; none is allowed, so they are encoded as text, and a text that
        holds one takes the list path anyway, whatever the tiktoken version does with them.
        """
        if self.engine == "tiktoken":
            enc = self._tt.encode_ordinary
            if not arrays:
                return [enc(t) for t in texts]
            to_array, specials = self._tt.encode_to_numpy, self._specials
            return [enc(t) if any(s in t for s in specials) else to_array(t, disallowed_special=())
                    for t in texts]
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    # pickled into worker processes as the tokenizer's JSON, rebuilt there
    def __reduce__(self):
        return (_rebuild_encoder, (self.tok.to_str(), self.engine, self.reason))


def _rebuild_encoder(tok_json: str, engine: str, reason: str) -> Encoder:
    return Encoder(Tokenizer.from_str(tok_json), engine, reason)


def _tiktoken_encoding(spec: dict):
    import tiktoken

    # each byte-level character becomes the character of its byte value, then latin-1 gives the byte
    table = str.maketrans({ch: chr(b) for ch, b in _byte_decoder().items()})
    special = {t["content"]: t["id"] for t in spec.get("added_tokens", [])}
    ranks = {token.translate(table).encode("latin-1"): i for token, i in spec["model"]["vocab"].items()
             if token not in special}
    return tiktoken.Encoding(name="project-bpe", pat_str=GPT2_SPLIT_PATTERN, mergeable_ranks=ranks,
                             special_tokens=special)


def token_byte_lengths(tok: Tokenizer) -> list[int]:
    """The UTF-8 bytes of text each token id stands for, indexed by id: what bits per byte divides by.

    A byte-level BPE token is written with one character per byte (GPT-2's bytes_to_unicode), so its
    length is exact even for a token that holds only part of a multi-byte character, and over the ids
    of any text the lengths add up to ``len(text.encode("utf-8"))``. A special token (the separator)
    stands for no text: 0. An added token that is not special is text as written: its UTF-8 length.
    A tokenizer that does not decode bytes this way is a TokenizerError.
    """
    spec = json.loads(tok.to_str())
    if (spec.get("decoder") or {}).get("type") != "ByteLevel":
        raise TokenizerError("bits per byte needs a byte-level BPE tokenizer (decoder ByteLevel), as "
                             "`python -m preprocess` trains; this tokenizer.json decodes otherwise")
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    decoder = _byte_decoder()
    lengths = [0] * tok.get_vocab_size(with_added_tokens=True)
    for token, i in tok.get_vocab(with_added_tokens=True).items():
        if i in added:
            lengths[i] = 0 if added[i].get("special") else len(token.encode("utf-8"))
        elif all(ch in decoder for ch in token):
            lengths[i] = len(token)
        else:
            raise TokenizerError(f"token {i} ({token!r}) is not written in byte-level characters; bits per "
                                 f"byte needs a byte-level BPE tokenizer, as `python -m preprocess` trains")
    return lengths


def _hf_ids(tok: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """HF's ids for ``texts`` as documents are encoded (special tokens as text), without a copy of ``tok``."""
    before = tok.encode_special_tokens
    tok.encode_special_tokens = True
    try:
        return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]
    finally:
        tok.encode_special_tokens = before


def make_encoder(tok: Tokenizer, engine: str = "auto", sample: Sequence[str] = (),
                 spec: dict | None = None) -> Encoder:
    """The fastest exact encoder for ``tok`` (``spec``: its parsed JSON, when the caller has it).

    ``auto`` uses tiktoken when the tokenizer's structure allows it and it gives HF's ids on every
    text of ``sample`` plus :data:`EQUIVALENCE_PROBES`, through both of its output paths; otherwise HF,
    with ``reason`` saying why. ``tiktoken`` insists on the fast engine (an error if it is not
    exact); ``hf`` forces the reference. The two steps are :func:`candidate_encoder` and
    :func:`verify_encoder`, for callers that start encoding while the check runs.
    """
    candidate = candidate_encoder(tok, engine, spec)
    return verify_encoder(candidate, tok, sample, engine) if candidate.engine == "tiktoken" else candidate


def candidate_encoder(tok: Tokenizer, engine: str = "auto", spec: dict | None = None) -> Encoder:
    """The tiktoken engine where ``engine`` and the tokenizer's structure allow it (still to be checked
    with :func:`verify_encoder`), else the HF engine with ``reason`` saying why."""
    if engine == "hf":
        return Encoder(tok, "hf", "asked for with --encoder hf")
    if engine not in ("auto", "tiktoken"):
        raise TokenizerError(f"unknown encoder {engine!r}; use auto, tiktoken or hf")
    spec = spec or json.loads(tok.to_str())
    why = _tiktoken_incompatibility(spec)
    if why is None:
        try:
            return Encoder(tok, "tiktoken", spec=spec)
        except ImportError:
            why = "tiktoken is not installed"
    return _fallback(tok, engine, why)


def verify_encoder(fast: Encoder, tok: Tokenizer, sample: Sequence[str] = (), engine: str = "auto") -> Encoder:
    """``fast`` (a tiktoken engine) when it gives HF's ids on ``sample`` and the probes through both of
    its output paths, with ``reason`` saying so; else the HF engine, with ``reason`` saying why."""
    texts = [repair_surrogates(t)[0] for t in list(EQUIVALENCE_PROBES) + list(sample)]
    reference = _hf_ids(tok, texts)
    as_lists = fast.encode_batch(texts)
    as_arrays = [list(map(int, x)) for x in fast.encode_batch(texts, arrays=True)]
    bad = [t for t, x, y, z in zip(texts, reference, as_lists, as_arrays, strict=True) if not x == y == z]
    if not bad:
        fast.reason = f"gives HF's ids on all {len(texts)} check texts"
        return fast
    why = f"tiktoken's ids differ from HF's on {len(bad)} of {len(texts)} check texts, e.g. {bad[0][:60]!r}"
    return _fallback(tok, engine, why)


def _fallback(tok: Tokenizer, engine: str, why: str) -> Encoder:
    if engine == "tiktoken":
        raise TokenizerError(f"the tiktoken engine cannot encode this tokenizer exactly: {why}; use --encoder auto")
    return Encoder(tok, "hf", why)
