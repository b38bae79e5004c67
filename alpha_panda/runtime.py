"""What every stage shares: its Faust topics, the decode -> handle -> send loop, the DLQ.

An agent body is one call to :meth:`StageContext.process`, which for every record:
1. routes by topic name to the handler registered for that topic (never by wildcard);
2. decodes the bytes at the codec boundary; an undecodable record is a poison pill and is
   dead-lettered at once;
3. runs the handler; a handler that raises is retried, and after
   ``MAX_ATTEMPTS`` failed attempts the record goes to ``{topic}.dlq``;
4. moves on, so the records around a bad one are all processed and the offset commits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import faust
import structlog
from faust.types import EventT, StreamT, TopicT
from faust.types.tuples import Message

from alpha_panda.broker_probe import BrokerProbe
from alpha_panda.metrics import StageMetrics
from alpha_panda.settings import Settings, Stage
from alpha_panda.stages import AgentSpec
from alpha_panda.topics import OutgoingRecord, TopicSpec, dlq_name, partitions_of
from alpha_panda.typed_table import TypedTable
from alpha_panda.workarounds import faust_internals
from alpha_panda.write_behind import WriteBehindFlusher, WriteBehindTable
from models.codec import DecodeError, decode
from models.envelope import EventEnvelope
from tables.specs import TableSpec

log = structlog.get_logger("alpha_panda.runtime")

MAX_ATTEMPTS = 3
RETRY_BACKOFF_S = (0.05, 0.2)

V = TypeVar("V")
T = TypeVar("T", bound=TypedTable[Any])

Handler = Callable[[EventEnvelope[Any], EventT], Awaitable[None]]


@dataclass(frozen=True)
class Route:
    spec: TopicSpec
    handler: Handler


HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


@dataclass(frozen=True)
class _TopicMeters:
    """One source topic's metric children: ``labels()`` per record was ~3 % of a stage."""

    consumed: Any
    processed: Any
    processing_seconds: Any
    end_to_end_seconds: Any


