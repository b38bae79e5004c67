"""A cheap, periodic "is the broker there?" for `/health`.

Faust notices a dead broker only when a request to it times out, and its worker stays
"started" meanwhile: after `kill -9` of the broker every stage answered 200 for 35 s.
So each worker sends an ApiVersions request (the smallest request of the Kafka
protocol, answered by every broker without touching the log) to a bootstrap server
every ``interval_s``, on a fresh connection with a short timeout, and keeps the last
result. `/health` reads the cached result; it never probes per request, so a flood of
health checks costs the broker nothing.
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import faust
import structlog

log = structlog.get_logger(__name__)

INTERVAL_S = 1.0
TIMEOUT_S = 1.0
# A probe answered within this many seconds counts: one lost probe is not an outage.
STALE_AFTER_S = 2.5

_API_VERSIONS = 18
_CORRELATION_ID = 0x0A1FA


def api_versions_request(client_id: str) -> bytes:
    """An ApiVersions v0 request, size-prefixed (Kafka protocol)."""
    name = client_id.encode()
    body = struct.pack(">hhih", _API_VERSIONS, 0, _CORRELATION_ID, len(name)) + name
    return struct.pack(">i", len(body)) + body


def parse_api_versions_response(frame: bytes) -> int:
    """The error code of an ApiVersions v0 response (after its size prefix)."""
    if len(frame) < 6:
        raise ValueError(f"short ApiVersions response ({len(frame)} bytes)")
    correlation_id, error_code = struct.unpack(">ih", frame[:6])
    if correlation_id != _CORRELATION_ID:
        raise ValueError(f"unexpected correlation id {correlation_id}")
    return int(error_code)


async def probe_once(host: str, port: int, timeout_s: float = TIMEOUT_S) -> None:
    """Raise unless the broker at host:port answers ApiVersions without error."""

    async def exchange() -> None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(api_versions_request("alpha-panda-health"))
            await writer.drain()
            (size,) = struct.unpack(">i", await reader.readexactly(4))
            error = parse_api_versions_response(await reader.readexactly(size))
            if error:
                raise ConnectionError(f"ApiVersions error code {error}")
        finally:
            writer.close()

    await asyncio.wait_for(exchange(), timeout_s)


@dataclass
class BrokerProbe:
    """The last probe result of the first reachable bootstrap server."""

    servers: list[str]
    clock: Callable[[], float] = time.monotonic
    stale_after_s: float = STALE_AFTER_S
    last_ok: float | None = None
    last_error: str = "not probed yet"
    _started: float = field(default=0.0)
    _down_since: float | None = None
    _ended_outage_s: float | None = None

    def __post_init__(self) -> None:
        self._started = self.clock()

    async def probe(self) -> None:
        errors = []
        for server in self.servers:
            host, _, port = server.rpartition(":")
            try:
                await probe_once(host or "127.0.0.1", int(port))
            except (OSError, ValueError, TimeoutError, asyncio.IncompleteReadError) as exc:
                errors.append(f"{server}: {type(exc).__name__} {exc}".strip())
                continue
            self.record_ok()
            return
        self.record_failure("; ".join(errors))

    def record_ok(self) -> None:
        now = self.clock()
        if self._down_since is not None:
            self._ended_outage_s = now - self._down_since
            self._down_since = None
        self.last_ok = now

    def record_failure(self, error: str) -> None:
        self.last_error = error
        if self._down_since is None:
            self._down_since = self.clock()

    def take_ended_outage(self) -> float | None:
        """How long the broker was gone, once, right after it answers again."""
        ended, self._ended_outage_s = self._ended_outage_s, None
        return ended

    def status(self) -> tuple[bool, str]:
        now = self.clock()
        if self.last_ok is not None and now - self.last_ok <= self.stale_after_s:
            return True, f"broker {','.join(self.servers)} answers"
        since = self.last_ok if self.last_ok is not None else self._started
        if self.last_ok is None and now - since <= self.stale_after_s:
            return True, "broker not probed yet"
        return False, (
            f"broker {','.join(self.servers)} unreachable for {now - since:.1f}s: {self.last_error}"
        )


def install_broker_probe(
    app: faust.App, servers: list[str], *, restart_after_outage_s: float
) -> BrokerProbe:
    """Probe every ``INTERVAL_S`` from the worker's event loop; return the probe to read.

    When the broker answers again after an outage of ``restart_after_outage_s`` or more
    (the group session timeout: the broker has dropped this member by then), the worker
    stops cleanly so that its supervisor starts it afresh. Faust's own reconnection was
    seen to sit at 503 (tables) and then die in recovery (``KafkaTimeoutError: Failed to
    get offsets by times``) after an embedded broker came back; a fresh start rebuilds the
    tables from the changelogs and resumes from the committed offsets, once per outage.
    """
    probe = BrokerProbe(list(servers))

    @app.timer(INTERVAL_S)  # type: ignore[untyped-decorator]  # faust ships no types
    async def probe_broker() -> None:
        await probe.probe()
        outage = probe.take_ended_outage()
        if outage is not None and outage >= restart_after_outage_s:
            log.error(
                "broker_back_after_outage",
                outage_s=round(outage, 1),
                action="stopping; the supervisor starts this stage again",
            )
            os.kill(os.getpid(), signal.SIGTERM)

    return probe
