"""In-memory Pub/Sub semantics behind the test server: topics, subscriptions, leases, redelivery, dead letters.

What it models (as documented for Google Cloud Pub/Sub): a subscription receives the messages published
to its topic after it was created; each delivery gets a fresh ack ID and a lease of the subscription's
ack deadline; an expired lease or a ``ModifyAckDeadline`` to 0 puts the message back; an ack through a
stale ack ID is ignored (at-least-once: the message comes again); ``delivery_attempt`` is filled only
when the subscription has a dead-letter policy, and a message delivered more than
``max_delivery_attempts`` times is forwarded to the dead-letter topic instead. Ordering keys,
filters, exactly-once delivery, retry policies, push and export subscriptions are refused.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from google.pubsub_v1 import types

PubsubMessage = types.PubsubMessage.pb()
ReceivedMessage = types.ReceivedMessage.pb()
Subscription = types.Subscription.pb()
Topic = types.Topic.pb()

_RESOURCE_ID = re.compile(r"[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}")
DEFAULT_ACK_DEADLINE_S = 10
DEFAULT_MAX_DELIVERY_ATTEMPTS = 5
_UNSUPPORTED_SUBSCRIPTION_FIELDS = ("push_config", "bigquery_config", "cloud_storage_config", "bigtable_config",
                                    "retry_policy", "filter", "enable_message_ordering",
                                    "enable_exactly_once_delivery", "message_transforms")


class PubSubError(Exception):
    """A failed call: the gRPC status code and message the server answers with."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_name(name: str, kind: str) -> tuple[str, str]:
    """``projects/P/<kind>/ID`` → (P, ID); INVALID_ARGUMENT otherwise."""
    parts = name.split("/")
    if (len(parts) != 4 or parts[0] != "projects" or not parts[1] or parts[2] != kind
            or not _RESOURCE_ID.fullmatch(parts[3]) or parts[3].startswith("goog")):
        raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Invalid resource name given (name={name}); expected projects/PROJECT/{kind}/ID")
    return parts[1], parts[3]


@dataclass
class _Lease:
    message_id: str
    expires: float


@dataclass
class _SubscriptionState:
    config: Subscription
    messages: dict[str, PubsubMessage] = field(default_factory=dict)  # not yet acknowledged
    ready: deque[str] = field(default_factory=deque)  # waiting for a delivery
    attempts: Counter[str] = field(default_factory=Counter)
    leases: dict[str, _Lease] = field(default_factory=dict)  # ack ID → leased message
    lease_requests: list[tuple[str, int]] = field(default_factory=list)  # (message ID, seconds) per ModifyAckDeadline

    @property
    def has_dead_letter_policy(self) -> bool:
        return bool(self.config.dead_letter_policy.dead_letter_topic)


