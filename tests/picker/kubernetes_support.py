"""A fake Kubernetes API server (real HTTP, in-process) speaking list + watch faithfully, and object builders.

What it implements, as the real API server does for namespaced collections:
- ``GET <collection>``: a list with ``metadata.resourceVersion``; ``labelSelector`` (``k=v,…``) and
  ``fieldSelector`` (``metadata.name=…``);
- ``GET <collection>?watch=1&resourceVersion=N``: JSON lines of every change after N (replayed from an
  event log, then live), ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}``; an object
  entering / leaving a label selector is sent as ADDED / DELETED; bookmarks when
  ``allowWatchBookmarks=true``; the stream ends after ``timeoutSeconds``;
- a resourceVersion older than the last ``compact()``: 410 Gone, as an ``ERROR`` event (the API server's
  way) or, with ``gone_as_status``, as an HTTP 410 answer;
- ``Authorization: Bearer <token>`` checked (401 otherwise); collections in ``missing`` answer 404
  (a CRD not installed); ``drop_watches()`` cuts every open watch mid-stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

NS = "ml"
POOL = "qwen-pool"
PODS = f"/api/v1/namespaces/{NS}/pods"
POOLS = f"/apis/inference.networking.k8s.io/v1/namespaces/{NS}/inferencepools"
OBJECTIVES = f"/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/{NS}/inferenceobjectives"
REWRITES = f"/apis/inference.networking.x-k8s.io/v1alpha2/namespaces/{NS}/inferencemodelrewrites"
KINDS = {
    "pods": ("v1", "Pod"),
    "inferencepools": ("inference.networking.k8s.io/v1", "InferencePool"),
    "inferenceobjectives": ("inference.networking.x-k8s.io/v1alpha2", "InferenceObjective"),
    "inferencemodelrewrites": ("inference.networking.x-k8s.io/v1alpha2", "InferenceModelRewrite"),
}


class _Dropped(Exception):
    """Raised inside a watch stream to cut the connection without ending the chunked body."""


@dataclass
class _Event:
    rv: int
    path: str
    type: str
    obj: dict[str, Any]
    old: dict[str, Any] | None


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": message}


def _labels_match(selector: str | None, obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    if not selector:
        return True
    labels = obj["metadata"].get("labels") or {}
    for term in selector.split(","):
        key, _, value = term.partition("=")
        if labels.get(key) != value:
            return False
    return True


def _fields_match(selector: str | None, obj: dict[str, Any] | None) -> bool:
    if obj is None:
        return False
    if not selector:
        return True
    for term in selector.split(","):
        key, _, value = term.partition("=")
        assert key == "metadata.name", f"fake API server: unsupported field selector {key}"
        if obj["metadata"]["name"] != value:
            return False
    return True


@dataclass
class FakeApiServer:
    """State and knobs of the fake API server; mutate it from the test (same event loop)."""

    token: str = "test-token"
    bookmark_interval: float = 0.5
    gone_as_status: bool = False
    missing: set[str] = field(default_factory=set)
    url: str = ""
    rv: int = 1000
    compacted: int = 0
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    events: list[_Event] = field(default_factory=list)
    #: (``list``|``watch``, path, query) of every authorised request; the Authorization headers seen.
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)
    open_watches: int = 0
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _drop_generation: int = 0
    _closing: bool = False
    _clock: itertools.count = field(default_factory=lambda: itertools.count(1))

    # -- mutations (the test plays the controllers and the kubelet) --------------------------------

    def apply(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Create or replace ``obj`` in the collection at ``path``; returns the stored copy."""
        obj = copy.deepcopy(obj)
        name = obj["metadata"]["name"]
        store = self.objects.setdefault(path, {})
        old = store.get(name)
        self.rv += 1
        metadata = obj["metadata"]
        metadata["resourceVersion"] = str(self.rv)
        metadata.setdefault("namespace", NS)
        if old is None:
            metadata.setdefault("creationTimestamp", f"2026-01-01T00:00:{next(self._clock):02d}Z")
            metadata.setdefault("uid", f"uid-{name}-{self.rv}")
        else:
            metadata["creationTimestamp"] = old["metadata"]["creationTimestamp"]
            metadata["uid"] = old["metadata"]["uid"]
        api_version, kind = KINDS[path.rsplit("/", 1)[-1]]
        obj.setdefault("apiVersion", api_version)
        obj.setdefault("kind", kind)
        store[name] = obj
        self._record(path, "MODIFIED" if old else "ADDED", obj, old)
        return copy.deepcopy(obj)

    def delete(self, path: str, name: str) -> None:
        old = self.objects.get(path, {}).pop(name)
        self.rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record(path, "DELETED", gone, old)

    def compact(self) -> None:
        """Forget the event history: any watch from an older resourceVersion gets 410 Gone."""
        self.compacted = self.rv
        self.events.clear()

    def drop_watches(self) -> None:
        """Cut every open watch connection mid-stream (no clean end of the chunked body)."""
        self._drop_generation += 1
        self._wake()

    def _record(self, path: str, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        self.events.append(_Event(self.rv, path, kind, copy.deepcopy(obj), copy.deepcopy(old)))
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # -- HTTP -----------------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        path = request.url.path
        self.auth_headers.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse(_status(401, "Unauthorized", "Unauthorized"), status_code=401)
        plural = path.rsplit("/", 1)[-1]
        if plural not in KINDS or plural in self.missing:
            return JSONResponse(_status(404, "NotFound", f"the server could not find {path}"), status_code=404)
        query = dict(request.query_params)
        if query.get("watch") in ("1", "true"):
            self.requests.append(("watch", path, query))
            return await self._watch(path, query)
        self.requests.append(("list", path, query))
        items = [
            copy.deepcopy(obj)
            for obj in self.objects.get(path, {}).values()
            if _labels_match(query.get("labelSelector"), obj) and _fields_match(query.get("fieldSelector"), obj)
        ]
        api_version, kind = KINDS[plural]
        return JSONResponse({"kind": f"{kind}List", "apiVersion": api_version,
                             "metadata": {"resourceVersion": str(self.rv)}, "items": items})

    async def _watch(self, path: str, query: dict[str, str]) -> Response:
        since = int(query["resourceVersion"])
        if since < self.compacted and self.gone_as_status:
            return JSONResponse(_status(410, "Expired", f"too old resource version: {since}"), status_code=410)
        return StreamingResponse(self._stream(path, since, query), media_type="application/json")

    async def _stream(self, path: str, since: int, query: dict[str, str]) -> AsyncIterator[bytes]:
        if since < self.compacted:
            yield self._line("ERROR", _status(410, "Expired", f"too old resource version: {since}"))
            return
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        bookmarks = query.get("allowWatchBookmarks") == "true"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + float(query.get("timeoutSeconds", 1800))
        generation, last_rv, next_bookmark = self._drop_generation, since, loop.time() + self.bookmark_interval
        self.open_watches += 1
        try:
            while True:
                if self._drop_generation != generation:
                    raise _Dropped("watch dropped by the test")
                for event in [e for e in self.events if e.rv > last_rv]:
                    last_rv = event.rv
                    if event.path != path:
                        continue
                    kind = self._visible(event, labels, fields)
                    if kind is not None:
                        yield self._line(kind, event.obj)
                now = loop.time()
                if self._closing or now >= deadline:
                    return
                if bookmarks and now >= next_bookmark:
                    if not any(e.rv > last_rv for e in self.events):
                        last_rv = max(last_rv, self.rv)  # everything up to now was seen
                    api_version, kind_name = KINDS[path.rsplit("/", 1)[-1]]
                    yield self._line("BOOKMARK", {"kind": kind_name, "apiVersion": api_version,
                                                  "metadata": {"resourceVersion": str(last_rv)}})
                    next_bookmark = now + self.bookmark_interval
                wait = min(deadline, next_bookmark if bookmarks else deadline) - now
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), max(wait, 0.001))
        finally:
            self.open_watches -= 1

    @staticmethod
    def _visible(event: _Event, labels: str | None, fields: str | None) -> str | None:
        """What a watcher with these selectors sees of ``event`` (objects entering / leaving the selector)."""
        def match(obj: dict[str, Any] | None) -> bool:
            return _labels_match(labels, obj) and _fields_match(fields, obj)
        new, old = match(event.obj), match(event.old)
        if event.type == "DELETED":
            return "DELETED" if old else None
        if new and old:
            return "MODIFIED"
        if new:
            return "ADDED"
        if old:
            return "DELETED"
        return None

    @staticmethod
    def _line(kind: str, obj: dict[str, Any]) -> bytes:
        return orjson.dumps({"type": kind, "object": obj}) + b"\n"


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.asynccontextmanager
async def serve_fake_api(tls_dir: Path | None = None, **knobs: Any) -> AsyncIterator[FakeApiServer]:
    """Run a FakeApiServer on a free port (HTTPS with a self-signed cert for 127.0.0.1 when ``tls_dir``)."""
    api = FakeApiServer(**knobs)
    app = Starlette(routes=[Route("/{path:path}", api.handle, methods=["GET"])])
    sock = _bound_socket()
    port = sock.getsockname()[1]
    tls: dict[str, str] = {}
    if tls_dir is not None:
        cert, key = self_signed_cert(tls_dir)
        tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    api.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    config = uvicorn.Config(app, log_level="critical", lifespan="off", timeout_graceful_shutdown=1, **tls)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield api
    finally:
        api._closing = True
        api._wake()
        server.should_exit = True
        await task
        sock.close()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 (it is its own CA), made with the openssl command."""
    cert, key = directory / "ca.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


# -- object builders ------------------------------------------------------------------------------

def pool(selector: dict[str, str], ports: list[int], name: str = POOL) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"selector": {"matchLabels": selector}, "targetPorts": [{"number": p} for p in ports],
                     "endpointPickerRef": {"name": f"{name}-epp", "port": {"number": 9002}}}}


def pod(name: str, ip: str | None, ready: bool = True, labels: dict[str, str] | None = None,
        terminating: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending",
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    metadata: dict[str, Any] = {"name": name, "labels": labels if labels is not None else {"app": "vllm"}}
    if terminating:
        metadata["deletionTimestamp"] = "2026-01-01T00:10:00Z"
    return {"metadata": metadata, "spec": {"containers": [{"name": "vllm", "image": "vllm"}]}, "status": status}


def objective(name: str, priority: int | None, pool_name: str = POOL) -> dict[str, Any]:
    spec: dict[str, Any] = {"poolRef": {"group": "inference.networking.k8s.io", "name": pool_name}}
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"name": name}, "spec": spec}


def rewrite(name: str, rules: list[dict[str, Any]], pool_name: str = POOL) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "spec": {"poolRef": {"group": "inference.networking.k8s.io", "name": pool_name}, "rules": rules}}
