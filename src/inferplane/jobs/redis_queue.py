"""Redis Streams: a consumer group, acks, XAUTOCLAIM re-delivery of a crashed consumer's messages,
results and dead letters written atomically with the ack (a result is written once per message)."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import orjson

from inferplane.configfile import ConfigError
from inferplane.jobs.message import Result
from inferplane.jobs.queues import Backlog, Delivery

# KEYS: stream, target stream, dedupe key; ARGV: entry id, group, field, value, dedupe ttl
_FINISH = """
if redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[5]) then
  redis.call('XADD', KEYS[2], '*', ARGV[3], ARGV[4], 'source_id', ARGV[1])
  redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
  return 1
end
redis.call('XACK', KEYS[1], ARGV[2], ARGV[1])
return 0
"""


def _ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class RedisQueue:
    """``redis://host:port/db?stream=S&group=G``; results to ``S-results``, dead letters to ``S-dead``."""

    def __init__(self, url: str, consumer: str, results: str | None = None, dead_letter: str | None = None,
                 claim_idle_s: float = 30.0, dedupe_ttl_s: int = 7 * 24 * 3600) -> None:
        try:
            import redis.asyncio as redis
        except ImportError:
            raise ConfigError("source: Redis needs the 'redis' package (pip install redis)") from None
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        self.stream = query.pop("stream", "inferplane-requests")
        self.group = query.pop("group", "inferplane")
        self.results = results or f"{self.stream}-results"
        self.dead = dead_letter or f"{self.stream}-dead"
        self.consumer = consumer
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.dedupe_ttl_s = dedupe_ttl_s
        self.redis = redis.from_url(parsed._replace(query="").geturl())
        self._finish = self.redis.register_script(_FINISH)
        self._cursor = "0-0"

    async def setup(self) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    @staticmethod
    def _raw(fields: dict) -> bytes:
        fields = {k.decode() if isinstance(k, bytes) else k: v for k, v in fields.items()}
        if "message" in fields:
            value = fields["message"]
            return value if isinstance(value, bytes) else str(value).encode()
        flat = {}
        for key, value in fields.items():
            text = value.decode() if isinstance(value, bytes) else value
            if key in ("payload", "metadata"):
                try:
                    text = orjson.loads(text)
                except orjson.JSONDecodeError:
                    pass
            flat[key] = text
        return orjson.dumps(flat)

    async def receive(self, count: int, block_s: float) -> list[Delivery]:
        answer = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count,
                                             block=max(1, int(block_s * 1000)))
        out = []
        for _stream, entries in answer or []:
            for entry_id, fields in entries:
                eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                out.append(Delivery(eid, self._raw(fields), 1))
        return out

    async def reclaim(self, count: int) -> list[Delivery]:
        """Messages other consumers (or this one before a crash) left pending past ``claim_idle_s``."""
        answer = await self.redis.xautoclaim(self.stream, self.group, self.consumer, self.claim_idle_ms,
                                             start_id=self._cursor, count=count)
        cursor, entries = answer[0], answer[1]
        self._cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
        out = []
        for entry_id, fields in entries:
            eid = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if fields is None:
                continue
            info = await self.redis.xpending_range(self.stream, self.group, min=eid, max=eid, count=1)
            attempts = int(info[0]["times_delivered"]) if info else 1
            out.append(Delivery(eid, self._raw(fields), attempts))
        return out

    async def heartbeat(self, deliveries: list[Delivery]) -> None:
        """Reset the idle time of messages still being worked on, so nobody reclaims them."""
        if deliveries:
            await self.redis.xclaim(self.stream, self.group, self.consumer, 0,
                                    [d.handle for d in deliveries], justid=True)

    async def complete(self, delivery: Delivery, result: Result) -> bool:
        written = await self._finish(
            keys=[self.stream, self.results, f"{self.results}:done:{delivery.handle}"],
            args=[delivery.handle, self.group, "result", result.model_dump_json(), self.dedupe_ttl_s])
        return bool(written)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        value = orjson.dumps({"message": delivery.raw.decode(errors="replace"), "reason": reason,
                              "attempts": delivery.attempts})
        await self._finish(keys=[self.stream, self.dead, f"{self.dead}:done:{delivery.handle}"],
                           args=[delivery.handle, self.group, "dead_letter", value, self.dedupe_ttl_s])

    async def backlog(self) -> Backlog:
        groups = await self.redis.xinfo_groups(self.stream)
        group = next((g for g in groups if (g["name"].decode() if isinstance(g["name"], bytes) else g["name"]) == self.group), None)
        if group is None:
            return Backlog(None, None, None)
        lag = group.get("lag")
        pending = int(group.get("pending", 0))
        oldest: list[int] = []
        if pending:
            summary = await self.redis.xpending(self.stream, self.group)
            if summary.get("min"):
                low = summary["min"]
                oldest.append(_ms(low.decode() if isinstance(low, bytes) else low))
        last = group.get("last-delivered-id")
        last = last.decode() if isinstance(last, bytes) else last
        nxt = await self.redis.xrange(self.stream, min=f"({last}" if last and last != "0-0" else "-", count=1)
        if nxt:
            first = nxt[0][0]
            oldest.append(_ms(first.decode() if isinstance(first, bytes) else first))
        age = (time.time() * 1000 - min(oldest)) / 1000 if oldest else 0.0
        return Backlog(int(lag) if lag is not None else None, pending, max(0.0, age))

    async def close(self) -> None:
        await self.redis.aclose()
