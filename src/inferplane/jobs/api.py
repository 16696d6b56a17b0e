"""The OpenAI-compatible ``/v1/files`` and ``/v1/batches`` HTTP API (Starlette)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from inferplane.jobs.batches import TERMINAL, new_batch, new_id, parse_window
from inferplane.jobs.errors import openai_error
from inferplane.jobs.filestore import FileStore
from inferplane.jobs.jsonl import ENDPOINTS, parse_batch_file
from inferplane.jobs.store import Store

PURPOSES = ("batch",)
#: The tenant, set by the gateway from the API key (clients cannot choose it when keys are on).
TENANT_HEADER = "x-llm-d-inference-fairness-id"


def _tenant(request: Request) -> str:
    """Files and batches are scoped by tenant; without keys every caller is the default tenant ''."""
    return request.headers.get(TENANT_HEADER, "")


class BatchAPI:
    """Request handlers over a Store (metadata) and a FileStore (contents)."""

    def __init__(self, store: Store, files: FileStore, max_file_bytes: int, max_requests: int) -> None:
        self.store = store
        self.files = files
        self.max_file_bytes = max_file_bytes
        self.max_requests = max_requests

    def routes(self) -> list[Route]:
        return [
            Route("/v1/files", self.upload, methods=["POST"]),
            Route("/v1/files", self.list_files, methods=["GET"]),
            Route("/v1/files/{file_id}", self.get_file, methods=["GET"]),
            Route("/v1/files/{file_id}", self.delete_file, methods=["DELETE"]),
            Route("/v1/files/{file_id}/content", self.file_content, methods=["GET"]),
            Route("/v1/batches", self.create_batch, methods=["POST"]),
            Route("/v1/batches", self.list_batches, methods=["GET"]),
            Route("/v1/batches/{batch_id}", self.get_batch, methods=["GET"]),
            Route("/v1/batches/{batch_id}/cancel", self.cancel_batch, methods=["POST"]),
            Route("/health", lambda _: Response("ok"), methods=["GET"]),
        ]

    # files
    async def upload(self, request: Request) -> Response:
        try:
            form = await request.form(max_part_size=self.max_file_bytes)
        except Exception as exc:  # noqa: BLE001 - any malformed multipart body is a 400
            return openai_error(400, f"expected a multipart/form-data upload with 'file' and 'purpose': {exc}")
        purpose = form.get("purpose")
        upload = form.get("file")
        if purpose not in PURPOSES:
            return openai_error(400, f"'purpose' must be one of {', '.join(PURPOSES)} (got {purpose!r})", param="purpose")
        if not isinstance(upload, UploadFile):
            return openai_error(400, "'file' is required (a JSONL file)", param="file")
        data = await upload.read()
        if len(data) > self.max_file_bytes:
            return openai_error(400, f"file is larger than {self.max_file_bytes} bytes", param="file")
        _, problems = await asyncio.to_thread(parse_batch_file, data, None, self.max_requests)
        if problems:
            message = "; ".join(p.message if p.message.startswith("line") else f"line {p.line}: {p.message}"
                                for p in problems)
            return openai_error(400, f"invalid batch input file: {message}", param="file", code="invalid_file_format")
        record = {"id": new_id("file-"), "bytes": len(data), "created_at": int(time.time()),
                  "filename": upload.filename or "upload.jsonl", "purpose": purpose}
        await self.files.put(record["id"], data)  # contents first: metadata never points at nothing
        await self.store.add_file(record, _tenant(request))
        return JSONResponse(await self.store.get_file(record["id"]))

    async def list_files(self, request: Request) -> Response:
        files = await self.store.list_files(request.query_params.get("purpose"), _tenant(request))
        return JSONResponse({"object": "list", "data": files, "has_more": False,
                             "first_id": files[0]["id"] if files else None, "last_id": files[-1]["id"] if files else None})

    async def get_file(self, request: Request) -> Response:
        record = await self.store.get_file(request.path_params["file_id"], _tenant(request))
        return JSONResponse(record) if record else _no_file(request)

    async def delete_file(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if not await self.store.delete_file(file_id, _tenant(request)):
            return _no_file(request)
        await self.files.delete(file_id)
        return JSONResponse({"id": file_id, "object": "file", "deleted": True})

    async def file_content(self, request: Request) -> Response:
        file_id = request.path_params["file_id"]
        if not await self.store.get_file(file_id, _tenant(request)):
            return _no_file(request)
        try:
            data = await self.files.get(file_id)
        except FileNotFoundError:
            return _no_file(request)
        return Response(data, media_type="application/jsonl")

    # batches
    async def create_batch(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return openai_error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return openai_error(400, "the request body must be a JSON object")
        input_file_id = body.get("input_file_id")
        endpoint = body.get("endpoint")
        window = body.get("completion_window", "24h")
        metadata = body.get("metadata")
        if not isinstance(input_file_id, str) or not await self.store.get_file(input_file_id, _tenant(request)):
            return openai_error(400, f"input file {input_file_id!r} not found", param="input_file_id")
        if endpoint not in ENDPOINTS:
            return openai_error(400, f"'endpoint' must be one of {', '.join(ENDPOINTS)}", param="endpoint")
        window_s = parse_window(window) if isinstance(window, str) else None
        if window_s is None:
            return openai_error(400, "'completion_window' must look like 24h (also 90m, 30s; at most 168h)",
                                param="completion_window")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16
                                         and all(isinstance(v, str) for v in metadata.values())):
            return openai_error(400, "'metadata' must map at most 16 keys to strings", param="metadata")
        batch = new_batch(input_file_id, endpoint, window, window_s, metadata)
        await self.store.add_batch(batch, _tenant(request))
        return JSONResponse(batch)

    async def _view(self, batch: dict[str, Any]) -> dict[str, Any]:
        if batch["status"] not in TERMINAL:
            batch["request_counts"] = await self.store.counts(batch["id"])
        return batch

    async def get_batch(self, request: Request) -> Response:
        batch = await self.store.get_batch(request.path_params["batch_id"], _tenant(request))
        return JSONResponse(await self._view(batch)) if batch else _no_batch(request)

    async def list_batches(self, request: Request) -> Response:
        try:
            limit = int(request.query_params.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return openai_error(400, "'limit' must be an integer from 1 to 100", param="limit")
        batches, has_more = await self.store.list_batches(request.query_params.get("after"), limit, _tenant(request))
        data = [await self._view(b) for b in batches]
        return JSONResponse({"object": "list", "data": data, "has_more": has_more,
                             "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})

    async def cancel_batch(self, request: Request) -> Response:
        batch_id = request.path_params["batch_id"]
        for _ in range(5):  # the worker may move the batch meanwhile: re-read and retry
            batch = await self.store.get_batch(batch_id, _tenant(request))
            if batch is None:
                return _no_batch(request)
            if batch["status"] in ("cancelling", "cancelled"):
                return JSONResponse(await self._view(batch))
            if batch["status"] not in ("validating", "in_progress"):
                return openai_error(409, f"cannot cancel a batch with status '{batch['status']}'", code="batch_not_cancellable")
            updated = {**batch, "status": "cancelling", "cancelling_at": int(time.time())}
            if await self.store.save_batch(updated, expect_status=batch["status"]):
                return JSONResponse(await self._view(updated))
        return openai_error(409, "the batch changed while cancelling; try again")


def _no_file(request: Request) -> Response:
    return openai_error(404, f"No such File object: {request.path_params['file_id']}", param="id")


def _no_batch(request: Request) -> Response:
    return openai_error(404, f"No batch found with id '{request.path_params['batch_id']}'", param="batch_id")

