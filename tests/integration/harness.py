"""Run real stage workers (`faust -A alpha_panda worker` subprocesses) against a broker."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from alpha_panda.mirror import MirrorKeys
from alpha_panda.settings import Stage
from alpha_panda.topics import OutgoingRecord, partitions_of
from alpha_panda.workarounds.end_offsets import high_watermarks as confirmed_high_watermarks
from alpha_panda.workarounds.end_offsets import watermarks

FAUST = str(Path(sys.executable).with_name("faust"))
REDIS_KEY_PREFIX_ENV = "ALPHA_PANDA_REDIS_KEY_PREFIX"


def _unique_redis_key_prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@dataclass
class Deployment:
    """Environment shared by the stage workers of one test."""

    bootstrap: str
    data_dir: Path
    database_url: str = "sqlite+aiosqlite:///:memory:"
    redis_url: str = "redis://127.0.0.1:1/0"
    extra_env: dict[str, str] = field(default_factory=dict)
    # The Redis mirror's key prefix, this deployment's own: suites running at the same
    # time, and tests one after another, share the test Redis, and the mirror's log-id
    # check clears every key under its prefix when another log wrote there (docs/TESTING.md).
    # A test that sets ALPHA_PANDA_REDIS_KEY_PREFIX in extra_env keeps its own.
    redis_key_prefix: str = field(default_factory=_unique_redis_key_prefix)
    api_port: int = field(default_factory=lambda: _free_port_block(1))
    base_port: int = field(default_factory=lambda: _free_port_block(4))
    # Web ports of further workers of a stage (instance 1, 2, ...): (api port, base port).
    _instance_ports: dict[int, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.redis_key_prefix = self.extra_env.get(REDIS_KEY_PREFIX_ENV, self.redis_key_prefix)

    @property
    def mirror_keys(self) -> MirrorKeys:
        """The keys this deployment's Redis mirror writes: read them through this."""
        return MirrorKeys(self.redis_key_prefix)

    def ports(self, instance: int = 0) -> tuple[int, int]:
        """(API port, base port of the other stages) of the workers numbered ``instance``;
        several workers of one stage on one machine each need their own web port."""
        if instance == 0:
            return self.api_port, self.base_port
        if instance not in self._instance_ports:
            self._instance_ports[instance] = (_free_port_block(1), _free_port_block(4))
        return self._instance_ports[instance]

    def env(self, stage: Stage, instance: int = 0) -> dict[str, str]:
        api_port, base_port = self.ports(instance)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
        env.update(
            {
                "ALPHA_PANDA_STAGE": stage.value,
                "ALPHA_PANDA_BROKER_URL": self.bootstrap,
                "ALPHA_PANDA_BROKER_ENABLE_IDEMPOTENCE": "false",
                "ALPHA_PANDA_DATA_DIR": str(self.data_dir),
                "ALPHA_PANDA_DATABASE_URL": self.database_url,
                "ALPHA_PANDA_DATABASE_CONFIG_REFRESH_S": "0.3",
                "ALPHA_PANDA_REDIS_URL": self.redis_url,
                REDIS_KEY_PREFIX_ENV: self.redis_key_prefix,
                "ALPHA_PANDA_WEB_PORT": str(api_port),
                "ALPHA_PANDA_WEB_STAGE_BASE_PORT": str(base_port),
                "ALPHA_PANDA_LOG_LEVEL": "INFO",
                # Tests run at any hour with ticks at chosen times; the trading-day tests
                # turn these back on through extra_env.
                "ALPHA_PANDA_FEED_SESSIONS_ONLY": "false",
                "ALPHA_PANDA_MARKET_ENFORCE_SESSIONS": "false",
            }
        )
        env.update(self.extra_env)
        return env

    def port(self, stage: Stage, instance: int = 0) -> int:
        api_port, base_port = self.ports(instance)
        if stage is Stage.PORTFOLIO_MANAGER:
            return api_port
        others = [s for s in Stage if s is not Stage.PORTFOLIO_MANAGER]
        return base_port + others.index(stage)


# Below the kernel's ephemeral range (32768+), so no outgoing client connection of the
# tests can be holding a worker's web port when the worker (re)starts and binds it.
_PORT_LOW, _PORT_HIGH = 20000, 32000


