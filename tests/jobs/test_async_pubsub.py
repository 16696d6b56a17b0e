"""The async processor's Pub/Sub backend, run as ``inferplane async run`` against a server speaking the
Pub/Sub gRPC API (tests/jobs/pubsub_server.py) through ``PUBSUB_EMULATOR_HOST``: results, deadlines,
dead letters, crash re-delivery; and the server itself, through the real client."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml
from google.api_core import exceptions
from google.cloud import pubsub_v1
from jobs_support import FakeGateway, wait_for
from platform_runner import free_port
from pubsub_server import PubSubServer

from inferplane.configfile import ConfigError
from inferplane.jobs.pubsub_queue import PubSubQueue

PROJECT = "test-project"


def topic(name: str) -> str:
    return f"projects/{PROJECT}/topics/{name}"


def subscription(name: str) -> str:
    return f"projects/{PROJECT}/subscriptions/{name}"


@pytest.fixture
def pubsub(monkeypatch: pytest.MonkeyPatch) -> Iterator[PubSubServer]:
    with PubSubServer() as server:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", server.host)
        yield server


@pytest.fixture
def publisher(pubsub: PubSubServer) -> Iterator[pubsub_v1.PublisherClient]:
    client = pubsub_v1.PublisherClient()
    yield client
    client.stop()


@pytest.fixture
def subscriber(pubsub: PubSubServer) -> Iterator[pubsub_v1.SubscriberClient]:
    client = pubsub_v1.SubscriberClient()
    yield client
    client.close()


def create_jobs(publisher: pubsub_v1.PublisherClient, subscriber: pubsub_v1.SubscriberClient,
                max_delivery_attempts: int | None = None) -> None:
    """Topic ``requests`` → subscription ``jobs``; topics ``jobs-results`` (read by ``jobs-results-reader``),
    ``jobs-dead`` (the processor's dead letters) and ``jobs-policy-dead`` (Pub/Sub's own, when a policy is set)."""
    for name in ("requests", "jobs-results", "jobs-dead", "jobs-policy-dead"):
        publisher.create_topic(name=topic(name))
    request: dict[str, Any] = {"name": subscription("jobs"), "topic": topic("requests")}
    if max_delivery_attempts is not None:
        request["dead_letter_policy"] = {"dead_letter_topic": topic("jobs-policy-dead"),
                                         "max_delivery_attempts": max_delivery_attempts}
    subscriber.create_subscription(request=request)
    subscriber.create_subscription(request={"name": subscription("jobs-results-reader"),
                                            "topic": topic("jobs-results")})


def send(publisher: pubsub_v1.PublisherClient, i: int | str, deadline: float | None = None,
         content: str | None = None, raw: bytes | None = None) -> None:
    data = raw if raw is not None else orjson.dumps({
        "id": f"m-{i}", "created": time.time(), "deadline": deadline,
        "payload": {"model": "m", "messages": [{"role": "user", "content": content or f"m-{i}"}]},
        "metadata": {"tenant": "t"}})
    publisher.publish(topic("requests"), data).result(10)


def published(server: PubSubServer, name: str) -> list[dict]:
    return [json.loads(m.data) for m in server.broker.published(topic(name))]


class Worker:
    """``python -m inferplane.jobs async run --config …`` with a ``pubsub://`` source, as a user runs it."""

    def __init__(self, tmp_path: Path, gateway: FakeGateway, **settings: Any) -> None:
        self.config = tmp_path / "async.yaml"
        self.config.write_text(yaml.safe_dump({"async": {
            "source": f"pubsub://{PROJECT}/jobs", "claim_idle_s": 3,
            "dispatch": {"gateway_url": gateway.url, "backoff_base_s": 0.05, "backoff_max_s": 0.2}, **settings}}))
        self.log = tmp_path / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self, name: str = "w1") -> Worker:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "inferplane.jobs", "async", "run",
                                             "--config", str(self.config), "--consumer", name],
                                            stdout=out, stderr=subprocess.STDOUT)
        return self

    def wait_for(self, predicate: Any, timeout_s: float = 30.0) -> None:
        try:
            wait_for(lambda: predicate() or (self.process.poll() is not None and _raise_exited()), timeout_s, 0.05)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; worker log:\n{self.log.read_text()[-3000:]}") from None

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode


