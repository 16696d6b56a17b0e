"""What the simulated model "generates": plausible words, and EOS after a drawn output length.

Each request gets an output length from :class:`~inferplane.sim.config.OutputLengthConfig` and a
starting point in a fixed pseudo-random word sequence. Draws are seeded by the request's
``seed`` when it has one, by the prompt when ``temperature == 0`` (greedy decoding: same prompt,
same answer) and otherwise by the simulator seed and the request id.
"""

from __future__ import annotations

import math
import random

import xxhash

from inferplane.sim.config import OutputLengthConfig
from inferplane.sim.request import SimRequest
from inferplane.sim.tokenizer import Tokenizer

_SEQUENCE_LENGTH = 8191


class OutputSampler:
    """Chooses each request's output length and its next token."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        output_length: OutputLengthConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.eos_token_id = tokenizer.eos_token_id
        self.output_length = output_length or OutputLengthConfig()
        self.seed = seed
        self.sequence: tuple[int, ...] = _word_sequence(tokenizer, seed)
        # An answer starts with a capitalised word without a leading space.
        self.first_tokens: tuple[int, ...] = tokenizer.first_word_token_ids

    def draw_length(self, rng: random.Random) -> int:
        """An output length (tokens, EOS included) from the configured distribution."""
        config = self.output_length
        if config.distribution == "fixed":
            length = config.mean
        elif config.distribution == "uniform":
            length = rng.randint(config.min, config.max)
        elif config.distribution == "exponential":
            length = round(rng.expovariate(1.0 / config.mean))
        else:  # lognormal with the configured mean
            mu = math.log(config.mean) - config.sigma**2 / 2
            length = round(rng.lognormvariate(mu, config.sigma))
        return min(max(length, config.min), config.max)

    def prepare(self, request: SimRequest, seed: int | None = None, temperature: float = 1.0) -> None:
        """Decide where ``request``'s text starts and when it emits EOS."""
        if seed is not None:
            key: int | str = f"seed:{seed}"
        elif temperature == 0:
            tokens = request.all_token_ids[: request.num_prompt_tokens]
            key = xxhash.xxh3_64_intdigest(b"".join(t.to_bytes(4, "little") for t in tokens))
        else:
            key = f"{self.seed}:{request.request_id}"
        rng = random.Random(key)
        request.text_offset = rng.randrange(_SEQUENCE_LENGTH)
        length = self.draw_length(rng)
        request.eos_at = None if request.ignore_eos else length - 1

    def next_token(self, request: SimRequest) -> int:
        index = request.num_output_tokens
        if index == request.eos_at:
            return self.eos_token_id
        if index == 0:
            return self.first_tokens[request.text_offset % len(self.first_tokens)]
        return self.sequence[(request.text_offset + index) % _SEQUENCE_LENGTH]


def _word_sequence(tokenizer: Tokenizer, seed: int) -> tuple[int, ...]:
    """Sentences of 4-14 common words (the first capitalised), commas here and there."""
    rng = random.Random(seed)
    words = tokenizer.word_token_ids
    capitalized = tokenizer.capitalized_word_token_ids
    sequence: list[int] = []
    while len(sequence) < _SEQUENCE_LENGTH:
        length = rng.randint(4, 14)
        sequence.append(rng.choice(capitalized))
        for position in range(1, length):
            sequence.append(rng.choice(words))
            if position < length - 2 and rng.random() < 0.08:
                sequence.append(tokenizer.comma_token_id)
        sequence.append(tokenizer.period_token_id)
    return tuple(sequence[:_SEQUENCE_LENGTH])
