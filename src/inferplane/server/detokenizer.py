"""Incremental detokenization and stop strings.

Token ids arrive a few at a time; the text handed out must never hold a broken UTF-8 character
(a multi-byte character often spans tokens) nor any part of a stop string. Two decoders:

* :class:`ByteTableDecoder` for byte-level BPE vocabularies (GPT-2 style: SmolLM2, Llama 3, Qwen):
  each token is a byte string; an incremental UTF-8 decoder joins them. O(1) per token.
* :class:`WindowDecoder` for any tokenizer with a ``decode`` function: vLLM's prefix/read-offset
  scheme, decoding a short window of recent tokens twice per step.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Sequence
from typing import Protocol


class IncrementalDecoder(Protocol):
    def add(self, token_ids: Sequence[int]) -> str:
        """Text completed by these tokens (possibly empty while a character is incomplete)."""
        ...

    def flush(self) -> str:
        """Whatever is still held at the end of the stream."""
        ...


class ByteTableDecoder:
    """Decodes through a token-id → bytes table; special tokens map to ``b""``."""

    def __init__(self, token_bytes: Sequence[bytes]) -> None:
        self._table = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def add(self, token_ids: Sequence[int]) -> str:
        table = self._table
        size = len(table)
        return self._utf8.decode(b"".join(table[i] for i in token_ids if 0 <= i < size))

    def flush(self) -> str:
        return self._utf8.decode(b"", final=True)


class WindowDecoder:
    """vLLM-style incremental decoding with a ``decode(token_ids) -> str`` function.

    Text is emitted once decoding ``tokens[prefix:]`` yields more than ``tokens[prefix:read]`` and
    does not end in an incomplete character (shown as U+FFFD, or dropped by some tokenizers).
    """

    def __init__(self, decode: Callable[[Sequence[int]], str], window: int = 6) -> None:
        self._decode = decode
        self._window = window
        self._tokens: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0

    def add(self, token_ids: Sequence[int]) -> str:
        self._tokens.extend(token_ids)
        prefix_text = self._decode(self._tokens[self._prefix_offset : self._read_offset])
        new_text = self._decode(self._tokens[self._prefix_offset :])
        if len(new_text) <= len(prefix_text) or new_text.endswith("\ufffd"):
            return ""
        delta = new_text[len(prefix_text) :]
        self._read_offset = len(self._tokens)
        self._prefix_offset = max(self._read_offset - self._window, 0)
        # Never cut the window inside a multi-token character: re-anchor at the read offset.
        if self._decode(self._tokens[self._prefix_offset : self._read_offset]).startswith("\ufffd"):
            self._prefix_offset = self._read_offset
        return delta

    def flush(self) -> str:
        return ""


class StopStringMatcher:
    """Holds back text that could begin a stop string; reports the first stop string completed."""

    def __init__(self, stop: Sequence[str]) -> None:
        self._stop = [s for s in stop if s]
        self._longest = max((len(s) for s in self._stop), default=0)
        self._held = ""
        self.matched: str | None = None

    def feed(self, text: str) -> str:
        """The part of ``text`` (plus held text) that is safe to emit. Once a stop string is
        found, returns the text before it and sets :attr:`matched`; later calls return ``""``."""
        if self.matched is not None:
            return ""
        if not self._stop:
            return text
        held = self._held + text
        first: tuple[int, str] | None = None
        for stop in self._stop:
            at = held.find(stop)
            if at >= 0 and (first is None or at < first[0]):
                first = (at, stop)
        if first is not None:
            self.matched = first[1]
            self._held = ""
            return held[: first[0]]
        keep = self._partial_suffix(held)
        self._held = held[len(held) - keep :] if keep else ""
        return held[: len(held) - keep]

    def flush(self) -> str:
        """Held text at the end of a stream that ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.matched is not None else held

    def _partial_suffix(self, text: str) -> int:
        """Length of the longest suffix of ``text`` that is a proper prefix of a stop string."""
        for size in range(min(len(text), self._longest - 1), 0, -1):
            tail = text[-size:]
            if any(stop.startswith(tail) for stop in self._stop):
                return size
        return 0


class TextStream:
    """Token ids in, safe text deltas out: incremental decoding followed by stop-string matching."""

    def __init__(self, decoder: IncrementalDecoder, stop: Sequence[str] = ()) -> None:
        self._decoder = decoder
        self._stops = StopStringMatcher(stop)
        self.num_tokens = 0

    @property
    def stopped_by(self) -> str | None:
        """The stop string that ended the text, if any."""
        return self._stops.matched

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens one by one (so the count stops at the token completing a stop string)."""
        out: list[str] = []
        for token_id in token_ids:
            if self._stops.matched is not None:
                break
            self.num_tokens += 1
            out.append(self._stops.feed(self._decoder.add((token_id,))))
        return "".join(out)

    def finish(self) -> str:
        """Text still held when the stream ends without a stop string."""
        if self._stops.matched is not None:
            return ""
        return self._stops.feed(self._decoder.flush()) + self._stops.flush()
