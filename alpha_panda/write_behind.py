"""Write-behind tables: one changelog record per key per commit, not per event.

Four tables are rewritten for the same few keys on almost every record: strategy state,
risk state, and the last price in the trading engine and the portfolio manager. Faust
sends a changelog record for every ``table[key] = value``, and that send, not the
change, was most of a tick's cost (docs/PERFORMANCE.md: ~200 µs of a ~365 µs tick). A
price table sees the same 24 instruments thousands of times between two commits; only
the last value per key matters.

A :class:`WriteBehindTable` changes the table's memory at once (readers see every write)
and remembers the key as dirty; :class:`WriteBehindFlusher` sends each dirty key's
current value to the changelog right before the consumer commits offsets. Why that keeps
the log the source of truth:

* Faust's commit calls ``sensors.on_commit_initiated`` and then, without yielding,
  computes the offsets to commit from the acked messages; it then flushes the producer
  (every queued record: :mod:`alpha_panda.workarounds.producer_flush`) and only then
  commits. Every acked event's handler has returned, so its writes are in the flushed
  values: the changelog is never behind a committed offset.
* A crash loses at most the writes since the last commit, and exactly those source
  records are uncommitted: the restarted worker replays them onto the older state, which
  is what the per-stage redelivery guards were built for (the strategy runner re-emits
  the same signals under the same derived event ids; downstream drops them).
* A rebalance can keep a partition whose commit was skipped (one already in flight), and
  the records after it are then replayed onto memory that already holds them: the
  guards skip them and would never write them. So on revocation, after Faust has
  drained the streams, every dirty key is flushed and the producer awaited before the
  rebalance goes on.

The cost is replay after a crash: up to one commit interval of records
(``ALPHA_PANDA_BROKER_COMMIT_INTERVAL_S``) instead of at most one.

Memory holds the value itself, of the spec's type (tables/specs.py), and the spec's
``encode`` turns it into its changelog JSON when the key is flushed: once per key per
commit instead of once per write. The risk manager's state (hundreds of remembered
decisions) cost a sixth of that stage's time to encode on every signal, and the last
prices were decoded and re-encoded on every tick. Recovery fills memory with the JSON
from the changelog (always an object, and no write-behind value type is a dict): ``get``
decodes it once with the spec's ``decode`` and keeps the value in memory, so readers see
one type.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import faust
from faust.streams import current_event

from alpha_panda.typed_table import TypedTable
from tables.specs import Json, TableSpec

V = TypeVar("V")


class WriteBehindTable(TypedTable[V]):
    """A typed table whose changelog writes wait for the next commit (see module doc)."""

    def __init__(self, spec: TableSpec[V], table: faust.Table) -> None:
        super().__init__(spec, table)
        # key -> the source partition of the event that wrote it last, which is the
        # changelog partition Faust itself would have used.
        self._dirty: dict[Any, int] = {}

    def __setitem__(self, key: str, value: V) -> None:
        event = current_event()
        if event is None:
            raise RuntimeError(f"table {self.table.name}: written outside of an agent's event")
        self.table.data[key] = value
        self._dirty[key] = event.message.partition

    def __delitem__(self, key: str) -> None:
        raise NotImplementedError(f"table {self.table.name}: write-behind tables keep their keys")

    def get(self, key: str) -> V | None:
        value = self.table.get(key)
        if type(value) is dict:
            # Recovered from the changelog as JSON: decoded once, memory keeps the value
            # (the same value, so nothing to send to the changelog).
            value = self.table.data[key] = self._decode(value)
        return value  # type: ignore[no-any-return]

    def items(self) -> Iterator[tuple[str, V]]:
        get = self.get
        return ((k, v) for k in list(self.table.keys()) if (v := get(k)) is not None)

    def get_json(self, key: str) -> Json | None:
        value = self.table.get(key)
        if value is None or type(value) is dict:
            return value
        return self._encode(value)

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    def flush(self) -> int:
        """Queue one changelog record per dirty key on the producer; returns how many."""
        dirty, self._dirty = self._dirty, {}
        data, encode = self.table.data, self._encode
        for key, partition in dirty.items():
            value = data[key]
            self.table.send_changelog(
                partition, key, value if type(value) is dict else encode(value)
            )
        return len(dirty)


class WriteBehindFlusher(faust.Sensor):  # type: ignore[misc]  # faust is untyped
    """Flushes every write-behind table before each offset commit and on revocation."""

    def __init__(self, app: faust.App) -> None:
        super().__init__()
        self.tables: list[WriteBehindTable[Any]] = []
        app.sensors.add(self)
        app.on_partitions_revoked.connect(self._flush_before_rebalance)

    def register(self, spec: TableSpec[V], table: faust.Table) -> WriteBehindTable[V]:
        wrapped = WriteBehindTable(spec, table)
        self.tables.append(wrapped)
        return wrapped

    def flush_all(self) -> int:
        return sum(t.flush() for t in self.tables)

    async def _flush_before_rebalance(self, sender: faust.App, revoked: Any, **kwargs: Any) -> None:
        if self.flush_all():
            await sender.producer.flush()

    def on_commit_initiated(self, consumer: Any) -> Any:
        # Synchronous on purpose: Faust computes the offsets to commit right after this
        # returns, with no await in between, so no handler can run in the gap.
        return self.flush_all()
