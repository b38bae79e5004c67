"""The broker probe's wire format and its cached verdict, with a fake clock."""

from __future__ import annotations

import asyncio
import struct

import pytest

from alpha_panda.broker import free_port
from alpha_panda.broker_probe import (
    BrokerProbe,
    api_versions_request,
    parse_api_versions_response,
    probe_once,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def test_request_is_a_size_prefixed_api_versions_v0() -> None:
    frame = api_versions_request("cid")
    (size,) = struct.unpack(">i", frame[:4])
    assert size == len(frame) - 4
    api_key, version, _correlation, name_len = struct.unpack(">hhih", frame[4:14])
    assert (api_key, version, name_len) == (18, 0, 3)
    assert frame[14:] == b"cid"


def test_response_error_code_and_correlation_are_checked() -> None:
    correlation = struct.unpack(">i", api_versions_request("x")[8:12])[0]
    assert parse_api_versions_response(struct.pack(">ih", correlation, 0) + b"rest") == 0
    assert parse_api_versions_response(struct.pack(">ih", correlation, 35)) == 35
    with pytest.raises(ValueError, match="correlation"):
        parse_api_versions_response(struct.pack(">ih", correlation + 1, 0))
    with pytest.raises(ValueError, match="short"):
        parse_api_versions_response(b"\x00")


def test_status_turns_unavailable_once_the_last_answer_is_stale() -> None:
    clock = FakeClock()
    probe = BrokerProbe(["127.0.0.1:9"], clock=clock, stale_after_s=2.5)
    assert probe.status()[0]  # not probed yet, within the grace period
    probe.last_ok = clock.now
    clock.now += 2.0
    assert probe.status() == (True, "broker 127.0.0.1:9 answers")
    probe.last_error = "127.0.0.1:9: ConnectionRefusedError"
    clock.now += 1.0
    ok, detail = probe.status()
    assert not ok
    assert detail == (
        "broker 127.0.0.1:9 unreachable for 3.0s: 127.0.0.1:9: ConnectionRefusedError"
    )


def test_a_closed_port_fails_the_probe() -> None:
    port = free_port()  # nothing listens there
    probe = BrokerProbe([f"127.0.0.1:{port}"], stale_after_s=0.0)
    asyncio.run(probe.probe())
    ok, detail = probe.status()
    assert not ok and "ConnectionRefusedError" in detail
    with pytest.raises(OSError):
        asyncio.run(probe_once("127.0.0.1", port))


def test_an_ended_outage_is_reported_once_with_its_length() -> None:
    clock = FakeClock()
    probe = BrokerProbe(["b:1"], clock=clock)
    probe.record_ok()
    assert probe.take_ended_outage() is None
    clock.now += 1
    probe.record_failure("refused")
    clock.now += 4
    probe.record_failure("refused")  # the outage started at the first failure
    assert probe.take_ended_outage() is None  # still down
    clock.now += 3
    probe.record_ok()
    assert probe.take_ended_outage() == 7.0
    assert probe.take_ended_outage() is None