def _raise_exited() -> bool:
    raise AssertionError("the worker exited")


def test_server_speaks_pubsub_to_the_real_client(pubsub: PubSubServer, publisher: pubsub_v1.PublisherClient,
                                                 subscriber: pubsub_v1.SubscriberClient) -> None:
    create_jobs(publisher, subscriber, max_delivery_attempts=5)
    jobs = subscription("jobs")
    publisher.publish(topic("requests"), b"hello", kind="greeting").result(10)
    first = subscriber.pull(request={"subscription": jobs, "max_messages": 10}, timeout=5).received_messages
    assert len(first) == 1 and first[0].delivery_attempt == 1
    message = first[0].message
    assert message.data == b"hello" and message.attributes["kind"] == "greeting" and message.message_id
    assert abs(message.publish_time.timestamp() - time.time()) < 60
    subscriber.modify_ack_deadline(request={"subscription": jobs, "ack_ids": [first[0].ack_id],
                                            "ack_deadline_seconds": 0})  # nack
    second = subscriber.pull(request={"subscription": jobs, "max_messages": 10}, timeout=5).received_messages
    assert second[0].delivery_attempt == 2 and second[0].ack_id != first[0].ack_id
    subscriber.acknowledge(request={"subscription": jobs, "ack_ids": [first[0].ack_id]})  # stale: ignored
    assert pubsub.broker.outstanding(jobs) == 1
    subscriber.modify_ack_deadline(request={"subscription": jobs, "ack_ids": [second[0].ack_id],
                                            "ack_deadline_seconds": 1})
    third = subscriber.pull(request={"subscription": jobs, "max_messages": 10}, timeout=5).received_messages
    assert third[0].delivery_attempt == 3  # the one-second lease ran out
    subscriber.acknowledge(request={"subscription": jobs, "ack_ids": [third[0].ack_id]})
    assert pubsub.broker.outstanding(jobs) == 0

    publisher.publish(topic("requests"), b"poison").result(10)
    for attempt in range(1, 6):
        got = subscriber.pull(request={"subscription": jobs, "max_messages": 1}, timeout=5).received_messages
        assert got[0].delivery_attempt == attempt
        subscriber.modify_ack_deadline(request={"subscription": jobs, "ack_ids": [got[0].ack_id],
                                                "ack_deadline_seconds": 0})
    assert not subscriber.pull(request={"subscription": jobs, "max_messages": 1}, timeout=1.5).received_messages
    forwarded = pubsub.broker.published(topic("jobs-policy-dead"))
    assert [m.data for m in forwarded] == [b"poison"]
    assert forwarded[0].attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"

    reader = subscriber.get_subscription(request={"subscription": subscription("jobs-results-reader")})
    assert reader.ack_deadline_seconds == 10 and not reader.dead_letter_policy.dead_letter_topic
    publisher.publish(topic("jobs-results"), b"x").result(10)
    plain = subscriber.pull(request={"subscription": reader.name, "max_messages": 1}, timeout=5).received_messages
    assert plain[0].delivery_attempt == 0  # no dead-letter policy: Pub/Sub leaves it unset
    with pytest.raises(exceptions.NotFound):
        publisher.get_topic(request={"topic": topic("missing")})
    with pytest.raises(exceptions.AlreadyExists):
        publisher.create_topic(name=topic("requests"))
    with pytest.raises(exceptions.InvalidArgument, match="ack_deadline_seconds"):
        subscriber.create_subscription(request={"name": subscription("short"), "topic": topic("requests"),
                                                "ack_deadline_seconds": 5})


