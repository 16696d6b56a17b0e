"""``inferplane batch serve``: the Batch API and (by default) its dispatcher in one process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from inferplane.jobs.api import BatchAPI
from inferplane.jobs.config import BatchConfig
from inferplane.jobs.db import open_database
from inferplane.jobs.errors import openai_error
from inferplane.jobs.filestore import FileStore
from inferplane.jobs.sender import Sender
from inferplane.jobs.store import Store
from inferplane.jobs.worker import BatchWorker
from inferplane.observe.batch_metrics import metrics_route


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and methods answer in OpenAI error JSON too, never Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    return openai_error(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}")


class _NoSlashRedirect:
    """A path Starlette would redirect (trailing slash) is simply not found: no 307 through the gateway."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/" and scope["path"].endswith("/"):
            await openai_error(404, f"{scope['method']} {scope['path']}: Not Found")(scope, receive, send)
            return
        await self.app(scope, receive, send)


def build_server_app(config: BatchConfig) -> Starlette:
    """The app; opening the database and starting the worker happen in its lifespan."""
    files = FileStore(config.files_url)
    holder: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        store = Store(await open_database(config.database))
        await store.init()
        api.store = store
        worker_task = None
        sender = None
        if config.worker:
            sender = Sender(config.dispatch)
            worker = BatchWorker(store, files, sender, config.poll_interval_s, config.max_requests_per_batch)
            holder["worker"] = worker
            worker_task = asyncio.create_task(worker.run())
        try:
            yield
        finally:
            if worker_task is not None:
                worker_task.cancel()
                await asyncio.gather(worker_task, return_exceptions=True)
                await holder["worker"].stop()  # type: ignore[attr-defined]
            if sender is not None:
                await sender.aclose()
            await store.db.close()

    api = BatchAPI(None, files, config.max_file_bytes, config.max_requests_per_batch)  # type: ignore[arg-type]
    app = Starlette(routes=[*api.routes(), metrics_route(lambda: api.store)], lifespan=lifespan,
                    exception_handlers={HTTPException: _http_error}, middleware=[Middleware(_NoSlashRedirect)])
    app.state.holder = holder
    return app


async def _check_database(url: str) -> None:
    """Fail early, with a message, when the database cannot be opened."""
    db = await open_database(url)
    await Store(db).init()
    await db.close()


def serve(config: BatchConfig) -> int:
    asyncio.run(_check_database(config.database))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = build_server_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="warning",
                                           lifespan="on"))
    print(f"inferplane batch: serving /v1/files and /v1/batches on http://{config.host}:{config.port}/v1 "
          f"(dispatching to {config.dispatch.gateway_url}, objective {config.dispatch.objective!r})", flush=True)
    server.run()
    return 0
