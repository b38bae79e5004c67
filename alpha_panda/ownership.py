"""Which worker of a stage owns a table key, when several workers share the stage.

A stage's tables are partitioned like their source topics: a value written while handling
a record lands in the changelog partition of that record, so the key ``alpha`` of the
portfolios table lives in the partition its *source* record was hashed to, ``alpha``'s
UTF-8 bytes through the producers' default partitioner (murmur2, as every Kafka client).

Faust's ``@app.table_route`` hashes the table's *serialized* key instead, and our tables
serialize keys as JSON (``"alpha"`` with quotes), so it picks another partition for most
keys: with two portfolio-manager workers it sent about half of the single-portfolio
requests to a worker that did not hold the portfolio. :class:`Ownership` answers the
question with the source key's hash and the assignment Faust keeps
(``app.assignor``: this worker's active partitions and every member's URL per changelog
partition), which is what the API's routing and the Redis mirror's resync use.

Faust's in-memory store also keeps, after a rebalance, the keys a worker wrote itself for
partitions it no longer owns (it forgets only keys it had recovered), so local reads are
filtered by :meth:`Ownership.owns` too: a key of a revoked partition is stale by
definition, its new owner has the truth.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import murmur2
from faust.types import TP
from yarl import URL


def partition_for(key: str, partitions: int) -> int:
    """The partition the default Kafka partitioner picks for ``key`` (its UTF-8 bytes)."""
    digest: int = murmur2(key.encode())  # type: ignore[no-untyped-call]
    return (digest & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Ownership:
    """Ownership of the keys of a worker's tables, read from Faust's assignment."""

    app: Any  # faust.App; untyped

    def _table(self, table: str) -> Any:
        return self.app.tables[table]

    def _tp(self, table: str, key: str) -> TP:
        t = self._table(table)
        return TP(t.changelog_topic.get_topic_name(), partition_for(key, t.partitions))

    def owns(self, table: str, key: str) -> bool:
        """Whether this worker is the active owner of ``key`` of ``table`` right now."""
        return bool(self.app.assignor.is_active(self._tp(table, key)))  # a set lookup

    def owns_all(self, tables: Iterable[str]) -> bool:
        """Whether this worker actively owns every partition of each of ``tables``: then
        its local tables are the whole view (always so with one worker per stage)."""
        actives = self.app.assignor.assigned_actives()
        for name in tables:
            t = self._table(name)
            topic = t.changelog_topic.get_topic_name()
            if any(TP(topic, p) not in actives for p in range(t.partitions)):
                return False
        return True

    def owner_url(self, table: str, key: str) -> URL | None:
        """The web URL of the worker that owns ``key`` of ``table``; None while unknown."""
        tp = self._tp(table, key)
        for url, topics in self.app.assignor.changelog_distribution.items():
            if tp.partition in topics.get(tp.topic, ()):
                return URL(url)
        return None

    def is_self(self, url: URL) -> bool:
        own = URL(str(self.app.conf.canonical_url))
        return (url.host, url.port) == (own.host, own.port)
