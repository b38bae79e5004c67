"""Topic administration: create every registered topic and its DLQ, idempotently."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from alpha_panda.settings import Settings
from alpha_panda.topics import all_topic_layout


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
