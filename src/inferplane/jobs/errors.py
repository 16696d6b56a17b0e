"""OpenAI error JSON responses."""

from __future__ import annotations

from starlette.responses import JSONResponse


def openai_error(status: int, message: str, *, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}}, status_code=status)
