"""Standalone producers (market feed, CLI tools, benchmarks): acks=all, keyed, idempotent
where the broker allows it."""

from __future__ import annotations

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from alpha_panda.settings import Settings
from alpha_panda.topics import OutgoingRecord

log = structlog.get_logger(__name__)


async def start_producer(
    settings: Settings, client_id: str, *, linger_ms: int | None = None
) -> AIOKafkaProducer:
    """Start a producer; if the broker refuses InitProducerId (the embedded broker does),
    say so once and run without idempotence rather than not at all. ``linger_ms``
    overrides ``broker.linger_ms``."""

    def build(idempotent: bool) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=settings.broker.bootstrap_servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=settings.broker.linger_ms if linger_ms is None else linger_ms,
            max_batch_size=settings.broker.max_batch_size,
        )

    if settings.broker.enable_idempotence:
        producer = build(True)
        try:
            await producer.start()
            return producer
        except KafkaError as exc:
            await producer.stop()
            log.warning(
                "idempotent_producer_refused",
                client_id=client_id,
                error=f"{type(exc).__name__}: {exc}",
                action="continuing with acks=all and without idempotence; "
                "set ALPHA_PANDA_BROKER_ENABLE_IDEMPOTENCE=false to silence this",
            )
    producer = build(False)
    await producer.start()
    return producer


async def send_record(producer: AIOKafkaProducer, record: OutgoingRecord) -> None:
    """Hand a record to the producer's batch (delivery is awaited at flush/stop)."""
    await producer.send(record.topic, key=record.key, value=record.value)