def test_results_errors_and_deadlines(tmp_path: Path, pubsub: PubSubServer, publisher: pubsub_v1.PublisherClient,
                                      subscriber: pubsub_v1.SubscriberClient) -> None:
    create_jobs(publisher, subscriber)
    for i in range(20):
        send(publisher, i)
    send(publisher, 100, deadline=time.time() - 1)      # already expired: never sent
    send(publisher, 0, raw=b'{"id": "broken"}')          # no payload: dead letter
    send(publisher, 0, raw=b"not json at all")           # dead letter
    send(publisher, 101, content="bad-request")          # a 400 is a result, not a retry
    metrics_port = free_port()
    with FakeGateway(reject_first=5, delay_s=4.5) as gateway:  # slower than the 3 s lease: heartbeats keep it
        worker = Worker(tmp_path, gateway, metrics_port=metrics_port).start()
        try:
            worker.wait_for(lambda: len(published(pubsub, "jobs-results")) >= 22
                            and len(published(pubsub, "jobs-dead")) >= 2)
            worker.wait_for(lambda: pubsub.broker.outstanding(subscription("jobs")) == 0)  # all acked
            metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        finally:
            assert worker.stop() == 0
    results = published(pubsub, "jobs-results")
    assert len(results) == 22 and all(set(r) == {"id", "status_code", "payload", "error"} for r in results)
    got = {r["id"]: r for r in results}
    assert all(got[f"m-{i}"]["status_code"] == 200 and got[f"m-{i}"]["error"] is None for i in range(20))
    assert got["m-0"]["payload"]["choices"][0]["message"]["content"] == "echo m-0"
    assert got["m-100"] == {"id": "m-100", "status_code": 504, "payload": None, "error": "DEADLINE_EXCEEDED"}
    assert "m-100" not in gateway.served
    assert got["m-101"]["status_code"] == 400 and got["m-101"]["error"] == "bad prompt"
    assert gateway.rejected == 5 and sum(gateway.served.values()) == 20  # each sent once: no lease ran out
    leases = Counter(message_id for message_id, seconds in pubsub.broker.lease_requests(subscription("jobs")))
    assert {seconds for _, seconds in pubsub.broker.lease_requests(subscription("jobs"))} == {3}  # claim_idle_s
    assert len(leases) == 24 and sum(n >= 2 for n in leases.values()) >= 20  # on receipt, then renewed
    assert {h["x-llm-d-inference-objective"] for h in gateway.headers} == {"batch"}
    requests = {m.message_id for m in pubsub.broker.published(topic("requests"))}
    for message in pubsub.broker.published(topic("jobs-results")):
        assert message.attributes["id"] == json.loads(message.data)["id"]
        assert message.attributes["source_message_id"] in requests
    dead = published(pubsub, "jobs-dead")
    assert all("invalid message" in d["reason"] and d["attempts"] == 1 for d in dead)
    assert {d["message"] for d in dead} == {'{"id": "broken"}', "not json at all"}
    assert 'inferplane_async_results_total{outcome="success"} 20.0' in metrics
    assert 'inferplane_async_results_total{outcome="deadline_exceeded"} 1.0' in metrics
    assert 'inferplane_async_retries_total{reason="429"} 5.0' in metrics
    # a consumer reads the same results through its own subscription
    read: list[str] = []
    while len(read) < 22:
        answer = subscriber.pull(request={"subscription": subscription("jobs-results-reader"), "max_messages": 50},
                                 timeout=5)
        read += [json.loads(r.message.data)["id"] for r in answer.received_messages]
        subscriber.acknowledge(request={"subscription": subscription("jobs-results-reader"),
                                        "ack_ids": [r.ack_id for r in answer.received_messages]})
    assert sorted(read) == sorted(got)


def test_failing_messages_go_to_the_dead_letter_topic(tmp_path: Path, pubsub: PubSubServer,
                                                      publisher: pubsub_v1.PublisherClient,
                                                      subscriber: pubsub_v1.SubscriberClient) -> None:
    create_jobs(publisher, subscriber, max_delivery_attempts=10)
    jobs = subscription("jobs")
    send(publisher, "redelivered")
    for _ in range(3):  # three workers took it and gave it back
        got = subscriber.pull(request={"subscription": jobs, "max_messages": 1}, timeout=5).received_messages
        subscriber.modify_ack_deadline(request={"subscription": jobs, "ack_ids": [got[0].ack_id],
                                                "ack_deadline_seconds": 0})
    send(publisher, "failing")
    with FakeGateway(always_status=500) as gateway:
        worker = Worker(tmp_path, gateway, max_attempts=3).start()
        try:
            worker.wait_for(lambda: len(published(pubsub, "jobs-dead")) >= 2)
            worker.wait_for(lambda: pubsub.broker.outstanding(jobs) == 0)
        finally:
            assert worker.stop() == 0
    dead = {json.loads(d["message"])["id"]: d for d in published(pubsub, "jobs-dead")}
    assert dead["m-redelivered"]["attempts"] == 4  # Pub/Sub's delivery_attempt
    assert dead["m-redelivered"]["reason"] == "delivered 4 times (max 3)"
    assert dead["m-failing"]["reason"] == "status 500 after 3 attempts"  # 1 delivery + 2 answers of 500
    assert len(gateway.headers) == 2  # only m-failing was sent
    assert not published(pubsub, "jobs-results") and not published(pubsub, "jobs-policy-dead")


