"""Topic administration: create every registered topic and its DLQ, idempotently."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from alpha_panda.settings import Settings
from alpha_panda.topics import all_topic_layout

log = structlog.get_logger(__name__)


@dataclass
class TopicsReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    # (name, partitions on the broker, partitions the registry wants)
    mismatched: list[tuple[str, int, int]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"created {name}" for name in self.created]
        out += [
            f"WARNING {name} has {have} partitions, registry says {want}"
            for name, have, want in self.mismatched
        ]
        if not self.created:
            out.append(f"all {len(self.existing)} topics already exist; nothing changed")
        return out


def admin_client(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.broker.bootstrap_servers,
        client_id="alpha-panda.admin",
        request_timeout_ms=15_000,
    )


async def existing_partitions(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    present = set(await admin.list_topics())
    wanted = [n for n in names if n in present]
    if not wanted:
        return found
    for meta in await admin.describe_topics(wanted):
        if meta.get("error_code", 0) == 0:
            found[meta["topic"]] = len(meta.get("partitions", []))
    return found


async def ensure_topics(settings: Settings) -> TopicsReport:
    layout = all_topic_layout()
    report = TopicsReport()
    admin = admin_client(settings)
    await admin.start()
    try:
        have = await existing_partitions(admin, list(layout))
        missing = [name for name in layout if name not in have]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name=name,
                        num_partitions=layout[name],
                        replication_factor=settings.broker.replication_factor,
                    )
                    for name in missing
                ]
            )
        report.created = missing
        report.existing = [name for name in layout if name in have]
        report.mismatched = [
            (name, have[name], layout[name]) for name in have if have[name] != layout[name]
        ]
    finally:
        await admin.close()
    return report


async def wait_for_topics(
    settings: Settings,
    names: list[str],
    *,
    should_stop: Callable[[], bool],
    poll_s: float = 0.5,
) -> bool:
    """Wait until every topic in ``names`` exists; False if ``should_stop`` said stop first.

    A producer must not write before its topics exist: the embedded broker (Tansu 0.6.0,
    which has no setting to turn it off) creates an unknown topic on first produce with
    its own partition count, and the ticks then land on a layout the consumers do not
    expect. Topic listing asks for *all* topics, which creates nothing.
    """
    logged = False
    while not should_stop():
        admin = admin_client(settings)
        try:
            await admin.start()
            present = set(await admin.list_topics())
        except KafkaError as exc:
            present = set()
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = ""
        finally:
            await admin.close()
        missing = [n for n in names if n not in present]
        if not missing:
            return True
        if not logged:
            log.warning("waiting_for_topics", missing=missing, error=error or None)
            logged = True
        await asyncio.sleep(poll_s)
    return False