class Broker:
    """All state, one lock; ``pull`` waits on a condition woken by publishes, nacks and lease expiry."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._topics: dict[str, Topic] = {}
        self._log: dict[str, list[PubsubMessage]] = {}
        self._subs: dict[str, _SubscriptionState] = {}
        self._message_ids = itertools.count(1)
        self._ack_ids = itertools.count(1)
        self._closed = False

    # topics
    def create_topic(self, topic: Topic) -> Topic:
        check_name(topic.name, "topics")
        if topic.HasField("schema_settings") or topic.HasField("ingestion_data_source_settings"):
            raise PubSubError(grpc.StatusCode.UNIMPLEMENTED, "schemas and ingestion are not implemented here")
        with self._cond:
            if topic.name in self._topics:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, f"Topic already exists: {topic.name}")
            stored = Topic(name=topic.name, labels=dict(topic.labels), state=Topic.State.ACTIVE)
            self._topics[topic.name] = stored
            self._log[topic.name] = []
            return stored

    def get_topic(self, name: str) -> Topic:
        check_name(name, "topics")
        with self._cond:
            return self._topic(name)

    def publish(self, topic: str, messages: list[PubsubMessage]) -> list[str]:
        check_name(topic, "topics")
        if not messages:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "The request contains no messages")
        for message in messages:
            if not message.data and not message.attributes:
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT,
                                  "A message must contain data or at least one attribute")
        with self._cond:
            self._topic(topic)
            return [self._publish_locked(topic, message) for message in messages]

    # subscriptions
    def create_subscription(self, request: Subscription) -> Subscription:
        check_name(request.name, "subscriptions")
        check_name(request.topic, "topics")
        for name in _UNSUPPORTED_SUBSCRIPTION_FIELDS:
            if _is_set(request, name):
                raise PubSubError(grpc.StatusCode.UNIMPLEMENTED, f"Subscription.{name} is not implemented here")
        deadline = request.ack_deadline_seconds or DEFAULT_ACK_DEADLINE_S
        if not 10 <= deadline <= 600:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Invalid ack_deadline_seconds {deadline}: must be between 10 and 600")
        config = Subscription(name=request.name, topic=request.topic, ack_deadline_seconds=deadline,
                              labels=dict(request.labels), state=Subscription.State.ACTIVE)
        if request.dead_letter_policy.dead_letter_topic:
            policy = request.dead_letter_policy
            check_name(policy.dead_letter_topic, "topics")
            attempts = policy.max_delivery_attempts or DEFAULT_MAX_DELIVERY_ATTEMPTS
            if not 5 <= attempts <= 100:
                raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT,
                                  f"Invalid max_delivery_attempts {attempts}: must be between 5 and 100")
            config.dead_letter_policy.dead_letter_topic = policy.dead_letter_topic
            config.dead_letter_policy.max_delivery_attempts = attempts
        with self._cond:
            if request.name in self._subs:
                raise PubSubError(grpc.StatusCode.ALREADY_EXISTS, f"Subscription already exists: {request.name}")
            self._topic(request.topic)
            self._subs[request.name] = _SubscriptionState(config)
            return config

    def get_subscription(self, name: str) -> Subscription:
        check_name(name, "subscriptions")
        with self._cond:
            return self._sub(name).config

    def pull(self, name: str, max_messages: int, return_immediately: bool, wait_s: float) -> list[ReceivedMessage]:
        """Up to ``max_messages``; waits up to ``wait_s`` for at least one, then answers empty."""
        check_name(name, "subscriptions")
        if max_messages <= 0:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT, "max_messages must be greater than 0")
        end = time.monotonic() + max(0.0, wait_s)
        with self._cond:
            while True:
                sub = self._sub(name)
                now = time.monotonic()
                self._expire(sub, now)
                out = self._deliver(sub, max_messages, now)
                if out or return_immediately or self._closed or now >= end:
                    return out
                wake = min((lease.expires for lease in sub.leases.values()), default=end)
                self._cond.wait(max(0.001, min(end, wake) - now))

    def acknowledge(self, name: str, ack_ids: list[str]) -> None:
        check_name(name, "subscriptions")
        with self._cond:
            sub = self._sub(name)
            self._expire(sub, time.monotonic())
            for ack_id in ack_ids:
                lease = sub.leases.pop(ack_id, None)
                if lease is not None:
                    sub.messages.pop(lease.message_id, None)
                    sub.attempts.pop(lease.message_id, None)

    def modify_ack_deadline(self, name: str, ack_ids: list[str], seconds: int) -> None:
        check_name(name, "subscriptions")
        if not 0 <= seconds <= 600:
            raise PubSubError(grpc.StatusCode.INVALID_ARGUMENT,
                              f"Invalid ack_deadline_seconds {seconds}: must be between 0 and 600")
        with self._cond:
            sub = self._sub(name)
            now = time.monotonic()
            self._expire(sub, now)
            for ack_id in ack_ids:
                lease = sub.leases.get(ack_id)
                if lease is None:
                    continue
                sub.lease_requests.append((lease.message_id, seconds))
                if seconds == 0:  # a nack: deliver again now
                    del sub.leases[ack_id]
                    sub.ready.append(lease.message_id)
                else:
                    lease.expires = now + seconds
            self._cond.notify_all()

    # for assertions
    def published(self, topic: str) -> list[PubsubMessage]:
        """Every message published to ``topic`` so far, in order."""
        with self._cond:
            return list(self._log[topic])

    def outstanding(self, subscription: str) -> int:
        """Messages of the subscription not yet acknowledged (waiting or leased)."""
        with self._cond:
            return len(self._sub(subscription).messages)

    def lease_requests(self, subscription: str) -> list[tuple[str, int]]:
        """``(message ID, seconds)`` for every ModifyAckDeadline that hit a live lease, in order."""
        with self._cond:
            return list(self._sub(subscription).lease_requests)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # internals (lock held)
    def _topic(self, name: str) -> Topic:
        if name not in self._topics:
            raise PubSubError(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
        return self._topics[name]

    def _sub(self, name: str) -> _SubscriptionState:
        if name not in self._subs:
            raise PubSubError(grpc.StatusCode.NOT_FOUND, f"Resource not found (resource={name.rsplit('/', 1)[-1]}).")
        return self._subs[name]

    def _publish_locked(self, topic: str, message: PubsubMessage) -> str:
        stored = PubsubMessage()
        stored.CopyFrom(message)
        stored.message_id = str(next(self._message_ids))
        stored.publish_time.CopyFrom(_now())
        self._log[topic].append(stored)
        for sub in self._subs.values():
            if sub.config.topic == topic:
                sub.messages[stored.message_id] = stored
                sub.ready.append(stored.message_id)
        self._cond.notify_all()
        return stored.message_id

    def _expire(self, sub: _SubscriptionState, now: float) -> None:
        for ack_id, lease in list(sub.leases.items()):
            if lease.expires <= now:
                del sub.leases[ack_id]
                sub.ready.append(lease.message_id)

    def _deliver(self, sub: _SubscriptionState, max_messages: int, now: float) -> list[ReceivedMessage]:
        out: list[ReceivedMessage] = []
        while sub.ready and len(out) < max_messages:
            message_id = sub.ready.popleft()
            sub.attempts[message_id] += 1
            policy = sub.config.dead_letter_policy
            if (sub.has_dead_letter_policy and sub.attempts[message_id] > policy.max_delivery_attempts
                    and policy.dead_letter_topic in self._topics):
                self._forward_dead_letter(sub, message_id)
                continue
            ack_id = f"ack-{next(self._ack_ids)}"
            sub.leases[ack_id] = _Lease(message_id, now + sub.config.ack_deadline_seconds)
            out.append(ReceivedMessage(ack_id=ack_id, message=sub.messages[message_id],
                                       delivery_attempt=sub.attempts[message_id] if sub.has_dead_letter_policy else 0))
        return out

    def _forward_dead_letter(self, sub: _SubscriptionState, message_id: str) -> None:
        message = sub.messages.pop(message_id)
        project, sub_id = check_name(sub.config.name, "subscriptions")
        forwarded = PubsubMessage(data=message.data, attributes=dict(message.attributes))
        forwarded.attributes.update({
            "CloudPubSubDeadLetterSourceDeliveryCount": str(sub.attempts.pop(message_id) - 1),
            "CloudPubSubDeadLetterSourceSubscription": sub_id,
            "CloudPubSubDeadLetterSourceSubscriptionProject": project,
            "CloudPubSubDeadLetterSourceTopicPublishTime": message.publish_time.ToJsonString()})
        self._publish_locked(sub.config.dead_letter_policy.dead_letter_topic, forwarded)


def _is_set(message: Subscription, name: str) -> bool:
    value = getattr(message, name)
    if hasattr(value, "ListFields"):
        return bool(value.ListFields())
    return bool(value)


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp
