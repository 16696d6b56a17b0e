import subprocess
import sys

import pytest

from inferplane.sim.tokenizer import COMMON_WORDS, Tokenizer, get_tokenizer

ENGLISH = (
    "Prefix caching matters for routing because requests that share a long system prompt can reuse "
    "the KV cache of an earlier request, which cuts the time to first token. A router that ignores "
    "the cache spreads such requests over every replica and computes the same prefix many times."
)


def test_round_trip_of_any_text() -> None:
    tokenizer = get_tokenizer()
    samples = [
        ENGLISH,
        "Hello, world!  Two  spaces\tand a tab\n\n\nthree newlines",
        "café naïve 日本語 😀 — “quotes” and {json: [1, 2, 3]} 3.14159 2026-11-24",
        "Supercalifragilisticexpialidocious XMLHttpRequest iPhone",
        "",
    ]
    for text in samples:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_english_is_about_four_characters_per_token() -> None:
    tokens = get_tokenizer().encode(ENGLISH, add_special_tokens=False)
    assert 3.5 <= len(ENGLISH) / len(tokens) <= 6


def test_ids_are_the_same_in_another_process() -> None:
    code = "from inferplane.sim.tokenizer import Tokenizer; import sys; print(Tokenizer().encode(sys.argv[1]))"
    other = subprocess.run([sys.executable, "-c", code, ENGLISH], capture_output=True, text=True, check=True)
    assert other.stdout.strip() == str(get_tokenizer().encode(ENGLISH))


def test_two_instances_agree() -> None:
    assert Tokenizer("chatml").encode(ENGLISH) == Tokenizer("chatml").encode(ENGLISH)


def test_llama3_chat_template_and_special_tokens() -> None:
    tokenizer = get_tokenizer("llama3")
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    )
    assert prompt.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>")
    assert prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    ids = tokenizer.encode(prompt)
    # The template already starts with BOS: it is not added twice.
    assert ids.count(tokenizer.special_ids["<|begin_of_text|>"]) == 1
    assert tokenizer.special_ids["<|eot_id|>"] in ids
    assert tokenizer.decode(ids) == prompt
    assert tokenizer.decode(ids, skip_special_tokens=True) == "system\n\nBe brief.user\n\nHi thereassistant\n\n"
    assert tokenizer.special_ids["<|eot_id|>"] in tokenizer.eos_token_ids


def test_chatml_template_has_no_bos() -> None:
    tokenizer = get_tokenizer("chatml")
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}])
    assert prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.encode("Hi")[0] != tokenizer.special_ids["<|begin_of_text|>"]
    assert tokenizer.eos_token_id == tokenizer.special_ids["<|im_end|>"]


def test_generation_tokens_decode_to_words() -> None:
    tokenizer = get_tokenizer()
    text = tokenizer.decode(tokenizer.word_token_ids[:50])
    assert text.split() == list(COMMON_WORDS[:50])


def test_unknown_id_is_an_error() -> None:
    tokenizer = get_tokenizer()
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tokenizer.decode([tokenizer.vocab_size])
