"""Faust's built-in monitor without its per-record bookkeeping.

Faust calls its :class:`~faust.sensors.Monitor` for every record in and out, every stream
event, every table read and write and every send: counters, timestamps and a latency
deque kept in memory for Faust's debug web pages, which our workers do not serve. Our
monitoring is the Prometheus registry in :mod:`alpha_panda.metrics`. A bare Faust agent
measured here spent 80 to 90 µs per event with the stock monitor and 65 to 70 µs with
this one (docs/PERFORMANCE.md), and each of our tick-consuming stages pays that per tick.

The hooks Faust's consumer itself relies on (end offsets, commits, assignment and
rebalance) are inherited unchanged.
"""

from __future__ import annotations

from typing import Any

from faust.sensors import Monitor


class LeanMonitor(Monitor):  # type: ignore[misc]  # faust is untyped
    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> None:
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        return None

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        return None

    def on_table_get(self, table: Any, key: Any) -> None:
        return None

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        return None

    def on_table_del(self, table: Any, key: Any) -> None:
        return None

    def on_send_initiated(
        self, producer: Any, topic: str, message: Any, keysize: int, valsize: int
    ) -> None:
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        return None

    def on_send_error(self, producer: Any, exc: BaseException, state: Any) -> None:
        return None
