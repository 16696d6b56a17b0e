"""Google Cloud Pub/Sub: pull from a subscription, publish results / dead letters, then ack.

Untested here (no Pub/Sub emulator is installable in this environment); written against the
``google-cloud-pubsub`` client's synchronous pull API, run in a thread.
``pubsub://PROJECT/SUBSCRIPTION?results=TOPIC&dead_letter=TOPIC``. Delivery counts come from
``delivery_attempt``, which Pub/Sub fills only when the subscription has a dead-letter policy;
otherwise this process counts deliveries it has seen. Result duplicates after a crash are possible
unless the subscription uses exactly-once delivery: consumers should dedupe results by ``id``.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs, urlparse

import orjson

from inferplane.configfile import ConfigError
from inferplane.jobs.message import Result
from inferplane.jobs.queues import Backlog, Delivery


class PubSubQueue:
    def __init__(self, url: str, results: str | None = None, dead_letter: str | None = None,
                 ack_deadline_s: int = 60) -> None:
        try:
            from google.cloud import pubsub_v1
        except ImportError:
            raise ConfigError("source: Pub/Sub needs the 'google-cloud-pubsub' package") from None
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        project, subscription = parsed.netloc, parsed.path.strip("/")
        if not project or not subscription:
            raise ConfigError("source: expected pubsub://PROJECT/SUBSCRIPTION")
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = pubsub_v1.PublisherClient()
        self.subscription = self.subscriber.subscription_path(project, subscription)
        self.results = self.publisher.topic_path(project, results or query.get("results") or f"{subscription}-results")
        self.dead = self.publisher.topic_path(project, dead_letter or query.get("dead_letter") or f"{subscription}-dead")
        self.ack_deadline_s = ack_deadline_s
        self._seen: dict[str, int] = {}

    async def setup(self) -> None:
        return None

    async def receive(self, count: int, block_s: float) -> list[Delivery]:
        def pull() -> list:
            response = self.subscriber.pull(request={"subscription": self.subscription, "max_messages": count},
                                            timeout=max(1.0, block_s))
            return list(response.received_messages)

        try:
            received = await asyncio.to_thread(pull)
        except Exception as exc:  # DeadlineExceeded when nothing arrives
            if type(exc).__name__ in ("DeadlineExceeded", "RetryError"):
                return []
            raise
        out = []
        for item in received:
            message_id = item.message.message_id
            self._seen[message_id] = self._seen.get(message_id, 0) + 1
            attempts = item.delivery_attempt or self._seen[message_id]
            out.append(Delivery(item.ack_id, bytes(item.message.data), attempts, {"message_id": message_id}))
        return out

    async def reclaim(self, count: int) -> list[Delivery]:
        return []  # Pub/Sub re-delivers by itself once an ack deadline passes

    async def heartbeat(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await asyncio.to_thread(self.subscriber.modify_ack_deadline, request={
                "subscription": self.subscription, "ack_ids": [d.handle for d in deliveries],
                "ack_deadline_seconds": self.ack_deadline_s})

    async def _publish_then_ack(self, topic: str, data: bytes, delivery: Delivery) -> None:
        def work() -> None:
            self.publisher.publish(topic, data, source_message_id=delivery.extra.get("message_id", "")).result()
            self.subscriber.acknowledge(request={"subscription": self.subscription, "ack_ids": [delivery.handle]})
        await asyncio.to_thread(work)
        self._seen.pop(delivery.extra.get("message_id", ""), None)

    async def complete(self, delivery: Delivery, result: Result) -> bool:
        await self._publish_then_ack(self.results, result.model_dump_json().encode(), delivery)
        return True

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        data = orjson.dumps({"message": delivery.raw.decode(errors="replace"), "reason": reason,
                             "attempts": delivery.attempts})
        await self._publish_then_ack(self.dead, data, delivery)

    async def backlog(self) -> Backlog:
        return Backlog(None, None, None)  # read subscription/num_undelivered_messages from Cloud Monitoring

    async def close(self) -> None:
        await asyncio.to_thread(self.subscriber.close)
