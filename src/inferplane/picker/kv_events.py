"""Which prompt blocks each model server really holds, from its KV-cache events (vLLM's format).

Model servers publish every change of their prefix cache as msgpack batches on a ZMQ PUB socket
(vLLM's ``--kv-events-config``, the simulator's ``sim.kv_events``; see
:mod:`inferplane.sim.kv_events` for the wire format): ``BlockStored`` (engine block hashes, the
parent's engine hash, the blocks' token ids, block size, LoRA, medium), ``BlockRemoved`` and
``AllBlocksCleared``, each batch numbered by a sequence number.

:class:`KVBlockIndex` does not reproduce the engine's block hash (vLLM's depends on its version,
its hash algorithm and a per-process seed). It keeps its own *chain hash* over the token ids the
events carry: ``chain[i] = xxh3_64(chain[i-1] ‖ block tokens)``, starting from a root that depends
on the LoRA adapter (an adapter's KV never serves the base model). Per endpoint it maps each engine
hash to its chain hash (the parent's chain hash found through the event's parent engine hash), and
counts which chain hashes are resident; ``BlockRemoved`` finds the block by its engine hash. The
scorer hashes a request's tokens the same way and looks the hashes up, so both sides meet without
knowing the engine's hash function.

The index only ever holds a *subset* of what a server caches: a block whose parent it never saw is
left out, and any doubt about the stream (a sequence gap, a reconnect, a server restart, an
undecodable batch) drops the endpoint's whole index. Missing blocks cost a cache hit; blocks
claimed but gone would send requests to the wrong place.

:class:`KVEventSubscriber` keeps one ZMQ SUB socket per endpoint of the picker's datastore (the
endpoint's IP and the configured port, or an explicit address), on the picker's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from array import array
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import xxhash

from inferplane.picker.endpoints import Datastore

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from inferplane.picker.config import KVEventsConfig, PickerConfig
    from inferplane.picker.scheduling.profile import Scheduler

log = logging.getLogger(__name__)

#: An engine's block hash: an int in older vLLM and the simulator, bytes in vLLM ≥ 0.11.
EngineHash = int | bytes

_ROOT_SEED = b"inferplane-precise-prefix"
_xxh3_64 = xxhash.xxh3_64_intdigest


def chain_root(lora_name: str | None) -> int:
    """The parent of a request's first block: one root for the base model, one per LoRA adapter."""
    if lora_name is None:
        return _xxh3_64(_ROOT_SEED)
    return _xxh3_64(_ROOT_SEED + b"\x00lora\x00" + lora_name.encode())


def _token_bytes(tokens: Sequence[int]) -> bytes:
    """Token ids as uint32 little-endian (ids outside 32 bits, never seen in practice, are masked)."""
    try:
        return array("I", tokens).tobytes()
    except OverflowError:
        return array("I", [t & 0xFFFFFFFF for t in tokens]).tobytes()


def chain_hash(parent: int, tokens: Sequence[int]) -> int:
    """The chain hash of one block of ``tokens`` after the block whose chain hash is ``parent``."""
    return _xxh3_64(parent.to_bytes(8, "little") + _token_bytes(tokens))


def chain_hashes(
    token_ids: Sequence[int], block_size: int, lora_name: str | None = None, max_blocks: int | None = None
) -> list[int]:
    """Chain hashes of the full blocks of ``token_ids`` (at most ``max_blocks``); a partial tail has none."""
    count = len(token_ids) // block_size
    if max_blocks is not None:
        count = min(count, max_blocks)
    return _chain(chain_root(lora_name), token_ids[: count * block_size], block_size)