def _free_port_block(size: int) -> int:
    while True:
        base = random.randrange(_PORT_LOW, _PORT_HIGH - size)
        if all(_port_free(base + i) for i in range(size)):
            return base


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class StageProcess:
    def __init__(self, deployment: Deployment, stage: Stage, instance: int = 0) -> None:
        self.deployment = deployment
        self.stage = stage
        self.instance = instance  # several workers of one stage: 0, 1, ...
        suffix = f"-{instance}" if instance else ""
        self.log_path = deployment.data_dir / "logs" / f"{stage.value}{suffix}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> StageProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as sink:
            self.proc = subprocess.Popen(
                [FAUST, "-A", "alpha_panda", "worker", "-l", "info"],
                env=self.deployment.env(self.stage, self.instance),
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
            )
        return self

    @property
    def port(self) -> int:
        return self.deployment.port(self.stage, self.instance)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as resp:
                body = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as err:
            body, status, ctype = err.read(), err.code, err.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(body)
        return status, body.decode()

    def wait_ready(self, timeout: float = 60.0, require: str | None = None) -> dict[str, Any]:
        """Block until /health says ready (and, if given, `require` appears in it)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.stage.value} exited: {self.tail()}")
            try:
                status, body = self.get("/health")
                last = body
                ours = isinstance(body, dict) and body.get("pid") == self.proc.pid  # type: ignore[union-attr]
                if status == 200 and ours and (require is None or require in json.dumps(body)):
                    return body  # type: ignore[no-any-return]
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"{self.stage.value} not ready in {timeout}s: {last}\n{self.tail()}")

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        return self.kill(signal.SIGTERM)

    def tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            line = line.strip().lstrip("\x1b[?25lh")
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return events


async def produce(
    bootstrap: str, records: Iterable[OutgoingRecord | tuple[str, bytes, bytes]]
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=1, linger_ms=2
    )
    await producer.start()
    try:
        for record in records:
            if isinstance(record, OutgoingRecord):
                await producer.send(record.topic, key=record.key, value=record.value)
            else:
                topic, key, value = record
                await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    until: int | None = None,
    timeout: float = 30.0,
) -> list[Any]:
    """Read a topic from the beginning.

    With `until`: wait (with a deadline) until that many records have arrived. Without
    it: read everything up to the high watermarks as they stand when the call starts.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        try:
            count = partitions_of(topic)
        except KeyError:  # a Faust changelog topic: ask the broker
            await consumer._client.force_metadata_update()
            count = len(consumer.partitions_for_topic(topic) or ())
        partitions = [TopicPartition(topic, p) for p in range(count)]
        end: dict[TopicPartition, int] = {}
        if until is None:  # the embedded broker's listed end offsets can be short
            marks = await watermarks(consumer, partitions, stall_s=timeout)
            end = {tp: high for tp, (_, high) in marks.items()}
        consumer.assign(partitions)
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if until is None and await _reached(consumer, end):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(messages)
            if until is not None and len(records) >= until:
                break
        else:
            if until is None:
                raise AssertionError(f"{topic}: could not read to the end within {timeout}s")
    finally:
        await consumer.stop()
    if until is not None and len(records) < until:
        raise AssertionError(f"{topic}: {len(records)} of {until} records within {timeout}s")
    return records


async def _reached(consumer: AIOKafkaConsumer, end: dict[TopicPartition, int]) -> bool:
    for tp, offset in end.items():
        if await consumer.position(tp) < offset:
            return False
    return True


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def scrape(process: StageProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse a stage's /metrics (Prometheus text format) into {(name, labels): value}."""
    status, text = process.get("/metrics")
    assert status == 200, text
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in str(text).splitlines():
        if not line or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        name, _, label_text = series.partition("{")
        labels = frozenset(
            (k, v.strip('"'))
            for k, _, v in (
                pair.partition("=") for pair in label_text.rstrip("}").split(",") if pair
            )
        )
        samples[(name, labels)] = float(value)
    return samples


def metric(process: StageProcess, name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scrape(process).items() if n == name and wanted <= ls)


@dataclass(frozen=True)
class NotYet:
    """A :func:`wait_for` predicate's "not yet" that carries what it saw, for the timeout's
    message. Return this, never the observation itself: a non-empty body is truthy, and
    ``return done or body`` ended the wait at once, done or not."""

    seen: Any

    def __bool__(self) -> bool:
        return False


def wait_for(predicate: Any, *, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last})")


async def high_watermarks(bootstrap: str, topic: str, partitions: int) -> list[int]:
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    ends = await confirmed_high_watermarks([bootstrap], tps)
    return [ends[tp] for tp in tps]


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(TopicPartition(topic, p)) for p in range(partitions)]
    finally:
        await consumer.stop()


def wait_committed(bootstrap: str, stage: Stage, topic: str, *, timeout: float = 60.0) -> None:
    """Wait until `stage` has committed all of `topic`.

    Write-behind tables reach their changelog right before each commit
    (alpha_panda/write_behind.py), so after this a changelog holds the state of
    everything the stage consumed from `topic`.
    """
    partitions = partitions_of(topic)
    ends = run(high_watermarks(bootstrap, topic, partitions))

    def caught_up() -> bool:
        done = run(committed(bootstrap, stage.consumer_group, topic, partitions))
        # An empty partition has nothing to commit (None).
        return all(end == 0 or offset == end for offset, end in zip(done, ends, strict=True))

    wait_for(caught_up, timeout=timeout, what=f"{stage.value} to commit {topic}")


async def latest_per_key(bootstrap: str, topic: str) -> dict[str, Any]:
    """Latest value per key of a Faust changelog topic (keys and values are JSON)."""
    records = await read_topic(bootstrap, topic, timeout=30)
    latest: dict[str, Any] = {}
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        latest[json.loads(record.key)] = json.loads(record.value)
    return latest
