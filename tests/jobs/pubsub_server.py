"""A Pub/Sub server for tests: the real ``google.pubsub.v1`` gRPC API on a loopback port, in a thread.

Not Google's emulator (Java, gcloud: not installable here) but the same wire protocol: the unmodified
``google-cloud-pubsub`` client reaches it through ``PUBSUB_EMULATOR_HOST=127.0.0.1:PORT``. Requests and
responses are the protobuf messages the client ships (``google.pubsub_v1.types``); the semantics live
in :mod:`pubsub_broker`. Implemented: Publisher CreateTopic, GetTopic, Publish; Subscriber
CreateSubscription, GetSubscription, Pull, Acknowledge, ModifyAckDeadline. Anything else (StreamingPull
included) answers UNIMPLEMENTED, as gRPC does for an unknown method.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import grpc
from google.protobuf.empty_pb2 import Empty
from google.pubsub_v1 import types
from pubsub_broker import Broker, PubSubError

MAX_PULL_WAIT_S = 10.0  # a Pull with nothing to deliver answers empty after this (or just before its deadline)


def _pb(message_type: Any) -> Any:
    """The protobuf class behind a proto-plus type (``Empty`` is protobuf already)."""
    return message_type.pb() if hasattr(message_type, "pb") else message_type


def _unary(handler: Callable[[Any, grpc.ServicerContext], Any], request_type: Any,
           response_type: Any) -> grpc.RpcMethodHandler:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return handler(request, context)
        except PubSubError as exc:
            context.abort(exc.code, exc.message)

    return grpc.unary_unary_rpc_method_handler(call, request_deserializer=_pb(request_type).FromString,
                                               response_serializer=_pb(response_type).SerializeToString)


class PubSubServer:
    """``google.pubsub.v1.Publisher`` and ``Subscriber`` on ``127.0.0.1:<port>``, backed by a :class:`Broker`."""

    def __init__(self) -> None:
        self.broker = Broker()
        b = self.broker
        publisher = {
            "CreateTopic": _unary(lambda r, c: b.create_topic(r), types.Topic, types.Topic),
            "GetTopic": _unary(lambda r, c: b.get_topic(r.topic), types.GetTopicRequest, types.Topic),
            "Publish": _unary(self._publish, types.PublishRequest, types.PublishResponse),
        }
        subscriber = {
            "CreateSubscription": _unary(lambda r, c: b.create_subscription(r), types.Subscription, types.Subscription),
            "GetSubscription": _unary(lambda r, c: b.get_subscription(r.subscription), types.GetSubscriptionRequest,
                                      types.Subscription),
            "Pull": _unary(self._pull, types.PullRequest, types.PullResponse),
            "Acknowledge": _unary(self._acknowledge, types.AcknowledgeRequest, Empty),
            "ModifyAckDeadline": _unary(self._modify_ack_deadline, types.ModifyAckDeadlineRequest, Empty),
        }
        self._server = grpc.server(ThreadPoolExecutor(max_workers=16, thread_name_prefix="pubsub-test-server"))
        self._server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("google.pubsub.v1.Publisher", publisher),
            grpc.method_handlers_generic_handler("google.pubsub.v1.Subscriber", subscriber)))
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.host = f"127.0.0.1:{self.port}"

    def _publish(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _pb(types.PublishResponse)(message_ids=self.broker.publish(request.topic, list(request.messages)))

    def _acknowledge(self, request: Any, context: grpc.ServicerContext) -> Empty:
        self.broker.acknowledge(request.subscription, list(request.ack_ids))
        return Empty()

    def _modify_ack_deadline(self, request: Any, context: grpc.ServicerContext) -> Empty:
        self.broker.modify_ack_deadline(request.subscription, list(request.ack_ids), request.ack_deadline_seconds)
        return Empty()

    def _pull(self, request: Any, context: grpc.ServicerContext) -> Any:
        remaining = context.time_remaining()
        wait_s = MAX_PULL_WAIT_S if remaining is None else min(MAX_PULL_WAIT_S, remaining - 0.1)
        received = self.broker.pull(request.subscription, request.max_messages, request.return_immediately, wait_s)
        return _pb(types.PullResponse)(received_messages=received)

    def start(self) -> Self:
        self._server.start()
        return self

    def stop(self) -> None:
        self.broker.close()
        self._server.stop(grace=1).wait(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