def test_worker_killed_with_sigkill_loses_nothing(tmp_path: Path, pubsub: PubSubServer,
                                                  publisher: pubsub_v1.PublisherClient,
                                                  subscriber: pubsub_v1.SubscriberClient) -> None:
    create_jobs(publisher, subscriber)
    n = 300
    futures = [publisher.publish(topic("requests"), orjson.dumps({
        "id": f"m-{i}", "payload": {"model": "m", "messages": [{"role": "user", "content": f"m-{i}"}]}}))
        for i in range(n)]
    for future in futures:
        future.result(10)
    with FakeGateway(delay_s=0.05) as gateway:
        worker = Worker(tmp_path, gateway, max_in_flight=16)
        worker.start("w1")
        try:
            for k, target in enumerate((n // 4, n // 2)):
                worker.wait_for(lambda target=target: len(pubsub.broker.published(topic("jobs-results"))) >= target)
                worker.kill()  # SIGKILL: up to 16 messages leased and unacked
                worker.start(f"w{k + 2}")
            worker.wait_for(lambda: pubsub.broker.outstanding(subscription("jobs")) == 0, 45)
        finally:
            assert worker.stop() == 0
    results = published(pubsub, "jobs-results")
    ids = Counter(r["id"] for r in results)
    assert set(ids) == {f"m-{i}" for i in range(n)}  # nothing lost
    assert all(r["status_code"] == 200 and r["payload"]["choices"][0]["message"]["content"] == f"echo {r['id']}"
               for r in results)
    # at-least-once: a message whose result was published but not acked before the kill is sent again
    duplicates = sum(ids.values()) - n
    assert duplicates <= 2 * 16, ids.most_common(3)
    assert sum(gateway.served.values()) >= n


def test_missing_subscription_or_topic_is_a_clear_error(pubsub: PubSubServer,
                                                        publisher: pubsub_v1.PublisherClient,
                                                        subscriber: pubsub_v1.SubscriberClient) -> None:
    answer = subprocess.run([sys.executable, "-m", "inferplane.jobs", "async", "run", "--source",
                             f"pubsub://{PROJECT}/nosuch"], check=False, capture_output=True, text=True,
                            timeout=60)
    assert answer.returncode == 2, answer.stderr
    assert (f"source: Pub/Sub subscription {subscription('nosuch')} does not exist" in answer.stderr
            and "Traceback" not in answer.stderr)
    create_jobs(publisher, subscriber)
    queue = PubSubQueue(f"pubsub://{PROJECT}/jobs?results=elsewhere")
    with pytest.raises(ConfigError, match=f"results: Pub/Sub topic {topic('elsewhere')} does not exist"):
        asyncio.run(queue.setup())
    asyncio.run(queue.close())
    with pytest.raises(ConfigError, match="source: expected pubsub://PROJECT/SUBSCRIPTION"):
        PubSubQueue("pubsub://only-a-project")
    with pytest.raises(ConfigError, match="claim_idle_s"):
        PubSubQueue(f"pubsub://{PROJECT}/jobs", lease_s=601)


def test_unreachable_pubsub_is_retried_not_fatal(pubsub: PubSubServer, publisher: pubsub_v1.PublisherClient,
                                                subscriber: pubsub_v1.SubscriberClient) -> None:
    create_jobs(publisher, subscriber)

    async def pull_while_down() -> list:
        queue = PubSubQueue(f"pubsub://{PROJECT}/jobs", lease_s=5)
        await queue.setup()
        pubsub.stop()
        try:
            return await queue.receive(4, block_s=0.2)  # logged, answered empty: the processor loops
        finally:
            await queue.close()

    assert asyncio.run(pull_while_down()) == []
