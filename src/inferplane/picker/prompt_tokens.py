"""A request's prompt token ids as the model server computes them, in the picker's process.

The precise prefix-cache scorer must cut the prompt into the very blocks the server caches, so it
tokenizes as the server does: chat messages through the server's chat template, then encoded
without special tokens (the template holds them); a completions prompt encoded with
``add_special_tokens`` (default true); token-id prompts as they are. Two tokenizers:

- ``sim``: the simulator's deterministic tokenizer and its chat template (Llama 3 or ChatML), exactly
  what ``inferplane serve --engine sim`` runs;
- ``huggingface``: ``transformers.AutoTokenizer`` from a local directory (``tokenizer.json`` and
  ``tokenizer_config.json`` with the chat template), the files vLLM loads for the model.

Tokenizing here instead of asking the server (vLLM's ``POST /tokenize``) keeps a network round
trip and the server's API process off every request's scheduling path.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, model_validator

from inferplane.sim.tokenizer import ChatTemplateName


class TokenizerSpec(BaseModel):
    """Which tokenizer the model servers use (``kind``), and where it lives."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sim", "huggingface"] = "sim"
    #: ``sim``: the chat template of the simulated model (``llama3``: preset llama3-8b-h100;
    #: ``chatml``: qwen3-32b-tp2-h100, smollm2-135m-cpu2).
    chat_template: ChatTemplateName = "llama3"
    #: ``huggingface``: a local directory holding the model's tokenizer files.
    path: Path | None = None

    @model_validator(mode="after")
    def _path_for_huggingface(self) -> TokenizerSpec:
        if self.kind == "huggingface":
            if self.path is None:
                raise ValueError("path is required when kind is 'huggingface' (a local tokenizer directory)")
            if not self.path.is_dir():
                raise ValueError(f"path {str(self.path)!r} is not a directory")
        return self


class PromptTokenizer(Protocol):
    """The two operations a server applies to a prompt."""

    def encode(self, text: str, add_special_tokens: bool) -> list[int]: ...

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str: ...


class SimPromptTokenizer:
    """The simulator's tokenizer (:func:`inferplane.sim.tokenizer.get_tokenizer`).

    It encodes the text between special tokens piece by piece, so a long piece (a chat's system
    prompt, shared by many requests) is encoded once and remembered: the result is the same ids.
    """

    #: Pieces at least this long are remembered, at most ``CACHE_PIECES`` of them (least recently used out).
    CACHE_MIN_CHARS = 512
    CACHE_PIECES = 128

    def __init__(self, chat_template: ChatTemplateName) -> None:
        from inferplane.sim.tokenizer import SPECIAL_TOKENS, get_tokenizer

        self._tokenizer = get_tokenizer(chat_template)
        self._split = re.compile("(" + "|".join(re.escape(t) for t in SPECIAL_TOKENS) + ")").split
        self._pieces: OrderedDict[str, list[int]] = OrderedDict()

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        tokenizer = self._tokenizer
        if len(text) < self.CACHE_MIN_CHARS:
            return tokenizer.encode(text, add_special_tokens)
        ids: list[int] = []
        if add_special_tokens and tokenizer.bos_token_id is not None and not text.startswith("<|begin_of_text|>"):
            ids.append(tokenizer.bos_token_id)
        for i, part in enumerate(self._split(text)):
            if i % 2:
                ids.append(tokenizer.special_ids[part])
            elif part:
                ids.extend(self._piece(part))
        return ids

    def _piece(self, text: str) -> list[int]:
        """Ids of text holding no special token (remembered when long)."""
        if len(text) < self.CACHE_MIN_CHARS:
            return self._tokenizer.encode(text, False)
        pieces = self._pieces
        ids = pieces.get(text)
        if ids is None:
            ids = pieces[text] = self._tokenizer.encode(text, False)
            if len(pieces) > self.CACHE_PIECES:
                pieces.popitem(last=False)
        else:
            pieces.move_to_end(text)
        return ids

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return self._tokenizer.apply_chat_template(messages, add_generation_prompt)


class HuggingFacePromptTokenizer:
    """A Hugging Face tokenizer with its chat template, read from local files only."""

    def __init__(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)

    def encode(self, text: str, add_special_tokens: bool) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def render_chat(self, messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return str(
            self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        )


def build_tokenizer(spec: TokenizerSpec) -> PromptTokenizer:
    if spec.kind == "huggingface":
        assert spec.path is not None
        return HuggingFacePromptTokenizer(spec.path)
    return SimPromptTokenizer(spec.chat_template)


def chat_messages(messages: Any) -> list[dict[str, str]] | None:
    """OpenAI chat messages as the server hands them to its template (``developer`` → ``system``,
    text parts joined); None when they are not a list of messages."""
    if not isinstance(messages, list) or not messages:
        return None
    out: list[dict[str, str]] = []
    for message in messages:
        if not isinstance(message, Mapping):
            return None
        role = str(message.get("role", ""))
        content = message.get("content")
        if isinstance(content, list):
            text = "".join(
                part["text"] for part in content if isinstance(part, Mapping) and isinstance(part.get("text"), str)
            )
        else:
            text = content if isinstance(content, str) else ""
        out.append({"role": "system" if role == "developer" else role, "content": text})
    return out


def prompt_token_ids(tokenizer: PromptTokenizer, body: Mapping[str, Any] | None) -> list[int] | None:
    """The token ids the server will prefill for an OpenAI chat or completions ``body``; None when
    there is no prompt to tokenize. A batch of prompts is routed by its first one."""
    if not isinstance(body, Mapping):
        return None
    if "messages" in body:
        messages = chat_messages(body.get("messages"))
        if messages is None:
            return None
        text = tokenizer.render_chat(messages, body.get("add_generation_prompt", True) is not False)
        return tokenizer.encode(text, False)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return tokenizer.encode(prompt, body.get("add_special_tokens", True) is not False) if prompt else None
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt)
    return None
