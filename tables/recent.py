"""The values of the recent-fills and recent-rejections tables: newest first, bounded.

Their entries stay in the JSON form the changelog, the Redis mirror and the read API all
hold (an ``OrderFill``, a ``RejectedSignal`` with its ``event_id`` first), each made once
from its event when it is added. Decoding every kept entry on each new one would
validate a hundred fills per fill (~2 ms, measured) for a list that is only ever served
as JSON; :meth:`RecentFills.fills` decodes on demand for the reader who wants events.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from models.events import OrderFill, RejectedSignal


@dataclass(frozen=True, slots=True)
class RecentFills:
    entries: tuple[dict[str, Any], ...] = ()  # OrderFill JSON, newest first

    def with_newest(self, fill: OrderFill, kept: int) -> RecentFills:
        return RecentFills((fill.model_dump(mode="json"), *self.entries)[:kept])

    def fills(self) -> tuple[OrderFill, ...]:
        return tuple(OrderFill.model_validate(e) for e in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)

    def to_json(self) -> list[dict[str, Any]]:
        return list(self.entries)

    @classmethod
    def from_json(cls, raw: Sequence[dict[str, Any]]) -> RecentFills:
        return cls(tuple(raw))


@dataclass(frozen=True, slots=True)
class RecentRejections:
    # RejectedSignal JSON with the rejection's envelope id first, newest first.
    entries: tuple[dict[str, Any], ...] = ()

    def holds(self, event_id: str) -> bool:
        return any(e["event_id"] == event_id for e in self.entries)

    def with_newest(self, event_id: str, rejected: RejectedSignal, kept: int) -> RecentRejections:
        entry = {"event_id": event_id, **rejected.model_dump(mode="json")}
        return RecentRejections((entry, *self.entries)[:kept])

    def rejections(self) -> tuple[tuple[str, RejectedSignal], ...]:
        """(event id, rejection) per entry, newest first."""
        return tuple(
            (
                e["event_id"],
                RejectedSignal.model_validate({k: v for k, v in e.items() if k != "event_id"}),
            )
            for e in self.entries
        )

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)

    def to_json(self) -> list[dict[str, Any]]:
        return list(self.entries)

    @classmethod
    def from_json(cls, raw: Sequence[dict[str, Any]]) -> RecentRejections:
        return cls(tuple(raw))
