"""The inference request as the scheduler sees it: parsed once from the OpenAI body and the headers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from inferplane.picker.errors import BadRequest
from inferplane.picker.objectives import OBJECTIVE_HEADERS, Objectives

# Per-request headers (design.md §2); both spellings of the objective header are accepted.
REQUEST_ID = "x-request-id"
__all__ = ["OBJECTIVE_HEADERS", "InferenceRequest", "body_bytes", "from_headers", "parse_body"]
FAIRNESS_ID = "x-llm-d-inference-fairness-id"
SLO_TTFT_MS = "x-llm-d-slo-ttft-ms"
SLO_TPOT_MS = "x-llm-d-slo-tpot-ms"
MODEL_REWRITE = "x-llm-d-model-name-rewrite"
#: Set by a body-based router in front (GIE); names the model of requests whose body is not parsed here
#: (KServe v2 REST and gRPC, routed on their headers).
MODEL_NAME = "x-gateway-model-name"


@dataclass(slots=True, eq=False)
class InferenceRequest:
    """One HTTP request through the gateway."""

    request_id: str
    method: str = "POST"
    path: str = "/"
    headers: dict[str, str] = field(default_factory=dict)
    #: ``chat`` / ``completions`` / ``embeddings``, or ``other`` for unknown paths and body-less requests.
    kind: str = "other"
    #: The model the server is asked for (after any rewrite) and the one the client named.
    model: str = ""
    requested_model: str = ""
    #: The text prefix-cache affinity is computed over (chat messages flattened, prompt or input).
    prompt: str = ""
    stream: bool = False
    include_usage: bool = False
    max_tokens: int | None = None
    objective: str = ""
    priority: int = 0
    fairness_id: str = ""
    slo_ttft_ms: float | None = None
    slo_tpot_ms: float | None = None
    #: The engine rank it is sent at when the model servers schedule by priority (``picker.engine_priority``):
    #: load scorers then count only the requests it competes with (see ``Endpoint.load_at``).
    engine_rank: int | None = None
    body: dict[str, Any] | None = field(default=None, repr=False)
    #: The parsed body was changed (model rewrite): it must be serialised again before sending on.
    body_changed: bool = False
    #: Scratch space plugins share within one scheduling cycle (llm-d's CycleState).
    state: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def sheddable(self) -> bool:
        """Negative priority: may be rejected with 429 when the pool is saturated."""
        return self.priority < 0


def from_headers(
    headers: dict[str, str], objectives: Objectives | Mapping[str, int] | None = None
) -> InferenceRequest:
    """A request from its (lower-cased) headers alone, before or without a body.

    ``objectives`` resolves the objective header (unknown names get the default objective).
    """
    if not isinstance(objectives, Objectives):
        objectives = Objectives(objectives)
    objective = objectives.resolve(headers)
    model = headers.get(MODEL_NAME, "")
    return InferenceRequest(
        request_id=headers.get(REQUEST_ID) or str(uuid.uuid4()),
        method=headers.get(":method", "POST"),
        path=headers.get(":path", "/"),
        headers=headers,
        model=model,
        requested_model=model,
        objective=objective.name,
        priority=objective.priority,
        fairness_id=headers.get(FAIRNESS_ID, ""),
        slo_ttft_ms=_header_float(headers, SLO_TTFT_MS),
        slo_tpot_ms=_header_float(headers, SLO_TPOT_MS),
    )


def _header_float(headers: dict[str, str], name: str) -> float | None:
    try:
        return float(headers[name]) if headers.get(name) else None
    except ValueError:
        return None


def _kind(path: str) -> str:
    path = path.split("?", 1)[0].rstrip("/")
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "completions"
    if path.endswith("/embeddings"):
        return "embeddings"
    return "other"


def json_body_model(raw: bytes) -> tuple[dict[str, Any], str]:
    """A JSON request body and its ``model``; a ``ValueError`` says what is wrong (the picker and the
    router answer it in their own formats)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("request body must be a JSON object")  # noqa: TRY004 (one error type for the callers)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ValueError("'model' is required and must be a non-empty string")
    return body, model


def parse_body(request: InferenceRequest, raw: bytes) -> None:
    """Fill ``request`` from the JSON body; raise :class:`BadRequest` for what cannot be routed.

    As the GIE reference EPP: a body must be a JSON object naming a ``model``; an unknown model name
    is passed on to the server, which answers 404.
    """
    try:
        body, model = json_body_model(raw)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    request.requested_model = model
    rewrite = request.headers.get(MODEL_REWRITE)
    if rewrite:
        body["model"] = model = rewrite
        request.body_changed = True
    request.body = body
    request.model = model
    request.kind = kind = _kind(request.path)
    request.stream = body.get("stream") is True
    options = body.get("stream_options")
    request.include_usage = isinstance(options, dict) and options.get("include_usage") is True
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    request.max_tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    if kind == "chat" or "messages" in body:
        request.prompt = _messages_text(body.get("messages"))
    elif kind == "embeddings":
        request.prompt = _prompt_text(body.get("input"))
    else:
        request.prompt = _prompt_text(body.get("prompt"))


def body_bytes(request: InferenceRequest) -> bytes:
    """The (rewritten) body serialised again; a body nested too deeply to write back is a BadRequest.

    orjson reads deeper nesting than it writes, so a body that parsed may still fail here.
    """
    try:
        return orjson.dumps(request.body)
    except TypeError as exc:
        raise BadRequest(f"request body cannot be rewritten: {exc}") from None


def _messages_text(messages: Any) -> str:
    """Chat messages flattened in order (role and text parts), a stand-in for the chat template."""
    if not isinstance(messages, list):
        return ""
    parts: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            continue
        parts.append(str(message.get("role", "")))
        parts.append("\n")
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            for item in content:
                if isinstance(item, dict) and isinstance(item.get("text"), str):
                    parts.append(item["text"])
        parts.append("\n")
    return "".join(parts)


def _prompt_text(prompt: Any) -> str:
    """A completions prompt or embeddings input: text, list of texts, or token ids."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt:
        if all(isinstance(item, str) for item in prompt):
            return "\n".join(prompt)
        # token ids (or a batch of them): a stable text form keeps prefix affinity working
        return " ".join(map(str, prompt))
    return ""