@dataclass
class StageContext:
    app: faust.App
    settings: Settings
    stage: Stage
    metrics: StageMetrics
    topics: dict[str, TopicT] = field(default_factory=dict)
    health_checks: dict[str, HealthCheck] = field(default_factory=dict)
    broker_probe: BrokerProbe | None = None  # read by /health (see broker_probe.py)
    stage_handlers: Any = None  # the stage's class (agents/*.py), built by the factory
    # Per source partition: the offset the next record should have.
    _expected_offset: dict[Any, int | None] = field(default_factory=dict)
    _generation: int | None = None
    _write_behind: WriteBehindFlusher | None = None
    _meters: dict[str, _TopicMeters] = field(default_factory=dict)
    # The typed view of each table the stage declared, by name (tests read them here).
    tables: dict[str, TypedTable[Any]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.stage.value

    def topic(self, spec: TopicSpec | str) -> TopicT:
        name = spec if isinstance(spec, str) else spec.name
        if name not in self.topics:
            self.topics[name] = self.app.topic(
                name,
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
                partitions=partitions_of(name),
                internal=False,
            )
        return self.topics[name]

    def source_channel(self, specs: Iterable[TopicSpec]) -> TopicT:
        """One Faust channel over several registry topics, for an agent that routes by name."""
        names = [s.name for s in specs]
        for name in names:
            self.topic(name)
        return self.app.topic(
            *names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    def run_agent(self, spec: AgentSpec, handlers: Mapping[str, Handler]) -> None:
        """Subscribe one Faust agent to exactly ``spec.inputs`` (alpha_panda/stages.py),
        each record handed by :meth:`process` to ``handlers[topic name]``: a stage's
        named handler methods, so a record is followed from here into its handler."""
        missing = [t.name for t in spec.inputs if t.name not in handlers]
        extra = sorted(set(handlers) - {t.name for t in spec.inputs})
        if missing or extra:
            raise RuntimeError(
                f"{self.source}: agent {spec.name!r} handlers do not match its spec "
                f"(missing {missing}, not consumed {extra})"
            )
        routes = {t.name: Route(t, handlers[t.name]) for t in spec.inputs}

        async def agent_body(stream: StreamT) -> None:
            await self.process(stream, routes)

        agent_body.__name__ = agent_body.__qualname__ = spec.name.replace("-", "_")
        self.app.agent(self.source_channel(spec.inputs), name=spec.name)(agent_body)

    def table(self, spec: TableSpec[V]) -> TypedTable[V]:
        """A changelog-backed table of ``spec``'s value type, co-partitioned with its
        source topic; its changelog holds the spec's encoding (JSON)."""
        return self._declare(TypedTable(spec, self._faust_table(spec)))

    def write_behind_table(self, spec: TableSpec[V]) -> WriteBehindTable[V]:
        """A :meth:`table` for keys rewritten on every tick: its changelog writes are
        coalesced to one per key per offset commit (see alpha_panda/write_behind.py)."""
        if self._write_behind is None:
            self._write_behind = WriteBehindFlusher(self.app)
        return self._declare(self._write_behind.register(spec, self._faust_table(spec)))

    def _faust_table(self, spec: TableSpec[Any]) -> faust.Table:
        return self.app.Table(
            spec.name,
            default=None,
            key_type=str,
            value_type=None,  # app default serializer: JSON
            partitions=spec.partitions,
            help=spec.help,
        )

    def _declare(self, table: T) -> T:
        self.tables[table.name] = table
        return table

    async def send(self, record: OutgoingRecord) -> None:
        topic = self.topic(record.topic)
        try:
            await topic.send(key=record.key, value=record.value, headers=_headers(record))
        except Exception:
            self.metrics.send_errors.labels(self.source, record.topic).inc()
            raise
        self.metrics.produced.labels(self.source, record.topic).inc()

    async def send_acked(self, records: list[OutgoingRecord]) -> None:
        """Send and wait until the broker acknowledged every record (acks=all).

        For outputs that state written afterwards must be able to vouch for: a stage
        writes "input offset o done" only once o's outputs are durable.
        """
        pending = []
        for record in records:
            topic = self.topic(record.topic)
            try:
                pending.append(
                    await topic.send(key=record.key, value=record.value, headers=_headers(record))
                )
            except Exception:
                self.metrics.send_errors.labels(self.source, record.topic).inc()
                raise
        await self._flush_now()
        for record, future in zip(records, pending, strict=True):
            try:
                await future
            except Exception:
                self.metrics.send_errors.labels(self.source, record.topic).inc()
                raise
            self.metrics.produced.labels(self.source, record.topic).inc()

    async def _flush_now(self) -> None:
        """Send everything buffered now, without waiting out ``producer_linger_ms``.

        A stage that waits for acks stops its stream meanwhile, so the linger (there to
        fill batches) would only add to every wait: the strategy runner paid it once per
        signal, and it was a third of its time in the benchmark. Closing the open
        batches is what aiokafka's own transactional commit does for the same reason.
        """
        await faust_internals.flush_open_batches(self.app.producer)

    async def forward(
        self,
        spec: TopicSpec,
        key: str,
        value: bytes,
        headers: tuple[tuple[str, bytes], ...] = (),
    ) -> None:
        """Repartition: the same bytes under a new record key (see topics.py)."""
        await self.send(OutgoingRecord(spec.name, key.encode(), value, None, headers))

    async def dead_letter(
        self,
        message: Message,
        *,
        error_type: str,
        error: str,
        attempts: int,
    ) -> None:
        headers = {
            "x-error-type": error_type.encode(),
            "x-error-message": error[:2000].encode(),
            "x-stage": self.source.encode(),
            "x-attempts": str(attempts).encode(),
            "x-original-topic": message.topic.encode(),
            "x-original-partition": str(message.partition).encode(),
            "x-original-offset": str(message.offset).encode(),
        }
        target = dlq_name(message.topic)
        # A DLQ write must not be lost silently: if it raises, the agent fails loudly and
        # the record is redelivered after restart (its offset is not yet committed).
        await self.topic(target).send(key=message.key, value=message.value, headers=headers)
        self.metrics.dead_lettered.labels(self.source, message.topic).inc()
        self.metrics.produced.labels(self.source, target).inc()
        log.warning(
            "record_dead_lettered",
            stage=self.source,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            dlq=target,
            error_type=error_type,
            error=error[:500],
            attempts=attempts,
        )

    def install_lag_monitor(self, interval_s: float = 5.0) -> None:
        """Consumer lag per assigned partition: high watermark minus committed offset."""

        @self.app.timer(interval_s)
        async def report_lag() -> None:
            if self.app.producer_only or not self.app.started:
                return
            consumer = self.app.consumer
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                committed = faust_internals.committed_offset(consumer, tp)
                # Faust stores the next offset to consume (last acked + 1), as Kafka does.
                lag = highwater - (committed if committed is not None else 0)
                self.metrics.consumer_lag.labels(self.source, tp.topic, str(tp.partition)).set(
                    max(0, lag)
                )

    def install_fetch_wait(self) -> None:
        """Apply ``broker.fetch_wait_ms`` (set, or the broker kind's) to the worker's consumer.

        Faust hard-codes aiokafka's ``fetch_max_wait_ms=1500`` when it builds the consumer,
        so the value is set on the consumer's fetcher once partitions are assigned (the
        consumer exists then; every later fetch request reads it).
        """
        faust_internals.set_fetch_max_wait(self.app, self.settings.broker.fetch_wait_ms)

    async def process(self, stream: StreamT, routes: Mapping[str, Route]) -> None:
        """The agent body: consume `stream`, route each record by topic name."""
        metrics = self.metrics
        async for event in stream.events():
            message = event.message
            self._check_continuity(message)
            topic = message.topic
            route = routes.get(topic)
            meters = self._meters_for(topic)
            meters.consumed.inc()
            if route is None:
                # A subscription without a route is a wiring bug, not bad data.
                raise RuntimeError(f"{self.source}: no route for topic {topic!r}")
            started = time.perf_counter()
            try:
                envelope = decode(
                    message.value,
                    topic=topic,
                    partition=message.partition,
                    offset=message.offset,
                    expect=route.spec.event_type,
                )
            except DecodeError as err:
                metrics.failed.labels(self.source, topic, "decode").inc()
                log.warning("decode_failed", stage=self.source, **err.log_fields())
                await self.dead_letter(
                    message,
                    error_type=f"DecodeError.{err.failure.value}",
                    error=err.reason,
                    attempts=1,
                )
                continue
            await self._handle_with_retries(route, envelope, event)
            meters.processing_seconds.observe(time.perf_counter() - started)
            if message.timestamp:
                meters.end_to_end_seconds.observe(max(0.0, time.time() - message.timestamp))

    def _meters_for(self, topic: str) -> _TopicMeters:
        meters = self._meters.get(topic)
        if meters is None:
            m, source = self.metrics, self.source
            meters = self._meters[topic] = _TopicMeters(
                consumed=m.consumed.labels(source, topic),
                processed=m.processed.labels(source, topic),
                processing_seconds=m.processing_seconds.labels(source, topic),
                end_to_end_seconds=m.end_to_end_seconds.labels(source, topic),
            )
        return meters

    def _check_continuity(self, message: Message) -> None:
        """Detect source records the consumer moved past without delivering them.

        Our source topics are plain logs written without transactions, so their offsets
        are contiguous and a forward jump is a loss. Faust's recovery used to cause one at
        the hand-over to the streams after a restart; :mod:`alpha_panda.workarounds.recovery` closes
        that race, and this check stays as the alarm should any other path skip records:
        `offset_gap_detected` in the log and `alpha_panda_offset_gaps_total`, with the
        recovery (`alpha-panda replay STAGE --to-offset N`) in docs/RUNBOOK.md.
        """
        if self.settings.broker.exactly_once:  # transaction markers occupy offsets
            return
        generation = self.app.consumer_generation_id
        if generation != self._generation:
            self._generation = generation
            self._expected_offset.clear()
        tp = message.tp
        if tp in self._expected_offset:
            expected = self._expected_offset[tp]
        else:  # first record since the assignment: Faust resumed at the committed offset
            expected = faust_internals.committed_offset(self.app.consumer, tp)
        if expected is not None and message.offset > expected:
            self.metrics.offset_gaps.labels(self.source, tp.topic).inc(message.offset - expected)
            log.error(
                "offset_gap_detected",
                stage=self.source,
                topic=tp.topic,
                partition=tp.partition,
                expected=expected,
                got=message.offset,
                skipped=message.offset - expected,
            )
        self._expected_offset[tp] = message.offset + 1

    async def _handle_with_retries(
        self, route: Route, envelope: EventEnvelope[Any], event: EventT
    ) -> None:
        message = event.message
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                await route.handler(envelope, event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.failed.labels(self.source, message.topic, "handler").inc()
                log.warning(
                    "processing_failed",
                    stage=self.source,
                    topic=message.topic,
                    partition=message.partition,
                    offset=message.offset,
                    event_id=envelope.id,
                    attempt=attempt,
                    error_type=type(exc).__name__,
                    error=str(exc)[:500],
                    exc_info=attempt == MAX_ATTEMPTS,
                )
                if attempt == MAX_ATTEMPTS:
                    await self.dead_letter(
                        message,
                        error_type=type(exc).__name__,
                        error=str(exc) or repr(exc),
                        attempts=attempt,
                    )
                    return
                await asyncio.sleep(RETRY_BACKOFF_S[attempt - 1])
            else:
                self._meters_for(message.topic).processed.inc()
                return


def _headers(record: OutgoingRecord) -> list[tuple[str, bytes]] | None:
    # None, not an empty list, for a record without: sent exactly as before headers existed.
    return list(record.headers) if record.headers else None
