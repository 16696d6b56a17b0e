"""The console's Starlette app: the page and its static files under ``/console/``, JSON under ``/console/api/``."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from inferplane.console.collector import Collector
from inferplane.console.config import ConsoleConfig

STATIC = Path(__file__).parent / "static"
#: Where the console lives, on its own port and through the gateway alike.
PREFIX = "/console"


def build_app(config: ConsoleConfig, collector: Collector | None = None) -> Starlette:
    """The app; the poller runs in its lifespan."""
    collector = collector or Collector(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await collector.poll()  # the first page load has data
        collector.start()
        try:
            yield
        finally:
            await collector.stop()

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def snapshot(request: Request) -> Response:
        try:
            since = float(request.query_params.get("since", "0"))
        except ValueError:
            return JSONResponse({"error": {"message": "since must be a number (seconds since the epoch)",
                                           "type": "invalid_request_error"}}, status_code=400)
        return JSONResponse(collector.snapshot(since), headers={"Cache-Control": "no-store"})

    async def health(request: Request) -> Response:
        return Response("ok")

    async def to_page(request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/")

    routes = [
        Route("/", to_page),
        Route(PREFIX, to_page),
        Route(f"{PREFIX}/", page),
        Route(f"{PREFIX}/api/snapshot", snapshot),
        Route(f"{PREFIX}/health", health),
        Mount(f"{PREFIX}/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.collector = collector
    return app