def _chain(parent: int, token_ids: Sequence[int], block_size: int) -> list[int]:
    """Chain hashes of the consecutive full blocks of ``token_ids`` after ``parent`` (one
    conversion to bytes, then a slice per block: the same values as :func:`chain_hash`)."""
    data = _token_bytes(token_ids)
    step = 4 * block_size
    digest = _xxh3_64
    hashes: list[int] = []
    append = hashes.append
    for start in range(0, (len(token_ids) // block_size) * step, step):
        parent = digest(parent.to_bytes(8, "little") + data[start : start + step])
        append(parent)
    return hashes


class EndpointBlocks:
    """One endpoint's resident blocks: engine hash → (chain hash, media bits); chain hash → count."""

    __slots__ = ("block_size", "chains", "engine")

    def __init__(self) -> None:
        self.engine: dict[EngineHash, tuple[int, int]] = {}
        #: How many engine blocks hold each chain hash (two engine blocks can share one: the
        #: engine's hash may fold in keys the events do not carry, such as a cache salt).
        self.chains: dict[int, int] = {}
        self.block_size: int | None = None


class KVBlockIndex:
    """Per endpoint, the chain hashes of the blocks its KV-cache events say are resident."""

    def __init__(self, max_blocks_per_endpoint: int = 1_000_000) -> None:
        self.max_blocks_per_endpoint = max_blocks_per_endpoint
        self._endpoints: dict[str, EndpointBlocks] = {}
        self._media: dict[str, int] = {}
        #: Called with ``(address, chain hashes)`` of newly resident blocks (the scorer confirms its
        #: speculative entries with them).
        self.on_stored: list[Callable[[str, list[int]], None]] = []
        #: Blocks left out because their parent block was unknown, and events of unknown types.
        self.orphaned_blocks = 0
        self.unknown_events = 0

    # -- reads ------------------------------------------------------------------------------------

    def resident(self, address: str) -> Container[int]:
        """The chain hashes resident at ``address`` (empty when nothing is known)."""
        blocks = self._endpoints.get(address)
        return blocks.chains if blocks is not None else ()

    def block_size(self, address: str) -> int | None:
        """The block size ``address``'s events use (None before its first ``BlockStored``)."""
        blocks = self._endpoints.get(address)
        return blocks.block_size if blocks is not None else None

    def matched_blocks(self, address: str, hashes: Sequence[int]) -> int:
        """How many leading ``hashes`` are resident at ``address`` (the longest cached prefix)."""
        resident = self.resident(address)
        count = 0
        for h in hashes:
            if h not in resident:
                break
            count += 1
        return count

    def size(self, address: str | None = None) -> int:
        """Blocks indexed at ``address`` (all endpoints when None)."""
        if address is not None:
            blocks = self._endpoints.get(address)
            return len(blocks.engine) if blocks is not None else 0
        return sum(len(blocks.engine) for blocks in self._endpoints.values())

    def addresses(self) -> list[str]:
        return list(self._endpoints)

    # -- events -----------------------------------------------------------------------------------

    def apply(self, address: str, events: Iterable[Any]) -> None:
        """Apply one batch of wire events (``["BlockStored", ...]`` lists, vLLM's array-like structs)."""
        for event in events:
            if not isinstance(event, (list, tuple)) or not event:
                self.unknown_events += 1
                continue
            kind = event[0]
            if kind == "BlockStored":
                fields = [*event[1:8], *([None] * (8 - len(event)))]
                hashes, parent, token_ids, block_size, _lora_id, medium, lora_name = fields
                self.store(address, hashes or [], parent, token_ids or [], block_size or 0, lora_name, medium)
            elif kind == "BlockRemoved":
                self.remove(address, event[1] if len(event) > 1 else [], event[2] if len(event) > 2 else None)
            elif kind == "AllBlocksCleared":
                self.clear(address)
            else:
                self.unknown_events += 1

    def store(
        self,
        address: str,
        engine_hashes: Sequence[EngineHash],
        parent: EngineHash | None,
        token_ids: Sequence[int],
        block_size: int,
        lora_name: str | None = None,
        medium: str | None = None,
    ) -> None:
        """``BlockStored``: consecutive blocks after ``parent`` (None: the first blocks of a prompt)."""
        if block_size <= 0 or not engine_hashes:
            return
        blocks = self._endpoints.get(address)
        if blocks is None:
            blocks = self._endpoints[address] = EndpointBlocks()
        blocks.block_size = block_size
        if parent is None:
            parent_chain = chain_root(lora_name)
        else:
            known = blocks.engine.get(parent)
            if known is None:  # its prefix is unknown, so is its chain hash: leave it out
                self.orphaned_blocks += len(engine_hashes)
                return
            parent_chain = known[0]
        count = min(len(engine_hashes), len(token_ids) // block_size)
        bit = self._bit(medium)
        engine, chains = blocks.engine, blocks.chains
        added: list[int] = []
        hashes = _chain(parent_chain, token_ids[: count * block_size], block_size)
        for key, chain in zip(engine_hashes[:count], hashes, strict=False):
            old = engine.get(key)
            if old is not None:
                if old[0] == chain:
                    engine[key] = (chain, old[1] | bit)  # the same block on one more medium
                    continue
                self._drop(blocks, key, old[0])
            engine[key] = (chain, bit)
            chains[chain] = chains.get(chain, 0) + 1
            added.append(chain)
        limit = self.max_blocks_per_endpoint
        while len(engine) > limit:  # removals went missing, or a tier is larger: oldest first
            key = next(iter(engine))
            self._drop(blocks, key, engine[key][0])
        if added:
            for listener in self.on_stored:
                listener(address, added)

    def remove(self, address: str, engine_hashes: Iterable[EngineHash], medium: str | None = None) -> None:
        """``BlockRemoved``: the blocks left ``medium`` (every medium when None)."""
        blocks = self._endpoints.get(address)
        if blocks is None:
            return
        bit = self._media.get(medium) if medium is not None else None
        if medium is not None and bit is None:
            return  # no block was ever stored on that medium
        engine = blocks.engine
        for key in engine_hashes:
            entry = engine.get(key)
            if entry is None:
                continue
            if bit is not None:
                left = entry[1] & ~bit
                if left:
                    engine[key] = (entry[0], left)
                    continue
            self._drop(blocks, key, entry[0])

    def clear(self, address: str) -> None:
        """``AllBlocksCleared``, or a reason not to trust the index any more: nothing is known."""
        blocks = self._endpoints.get(address)
        if blocks is not None:
            blocks.engine.clear()
            blocks.chains.clear()

    def forget(self, address: str) -> None:
        """The endpoint left the pool."""
        self._endpoints.pop(address, None)

    def _bit(self, medium: str | None) -> int:
        name = medium or "GPU"
        bit = self._media.get(name)
        if bit is None:
            bit = self._media[name] = 1 << len(self._media)
        return bit

    @staticmethod
    def _drop(blocks: EndpointBlocks, key: EngineHash, chain: int) -> None:
        del blocks.engine[key]
        left = blocks.chains.get(chain, 0) - 1
        if left > 0:
            blocks.chains[chain] = left
        else:
            blocks.chains.pop(chain, None)


@dataclass(slots=True)
class EndpointFeed:
    """One endpoint's event stream: checks sequence numbers, decodes batches, applies them.

    No sockets here: :class:`KVEventSubscriber` hands it the frames it receives. Any doubt drops
    the endpoint's index (:meth:`KVBlockIndex.clear`) and is counted in ``resets`` by reason.
    """

    address: str
    index: KVBlockIndex
    last_sequence: int | None = None
    batches: int = 0
    resets: dict[str, int] = field(default_factory=dict)
    on_reset: Callable[[str, str], None] | None = None

    def message(self, frames: Sequence[bytes]) -> None:
        """A ZMQ message: ``[topic, sequence (8 bytes big-endian), msgpack batch]``."""
        if len(frames) != 3 or len(frames[1]) != 8:
            self.reset("malformed")
            return
        sequence = int.from_bytes(frames[1], "big")
        last = self.last_sequence
        if last is not None and sequence != last + 1:
            # a gap (dropped by a high-water mark, lost in a reconnect) or a restarted publisher
            self.reset("gap" if sequence > last else "restart")
        self.last_sequence = sequence
        self.batches += 1
        try:
            self.index.apply(self.address, _decode(frames[2]))
        except Exception:  # noqa: BLE001 - not msgpack, or an event whose fields make no sense
            self.reset("undecodable")

    def disconnected(self) -> None:
        """The connection dropped: events may have been lost meanwhile."""
        self.reset("disconnected")
        self.last_sequence = None

    def reset(self, reason: str) -> None:
        self.index.clear(self.address)
        self.resets[reason] = self.resets.get(reason, 0) + 1
        log.info("KV-event index of %s dropped: %s", self.address, reason)
        if self.on_reset is not None:
            self.on_reset(self.address, reason)


def _decode(payload: bytes) -> list[Any]:
    """The events of a msgpack ``[ts, [event, ...], data_parallel_rank]`` batch."""
    import msgpack  # type: ignore[import-untyped]

    batch = msgpack.unpackb(payload)
    if not isinstance(batch, (list, tuple)) or len(batch) < 2 or not isinstance(batch[1], (list, tuple)):
        raise ValueError("not a KV event batch")
    return list(batch[1])


class KVEventSubscriber:
    """Subscribes to every endpoint of the datastore and keeps :attr:`index` up to date.

    :meth:`sync` follows the endpoint list (call it whenever endpoints join or leave); each endpoint
    gets a task reading its SUB socket and the socket's monitor (a disconnect drops its index).
    """

    def __init__(
        self,
        index: KVBlockIndex,
        datastore: Datastore,
        config: KVEventsConfig,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.index = index
        self.datastore = datastore
        self.config = config
        self.feeds: dict[str, EndpointFeed] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[asyncio.Task[None]] = set()  # cancelled, their sockets not closed yet
        self._context: Any = None
        self._started = False
        self._metrics = _SubscriberMetrics(self, registry) if registry is not None else None

    def zmq_address(self, address: str) -> str:
        """Where ``address`` (``ip:port``) publishes: the explicit map, else ``tcp://ip:<port>``."""
        explicit = self.config.addresses.get(address)
        if explicit is not None:
            return explicit
        host = address.rpartition(":")[0]
        return f"tcp://{host}:{self.config.port}"

    def start(self) -> None:
        """Subscribe to the current endpoints (on the running event loop)."""
        import zmq.asyncio

        self._context = zmq.asyncio.Context()
        self._started = True
        self.sync()

    def sync(self) -> None:
        """Subscribe to endpoints that joined; unsubscribe from (and forget) those that left."""
        if not self._started:
            return
        wanted = {ep.address for ep in self.datastore.all()}
        for address in [a for a in self._tasks if a not in wanted]:
            task = self._tasks.pop(address)
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)
            self.feeds.pop(address, None)
            self.index.forget(address)
        for address in wanted - self._tasks.keys():
            feed = EndpointFeed(address, self.index, on_reset=self._metrics.reset if self._metrics else None)
            self.feeds[address] = feed
            self._tasks[address] = asyncio.create_task(self._follow(feed), name=f"kv events {address}")

    async def close(self) -> None:
        """Unsubscribe from everything."""
        self._started = False
        tasks = [*self._tasks.values(), *self._stopping]
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._context is not None:
            self._context.destroy(linger=0)  # every socket is closed by now; never block the loop
            self._context = None

    async def _follow(self, feed: EndpointFeed) -> None:
        """Read ``feed``'s endpoint until cancelled; an unexpected error resubscribes after a pause."""
        while True:
            try:
                await self._read(feed)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("KV-event subscription to %s failed; resubscribing", feed.address)
                feed.reset("failed")
                feed.last_sequence = None
                await asyncio.sleep(self.config.retry_interval)

    async def _read(self, feed: EndpointFeed) -> None:
        import zmq
        import zmq.asyncio
        from zmq.utils.monitor import parse_monitor_message

        target = self.zmq_address(feed.address)
        socket = self._context.socket(zmq.SUB)
        socket.setsockopt(zmq.LINGER, 0)
        socket.setsockopt(zmq.RCVHWM, self.config.receive_hwm)
        socket.setsockopt(zmq.SUBSCRIBE, self.config.topic.encode())
        if "[" in target:
            socket.setsockopt(zmq.IPV6, 1)
        monitor = socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        poller = zmq.asyncio.Poller()
        poller.register(socket, zmq.POLLIN)
        poller.register(monitor, zmq.POLLIN)
        try:
            socket.connect(target)
            log.info("subscribed to KV events of %s at %s", feed.address, target)
            while True:
                for ready, _ in await poller.poll():
                    if ready is monitor:
                        event = parse_monitor_message(await monitor.recv_multipart())
                        if event["event"] == zmq.EVENT_DISCONNECTED:
                            feed.disconnected()
                        continue
                    while True:  # everything queued, then poll again
                        try:
                            frames = await socket.recv_multipart(flags=zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        feed.message(frames)
        finally:
            with contextlib.suppress(Exception):
                socket.disable_monitor()
            monitor.close(linger=0)
            socket.close(linger=0)


class _SubscriberMetrics:
    """``inferplane_picker_kv_event_*`` series: batches, index resets, indexed blocks per endpoint."""

    def __init__(self, subscriber: KVEventSubscriber, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter
        from prometheus_client.core import GaugeMetricFamily

        self.resets = Counter("inferplane_picker_kv_index_resets",
                              "KV-event indexes dropped per endpoint and reason (gap, restart, disconnected, ...).",
                              ("endpoint", "reason"), registry=registry)

        class _Collector:
            def collect(self) -> Iterable[GaugeMetricFamily]:
                blocks = GaugeMetricFamily("inferplane_picker_kv_index_blocks",
                                           "Blocks the KV-event index holds per endpoint.", labels=["endpoint"])
                batches = GaugeMetricFamily("inferplane_picker_kv_event_batches",
                                            "KV-event batches received per endpoint since it joined.",
                                            labels=["endpoint"])
                for address, feed in list(subscriber.feeds.items()):
                    blocks.add_metric([address], subscriber.index.size(address))
                    batches.add_metric([address], feed.batches)
                yield blocks
                yield batches

        registry.register(_Collector())  # type: ignore[arg-type]

    def reset(self, address: str, reason: str) -> None:
        self.resets.labels(address, reason).inc()


def attach_kv_events(
    config: PickerConfig, datastore: Datastore, scheduler: Scheduler, registry: CollectorRegistry | None = None
) -> KVEventSubscriber | None:
    """A subscriber feeding the profile's precise prefix-cache scorers; None when it has none.

    Call :meth:`KVEventSubscriber.start` on the event loop, :meth:`~KVEventSubscriber.sync` when
    endpoints change and :meth:`~KVEventSubscriber.close` at the end.
    """
    from inferplane.picker.scheduling.precise_prefix import PrecisePrefixCacheScorer

    scorers = [scorer for scorer, _ in scheduler.scorers if isinstance(scorer, PrecisePrefixCacheScorer)]
    if not scorers:
        return None
    index = KVBlockIndex(config.kv_events.max_blocks_per_endpoint)
    for scorer in scorers:
        scorer.use_index(index)
        scorer.prepare()
    return KVEventSubscriber(index, datastore, config.kv_events, registry)
