"""The lean monitor drops Faust's per-record bookkeeping and keeps what Faust's consumer uses."""

from __future__ import annotations

from typing import Any

from faust.types import TP

from alpha_panda.lean_monitor import LeanMonitor
from alpha_panda.settings import Stage, load_settings


class Message:
    time_in: Any = None
    time_out: Any = None


def test_per_record_hooks_keep_nothing() -> None:
    monitor = LeanMonitor()
    tp = TP("market.ticks", 0)
    message = Message()
    monitor.on_message_in(tp, 5, message)
    assert monitor.on_stream_event_in(tp, 5, object(), object()) is None
    monitor.on_stream_event_out(tp, 5, object(), object(), None)
    monitor.on_message_out(tp, 5, message)
    assert monitor.on_send_initiated(object(), "t", message, 1, 2) is None
    monitor.on_send_completed(object(), None, object())
    assert monitor.messages_received_total == 0
    assert monitor.events_total == 0
    assert message.time_in is None
    assert not monitor.events_runtime


def test_the_hooks_faust_consumer_calls_directly_still_record() -> None:
    monitor = LeanMonitor()
    tp = TP("market.ticks", 3)
    monitor.track_tp_end_offset(tp, 42)
    monitor.on_tp_commit({tp: 40})
    assert monitor.tp_end_offsets[tp] == 42
    assert monitor.tp_committed_offsets[tp] == 40


def test_every_stage_app_uses_it(tmp_path: Any) -> None:
    from alpha_panda.factory import create_app

    settings = load_settings(data_dir=str(tmp_path))
    app = create_app(settings, Stage.TRADING_ENGINE)
    assert isinstance(app.monitor, LeanMonitor)
