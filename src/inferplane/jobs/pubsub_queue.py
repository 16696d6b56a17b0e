"""Google Cloud Pub/Sub: pull from a subscription, publish results / dead letters, then ack.

``pubsub://PROJECT/SUBSCRIPTION?results=TOPIC&dead_letter=TOPIC`` (topics default to
``SUBSCRIPTION-results`` and ``SUBSCRIPTION-dead``; a full ``projects/P/topics/T`` name is accepted).
Uses the ``google-cloud-pubsub`` client's synchronous Pull in a thread. Every received message is
leased for ``lease_s`` (the processor's ``claim_idle_s``) and the lease is renewed while it is
worked on, so a crashed worker's messages come back once that much time has passed. Delivery counts
come from ``delivery_attempt``, which Pub/Sub fills only when the subscription has a dead-letter
policy; otherwise this process counts the deliveries it has seen itself.

At-least-once: the result is published, then the message acked. A crash (or an expired lease)
between the two re-delivers the message and publishes its result again, so result consumers must
dedupe by ``id`` (also sent as the result's ``id`` attribute).

Tested against an in-process server speaking the Pub/Sub gRPC API (tests/jobs/pubsub_server.py)
through ``PUBSUB_EMULATOR_HOST``, not against Google's service or emulator.
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

from inferplane.configfile import ConfigError
from inferplane.jobs.message import Result
from inferplane.jobs.queues import Backlog, Delivery

log = logging.getLogger("inferplane.jobs.pubsub")

MAX_LEASE_S = 600  # the longest ack deadline Pub/Sub accepts


class PubSubQueue:
    """One subscription in, a results topic and a dead-letter topic out."""

    def __init__(self, url: str, results: str | None = None, dead_letter: str | None = None,
                 lease_s: float = 60.0) -> None:
        try:
            from google.api_core import exceptions
            from google.cloud import pubsub_v1
        except ImportError:
            raise ConfigError("source: Pub/Sub needs the 'google-cloud-pubsub' package") from None
        parsed = urlparse(url)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        project, subscription = parsed.netloc, parsed.path.strip("/")
        if not project or not subscription or "/" in subscription:
            raise ConfigError(f"source: expected pubsub://PROJECT/SUBSCRIPTION, got {url!r}")
        if lease_s > MAX_LEASE_S:
            raise ConfigError(f"claim_idle_s: Pub/Sub ack deadlines are at most {MAX_LEASE_S} s, got {lease_s}")
        self._errors = exceptions
        self.subscriber = pubsub_v1.SubscriberClient()
        self.publisher = pubsub_v1.PublisherClient()
        self.subscription = self.subscriber.subscription_path(project, subscription)
        self.results = self._topic(project, results or query.get("results") or f"{subscription}-results")
        self.dead = self._topic(project, dead_letter or query.get("dead_letter") or f"{subscription}-dead")
        self.lease_s = max(1, math.ceil(lease_s))
        self._seen: dict[str, int] = {}

    def _topic(self, project: str, name: str) -> str:
        return name if name.startswith("projects/") else self.publisher.topic_path(project, name)

    async def setup(self) -> None:
        """Fail early, naming the setting, when the subscription or a topic does not exist."""
        checks = [("source", "subscription", self.subscription,
                   lambda: self.subscriber.get_subscription(request={"subscription": self.subscription}, timeout=30)),
                  ("results", "topic", self.results,
                   lambda: self.publisher.get_topic(request={"topic": self.results}, timeout=30)),
                  ("dead_letter", "topic", self.dead,
                   lambda: self.publisher.get_topic(request={"topic": self.dead}, timeout=30))]
        for setting, kind, name, call in checks:
            try:
                await asyncio.to_thread(call)
            except self._errors.NotFound:
                raise ConfigError(f"{setting}: Pub/Sub {kind} {name} does not exist") from None
            except self._errors.PermissionDenied:  # e.g. only roles/pubsub.subscriber: cannot check, carry on
                log.warning("cannot check that Pub/Sub %s %s exists (permission denied)", kind, name)
            except (self._errors.GoogleAPICallError, self._errors.RetryError) as exc:
                raise ConfigError(f"{setting}: cannot read Pub/Sub {kind} {name}: {exc}") from None

    async def receive(self, count: int, block_s: float) -> list[Delivery]:
        def pull() -> list[Any]:
            response = self.subscriber.pull(request={"subscription": self.subscription, "max_messages": count},
                                            timeout=max(1.0, block_s), retry=None)  # the processor loops
            received = list(response.received_messages)
            if received:  # lease them for lease_s from now, not for the subscription's ack deadline
                self._modify([item.ack_id for item in received], self.lease_s)
            return received

        try:
            received = await asyncio.to_thread(pull)
        except (self._errors.DeadlineExceeded, self._errors.RetryError, self._errors.ServiceUnavailable,
                self._errors.InternalServerError, self._errors.Aborted, self._errors.Unknown) as exc:
            if not isinstance(exc, self._errors.DeadlineExceeded):  # DeadlineExceeded: nothing arrived in time
                log.warning("Pub/Sub pull failed, trying again: %s", exc)
                await asyncio.sleep(block_s)
            return []
        out = []
        for item in received:
            message_id = item.message.message_id
            self._seen[message_id] = self._seen.get(message_id, 0) + 1
            attempts = item.delivery_attempt or self._seen[message_id]
            out.append(Delivery(item.ack_id, bytes(item.message.data), attempts, {"message_id": message_id}))
        return out

    async def reclaim(self, count: int) -> list[Delivery]:
        return []  # Pub/Sub re-delivers by itself once a lease runs out

    async def heartbeat(self, deliveries: list[Delivery]) -> None:
        if deliveries:
            await asyncio.to_thread(self._modify, [d.handle for d in deliveries], self.lease_s)

    def _modify(self, ack_ids: list[str], seconds: int) -> None:
        self.subscriber.modify_ack_deadline(request={"subscription": self.subscription, "ack_ids": ack_ids,
                                                     "ack_deadline_seconds": seconds})

    async def _publish_then_ack(self, topic: str, data: bytes, delivery: Delivery, **attributes: str) -> None:
        future = self.publisher.publish(topic, data, source_message_id=delivery.extra.get("message_id", ""),
                                        **attributes)
        await asyncio.wrap_future(future)
        await asyncio.to_thread(self.subscriber.acknowledge,
                                request={"subscription": self.subscription, "ack_ids": [delivery.handle]})
        self._seen.pop(delivery.extra.get("message_id", ""), None)

    async def complete(self, delivery: Delivery, result: Result) -> bool:
        await self._publish_then_ack(self.results, result.model_dump_json().encode(), delivery, id=result.id)
        return True

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        data = orjson.dumps({"message": delivery.raw.decode(errors="replace"), "reason": reason,
                             "attempts": delivery.attempts})
        await self._publish_then_ack(self.dead, data, delivery)

    async def backlog(self) -> Backlog:
        return Backlog(None, None, None)  # read subscription/num_undelivered_messages from Cloud Monitoring

    async def close(self) -> None:
        def close() -> None:
            self.publisher.stop()  # sends what is still batched
            self.subscriber.close()

        await asyncio.to_thread(close)

