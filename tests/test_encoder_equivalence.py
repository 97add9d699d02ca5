"""Property tests: the tiktoken engine gives HF tokenizers' ids on adversarial text, and both round-trip.

The build encodes with tiktoken only because it is exactly equivalent to the HF reference; these tests
hunt for a counter-example with hypothesis across the text most likely to split the engines apart.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tokenizer as tk
from tests.conftest import sample_texts

# A vocabulary trained on mixed scripts, so merges exist inside emoji, CJK and accented words and the
# engines must agree on how they chain (a pure-ASCII vocabulary would only test byte fallbacks).
_TRAINING = sample_texts(300) + [
    "日本語の文章を書きます。中文文本处理。한국어 텍스트입니다。" * 3,
    "emoji 😀😀👍🏽👍🏽 👨‍👩‍👧 🇯🇵🇯🇵 café naïve résumé e\u0301e\u0301 Ångström",
    "    indented code\n\tif x:\n\t\treturn 1\n\n\n   \r\n  trailing   \n",
    "numbers 1234567890 3.14159 0xDEADBEEF don't won't I'll we've they're",
]

EMOJI = st.sampled_from(["😀", "👍🏽", "👨‍👩‍👧", "🇯🇵", "❤️", "🏳️‍🌈", "\u200d", "\ufe0f"])
CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF) | st.characters(min_codepoint=0x3040,
                                                                                max_codepoint=0x30FF)
COMBINING = st.characters(min_codepoint=0x0300, max_codepoint=0x036F)
CONTROL = st.characters(min_codepoint=0, max_codepoint=0x1F) | st.sampled_from(["\x7f", "\x85", "\u2028", "\ufeff"])
WHITESPACE = st.sampled_from([" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2009", "\x0b", "\x0c"])
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
WORDS = st.sampled_from(["the", " model", "'s", "'ll", "'S", " 123", "4567", "<|endoftext|>", "café", "日本"])
# No lone surrogates: the build repairs those before encoding (tested below).
ANY_CHAR = st.characters(codec="utf-8")

PIECE = st.one_of(EMOJI, CJK, COMBINING, CONTROL, WHITESPACE, ASCII, WORDS, ANY_CHAR,
                  st.lists(WHITESPACE, min_size=2, max_size=8).map("".join))
ADVERSARIAL = st.lists(PIECE, max_size=60).map("".join)


@pytest.fixture(scope="module")
def engines():
    tok = tk.train_bpe(_TRAINING, vocab_size=1200, min_frequency=1)
    fast = tk.make_encoder(tok, "auto")
    assert fast.engine == "tiktoken", fast.reason
    return fast, tk.Encoder(tok, "hf"), tok


def both_paths(fast, text: str) -> list[int]:
    """The fast engine's ids through its list path and its array path (what the build uses), which must agree."""
    as_list = fast.encode(text)
    [as_array] = fast.encode_batch([text], arrays=True)
    assert [int(i) for i in as_array] == as_list
    return as_list


SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(ADVERSARIAL)
def test_tiktoken_gives_hf_ids_on_adversarial_text(engines, text):
    fast, hf, _ = engines
    assert both_paths(fast, text) == hf.encode(text)


@SETTINGS
@given(st.text(max_size=200))
def test_tiktoken_gives_hf_ids_on_random_unicode(engines, text):
    fast, hf, _ = engines
    assert both_paths(fast, text) == hf.encode(text)


@SETTINGS
@given(ADVERSARIAL)
def test_round_trip(engines, text):
    fast, hf, tok = engines
    ids = fast.encode(text)
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert fast._tt.decode(ids) == text


@SETTINGS
@given(st.lists(ADVERSARIAL, max_size=8))
def test_batches_match_single_documents(engines, texts):
    fast, hf, _ = engines
    assert fast.encode_batch(texts) == hf.encode_batch(texts) == [hf.encode(t) for t in texts]
    assert [[int(i) for i in a] for a in fast.encode_batch(texts, arrays=True)] == fast.encode_batch(texts)


def test_separator_inside_a_document_is_text(engines):
    fast, hf, tok = engines
    for text in ("a <|endoftext|> b", "<|endoftext|>", "x<|endoftext|><|endoftext|>y"):
        ids = both_paths(fast, text)
        assert tk.eot_id(tok) not in ids and ids == hf.encode(text)


def test_lone_surrogates_are_repaired_and_counted():
    assert tk.repair_surrogates("a\ud800b\udfffc") == ("a\ufffdb\ufffdc", 2)
    assert tk.repair_surrogates("😀 fine") == ("😀 fine", 0)
