"""Read-only JSON views of the picker's state on its metrics port: ``/debug/state``, ``/debug/decisions``.

The metrics server answers on its own thread while the event loop changes the pool; every read
here copies containers first (one C-level call under the GIL) and retries a read torn by a
resize. Nothing here runs on the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

import orjson

if TYPE_CHECKING:
    from inferplane.picker.server import PickerServer

T = TypeVar("T")

STATE_PATH = "/debug/state"
DECISIONS_PATH = "/debug/decisions"
#: Decisions ``/debug/decisions`` returns when the query gives no ``limit``.
DEFAULT_LIMIT = 50

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _retry(read: Callable[[], T]) -> T | None:
    """``read()``, tried again when torn by the event loop; None when it kept failing."""
    for _ in range(5):
        try:
            return read()
        except RuntimeError:  # a dict or deque changed size while being read on the event loop
            continue
    return None


class PickerDebug:
    """Builds the JSON documents from a running :class:`~inferplane.picker.server.PickerServer`."""

    def __init__(self, server: PickerServer) -> None:
        self.server = server

    def state(self) -> dict[str, Any]:
        """Pool, endpoints (scraped metrics, in-flight counts, last scores), profile, queues, objectives, rewrites."""
        server = self.server
        scheduler = server.scheduler
        datastore = server.datastore
        now = time.monotonic()
        endpoints = _retry(datastore.all) or []
        ready = {ep.address for ep in (_retry(lambda: datastore.ready(now)) or [])}
        last_scores = _retry(scheduler.decisions.last_scores) or {}
        saturation = scheduler.saturation
        rows = []
        for ep in endpoints:
            m = ep.metrics
            rows.append({
                "address": ep.address,
                "ready": ep.address in ready,
                "stale": ep.is_stale(now, datastore.staleness),
                "metrics_age_s": round(now - ep.updated_at, 3) if ep.updated_at else None,
                "waiting": m.waiting if m else None,
                "running": m.running if m else None,
                "kv_cache_usage": m.kv_cache_usage if m else None,
                "in_flight": ep.in_flight,
                "saturation": round(saturation.endpoint_saturation(ep, now, datastore.staleness), 4) if m else None,
                "last_error": ep.last_error,
                "last_score": last_scores.get(ep.address),
            })
        ready_endpoints = [ep for ep in endpoints if ep.address in ready]
        return {
            "time": time.time(),
            "pool": server.config.pool_name,
            "saturation": round(saturation.pool_saturation(ready_endpoints, now, datastore.staleness), 4),
            "endpoints": rows,
            "profile": {
                "filters": [f.name for f in scheduler.filters],
                "scorers": [{"name": s.name, "type": s.type_name, "weight": w} for s, w in scheduler.scorers],
                "picker": scheduler.picker.name,
            },
            "decisions_total": scheduler.decisions.total,
            "flow_control": self._flow_control(),
            "objectives": [{"name": name, "priority": priority}
                           for name, priority in sorted(server.objectives.names().items())],
            "rewrites": self._rewrites(),
        }

    def _flow_control(self) -> dict[str, Any]:
        flow = self.server.flow
        if flow is None:
            return {"enabled": False, "queued": 0, "bands": []}
        sizes = _retry(flow.queue_sizes) or {}
        bands: dict[int, dict[str, Any]] = {}
        for band in _retry(lambda: list(flow.bands.values())) or []:
            bands[band.priority] = {"priority": band.priority, "requests": band.count, "bytes": band.bytes,
                                    "max_requests": band.config.max_requests, "max_bytes": band.config.max_bytes,
                                    "flows": []}
        for (priority, fairness_id), (count, size) in sorted(sizes.items()):
            band_row = bands.setdefault(priority, {"priority": priority, "requests": 0, "bytes": 0, "flows": []})
            band_row["flows"].append({"fairness_id": fairness_id, "requests": count, "bytes": size})
        return {"enabled": True, "queued": flow.queued,
                "bands": [bands[p] for p in sorted(bands, reverse=True)]}

    def _rewrites(self) -> list[dict[str, Any]]:
        rows = []
        for source, rewrites in self.server.rewrites.sources().items():
            for rewrite in rewrites:
                rows.append({
                    "source": source,
                    "name": rewrite.name,
                    "rules": [
                        {
                            "models": [m.model.value for m in rule.matches],
                            "targets": [{"model": t.model_rewrite, "weight": t.weight} for t in rule.targets],
                        }
                        for rule in rewrite.rules
                    ],
                })
        return rows

    def decisions(self, limit: int) -> dict[str, Any]:
        log = self.server.scheduler.decisions
        return {
            "time": time.time(),
            "total": log.total,
            "scorers": [{"name": name, "weight": weight} for name, weight in log.scorers],
            "decisions": _retry(lambda: log.to_json(limit)) or [],
        }

    def wsgi(self, fallback: WsgiApp) -> WsgiApp:
        """A WSGI app answering the debug paths and handing every other path to ``fallback`` (metrics)."""

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path not in (STATE_PATH, DECISIONS_PATH):
                return fallback(environ, start_response)
            if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
                return _reply(start_response, "405 Method Not Allowed", {"error": "only GET is allowed"})
            if path == STATE_PATH:
                return _reply(start_response, "200 OK", self.state())
            query = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                limit = int(query.get("limit", [DEFAULT_LIMIT])[0])
            except ValueError:
                return _reply(start_response, "400 Bad Request", {"error": "limit must be an integer"})
            return _reply(start_response, "200 OK", self.decisions(max(0, limit)))

        return app


def _reply(start_response: Callable[..., Any], status: str, document: dict[str, Any]) -> list[bytes]:
    body = orjson.dumps(document)
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
    return [body]
