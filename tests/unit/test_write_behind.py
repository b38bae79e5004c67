"""Write-behind tables: memory at once, one changelog record per key at the commit hook.

The durability argument (flushed before offsets are computed, flushed on revocation) is
exercised against real Faust and the embedded broker by the SIGKILL restart tests; these
pin the bookkeeping with a stand-in table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from alpha_panda import write_behind
from alpha_panda.write_behind import WriteBehindFlusher, WriteBehindTable
from tables.specs import TableSpec


def spec(
    encode: Callable[[Any], Any] = lambda v: v, decode: Callable[[Any], Any] = lambda j: j
) -> TableSpec[Any]:
    return TableSpec(
        "last-prices", key="k", partitions=1, value="test", encode=encode, decode=decode, help=""
    )


@dataclass
class FakeTable:
    name: str = "last-prices"
    data: dict[Any, Any] = field(default_factory=dict)
    changelog: list[tuple[int, Any, Any]] = field(default_factory=list)

    def get(self, key: Any, default: Any = None) -> Any:
        return self.data.get(key, default)

    def keys(self) -> Any:
        return self.data.keys()

    def items(self) -> Any:
        return self.data.items()

    def send_changelog(self, partition: int, key: Any, value: Any) -> None:
        self.changelog.append((partition, key, value))


@dataclass
class FakeMessage:
    partition: int


@dataclass
class FakeEvent:
    message: FakeMessage


@pytest.fixture
def in_event(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Pretend to be inside an agent processing an event from `partition`."""

    def enter(partition: int | None) -> None:
        event = None if partition is None else FakeEvent(FakeMessage(partition))
        monkeypatch.setattr(write_behind, "current_event", lambda: event)

    return enter


def test_a_write_is_visible_at_once_and_reaches_the_changelog_only_on_flush(in_event: Any) -> None:
    table = FakeTable()
    wrapped = WriteBehindTable(spec(), table)  # type: ignore[arg-type]
    in_event(3)
    wrapped["256265"] = {"price": "100.05"}
    assert wrapped.get("256265") == {"price": "100.05"}
    assert dict(wrapped.items()) == {"256265": {"price": "100.05"}}
    assert table.changelog == []
    assert wrapped.dirty == 1

    assert wrapped.flush() == 1
    assert table.changelog == [(3, "256265", {"price": "100.05"})]
    assert wrapped.dirty == 0


def test_many_writes_to_a_key_become_one_record_with_the_last_value(in_event: Any) -> None:
    table = FakeTable()
    wrapped = WriteBehindTable(spec(), table)  # type: ignore[arg-type]
    in_event(0)
    for i in range(100):
        wrapped["a"] = i
    in_event(1)
    wrapped["b"] = "x"
    assert wrapped.flush() == 2
    assert sorted(table.changelog) == [(0, "a", 99), (1, "b", "x")]
    # Nothing written since: the next commit sends nothing.
    assert wrapped.flush() == 0
    assert len(table.changelog) == 2


def test_the_changelog_partition_is_that_of_the_last_event_that_wrote_the_key(
    in_event: Any,
) -> None:
    table = FakeTable()
    wrapped = WriteBehindTable(spec(), table)  # type: ignore[arg-type]
    in_event(2)
    wrapped["k"] = 1
    in_event(5)
    wrapped["k"] = 2
    wrapped.flush()
    assert table.changelog == [(5, "k", 2)]


def test_memory_keeps_the_object_and_the_changelog_gets_it_encoded_once_per_flush(
    in_event: Any,
) -> None:
    encoded: list[Any] = []

    def encode(value: tuple[int, ...]) -> dict[str, Any]:
        encoded.append(value)
        return {"sum": sum(value)}

    table = FakeTable()
    wrapped = WriteBehindTable(spec(encode), table)  # type: ignore[arg-type]
    in_event(4)
    for i in range(1, 50):
        wrapped["s"] = tuple(range(i))
    assert wrapped.get("s") == tuple(range(49))  # readers see the object itself
    assert encoded == []
    wrapped.flush()
    assert encoded == [tuple(range(49))]
    assert table.changelog == [(4, "s", {"sum": sum(range(49))})]


def test_a_recovered_json_value_is_decoded_once_and_kept_as_the_object(in_event: Any) -> None:
    decoded: list[Any] = []

    def decode(raw: dict[str, Any]) -> tuple[int, ...]:
        decoded.append(raw)
        return tuple(raw["items"])

    table = FakeTable(data={"s": {"items": [1, 2]}})  # what recovery put in memory
    wrapped = WriteBehindTable(spec(lambda v: {"items": list(v)}, decode), table)  # type: ignore[arg-type]
    assert wrapped.get("s") == (1, 2)
    assert wrapped.get("s") == (1, 2)
    assert decoded == [{"items": [1, 2]}]  # once: memory now holds the object
    assert table.data["s"] == (1, 2)
    assert wrapped.get("missing") is None
    assert table.changelog == [] and wrapped.dirty == 0  # the same value: nothing to send


def test_a_write_outside_an_event_is_a_bug(in_event: Any) -> None:
    wrapped = WriteBehindTable(spec(), FakeTable())  # type: ignore[arg-type]
    in_event(None)
    with pytest.raises(RuntimeError, match="last-prices: written outside of an agent's event"):
        wrapped["k"] = 1


class FakeSignal:
    def __init__(self) -> None:
        self.receivers: list[Any] = []

    def connect(self, fun: Any) -> Any:
        self.receivers.append(fun)
        return fun


class FakeSensors:
    def __init__(self) -> None:
        self.added: list[Any] = []

    def add(self, sensor: Any) -> None:
        self.added.append(sensor)


class FakeProducer:
    def __init__(self) -> None:
        self.flushes = 0

    async def flush(self) -> None:
        self.flushes += 1


class FakeApp:
    def __init__(self) -> None:
        self.sensors = FakeSensors()
        self.on_partitions_revoked = FakeSignal()
        self.producer = FakeProducer()


def test_the_flusher_flushes_every_table_when_a_commit_starts(in_event: Any) -> None:
    app = FakeApp()
    flusher = WriteBehindFlusher(app)  # type: ignore[arg-type]
    assert app.sensors.added == [flusher]
    prices, states = FakeTable("prices"), FakeTable("states")
    wrapped_prices = flusher.register(spec(), prices)  # type: ignore[arg-type]
    wrapped_states = flusher.register(spec(), states)  # type: ignore[arg-type]
    in_event(1)
    wrapped_prices["p"] = 1
    wrapped_states["s"] = 2
    wrapped_states["t"] = 3

    assert flusher.on_commit_initiated(consumer=None) == 3
    assert prices.changelog == [(1, "p", 1)]
    assert sorted(states.changelog) == [(1, "s", 2), (1, "t", 3)]


def test_revocation_flushes_and_waits_for_the_producer_only_when_something_was_dirty(
    in_event: Any,
) -> None:
    app = FakeApp()
    flusher = WriteBehindFlusher(app)  # type: ignore[arg-type]
    table = FakeTable()
    wrapped = flusher.register(spec(), table)  # type: ignore[arg-type]
    [on_revoked] = app.on_partitions_revoked.receivers

    asyncio.run(on_revoked(app, revoked=set()))
    assert app.producer.flushes == 0

    in_event(4)
    wrapped["k"] = "v"
    asyncio.run(on_revoked(app, revoked=set()))
    assert table.changelog == [(4, "k", "v")]
    assert app.producer.flushes == 1
