"""`make run` stopped and started again keeps its history: the embedded broker's log is
saved at the clean stop and restored, same offsets, at the next start."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis

from alpha_panda.broker import EmbeddedBroker, free_port
from alpha_panda.log_snapshot import Snapshot, write_snapshot
from alpha_panda.mirror import MirrorKeys
from alpha_panda.settings import Stage
from alpha_panda.topics import MARKET_TICKS, ORDERS_FILLED_PAPER, partitions_of
from tests.integration.harness import (
    Deployment,
    committed,
    metric,
    produce,
    read_topic,
    scrape,
    wait_committed,
    wait_for,
)
from tests.integration.pipeline_run import ALPHA_PANDA, Run

pytestmark = pytest.mark.integration

TICKS = 1_000
DLQ = MARKET_TICKS.dlq_name


def _records(bootstrap: str, topic: str) -> list[tuple[int, int, Any, Any, Any]]:
    records = asyncio.run(read_topic(bootstrap, topic))
    return sorted((r.partition, r.offset, r.key, r.value, tuple(r.headers)) for r in records)


def _drained(run: Run, stages: list[Stage]) -> bool:
    """Every record a stage produced has been processed by the stage consuming it."""
    produced: dict[str, float] = {}
    processed: dict[str, float] = {}
    for stage in stages:
        for (name, labels), value in scrape(run.stage(stage)).items():
            topic = dict(labels).get("topic", "")
            if name == "alpha_panda_messages_produced_total" and not topic.endswith(".dlq"):
                produced[topic] = produced.get(topic, 0.0) + value
            elif name == "alpha_panda_messages_processed_total":
                processed[topic] = processed.get(topic, 0.0) + value
    return all(processed.get(topic, 0.0) >= n for topic, n in produced.items())


def _mirrored(client: redis.Redis, keys: MirrorKeys) -> dict[str, Any]:
    ids = sorted(m.decode() for m in client.smembers(keys.portfolios))
    return {sid: json.loads(client.get(keys.portfolio(sid)) or b"null") for sid in ids}


def test_stop_and_start_keeps_fills_portfolios_offsets_and_dlq(
    tmp_path: Path, redis_url: str
) -> None:
    deployment = Deployment(
        bootstrap=f"127.0.0.1:{free_port()}",
        data_dir=tmp_path / "var",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'config.db'}",
        redis_url=redis_url,
        extra_env={
            "ALPHA_PANDA_FEED_TICKS_PER_SECOND": "100",
            "ALPHA_PANDA_FEED_MAX_TICKS": str(TICKS),
        },
    )
    bootstrap = deployment.bootstrap
    keys = deployment.mirror_keys
    client = redis.Redis.from_url(redis_url)
    stages = list(Stage)

    first = Run(tmp_path, stages, deployment=deployment, name="first")
    try:
        for stage in stages:
            first.health_pid(stage)
        asyncio.run(produce(bootstrap, [(MARKET_TICKS.name, b"738561", b"not a tick")]))
        feed = first.stage(Stage.MARKET_FEED)
        wait_for(
            lambda: metric(feed, "alpha_panda_messages_produced_total") >= TICKS,
            timeout=120,
            what="the feed to publish its ticks",
        )
        wait_for(lambda: _drained(first, stages), timeout=120, what="the pipeline to drain")
        wait_committed(bootstrap, Stage.PORTFOLIO_MANAGER, ORDERS_FILLED_PAPER.name)
        wait_committed(bootstrap, Stage.STRATEGY_RUNNER, MARKET_TICKS.name)
        # Its offsets are compared below: read them once it has committed every tick, not
        # while its last commit is still due (the clean stop would then move them on).
        wait_committed(bootstrap, Stage.PORTFOLIO_MANAGER, MARKET_TICKS.name)
        fills = _records(bootstrap, ORDERS_FILLED_PAPER.name)
        dead = _records(bootstrap, DLQ)
        assert fills, "no fills: nothing to keep"
        # Each of the three stages that consume ticks dead-letters the poison pill once.
        assert [d[3] for d in dead] == [b"not a tick"] * 3
        offsets = {
            (stage, topic): asyncio.run(
                committed(bootstrap, stage.consumer_group, topic, partitions_of(topic))
            )
            for stage, topic in [
                (Stage.PORTFOLIO_MANAGER, ORDERS_FILLED_PAPER.name),
                (Stage.STRATEGY_RUNNER, MARKET_TICKS.name),
                (Stage.PORTFOLIO_MANAGER, MARKET_TICKS.name),
            ]
        }
        sids = {json.loads(f[2]) if f[2].startswith(b'"') else f[2].decode() for f in fills}
        wait_for(
            lambda: set(_mirrored(client, keys)) >= sids, timeout=30, what="portfolios mirrored"
        )
        portfolios = _mirrored(client, keys)
        log_id = client.get(keys.log_id)
        assert log_id is not None
    finally:
        first.stop()
    assert first.proc.returncode == 0, first.output()
    assert "log: saved" in first.output()

    # Redis loses the portfolios (it keeps nothing on disk): only a rebuild of the portfolio
    # manager's tables from the restored log can bring them back.
    client.delete(keys.portfolios, *(keys.portfolio(sid) for sid in portfolios))

    second = Run(tmp_path, [Stage.PORTFOLIO_MANAGER], deployment=deployment, name="second")
    try:
        second.health_pid(Stage.PORTFOLIO_MANAGER)
        assert "log: restored" in second.output()
        assert _records(bootstrap, ORDERS_FILLED_PAPER.name) == fills
        assert _records(bootstrap, DLQ) == dead
        for (stage, topic), before in offsets.items():
            after = asyncio.run(
                committed(bootstrap, stage.consumer_group, topic, partitions_of(topic))
            )
            assert after == before, (stage, topic)
        wait_for(
            lambda: _mirrored(client, keys) == portfolios,
            timeout=30,
            what="the recovered portfolios in the mirror",
        )
        assert client.get(keys.log_id) == log_id  # the same log: the mirror was kept

        # A broker crash: the supervisor restarts it from the last clean stop's snapshot,
        # under a new log id (records since that stop are lost), and the mirror, which may
        # hold state from those records, is cleared and rebuilt from the restored log.
        pm_pid = second.health_pid(Stage.PORTFOLIO_MANAGER)
        os.kill(second.broker_pid(), signal.SIGKILL)
        second.health_pid(Stage.PORTFOLIO_MANAGER, not_pid=pm_pid)
        assert "new log id" in second.output()
        wait_for(
            lambda: client.get(keys.log_id) not in (None, log_id),
            timeout=30,
            what="the mirror to be tied to the new log",
        )
        assert _records(bootstrap, ORDERS_FILLED_PAPER.name) == fills
        wait_for(
            lambda: _mirrored(client, keys) == portfolios,
            timeout=30,
            what="the portfolios rebuilt in the cleared mirror",
        )
        status, health = second.stage(Stage.PORTFOLIO_MANAGER).get("/health")
        assert status == 200
        assert "a crash of the broker loses every record since" in health["checks"]["log"]["detail"]
    finally:
        second.stop()
    assert second.proc.returncode == 0, second.output()


def test_broker_reset_deletes_the_saved_log_only_when_confirmed(
    tmp_path: Path, fresh_broker: EmbeddedBroker
) -> None:
    path = tmp_path / "broker" / "log.snapshot"
    write_snapshot(path, Snapshot("log-1", "2026-11-30T07:00:00+00:00", {}, {}, {}), iter(()))

    def reset(
        *flags: str, answer: str = "", url: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHA_PANDA_")}
        env["ALPHA_PANDA_DATA_DIR"] = str(tmp_path)
        env["ALPHA_PANDA_BROKER_URL"] = url or f"127.0.0.1:{free_port()}"
        return subprocess.run(
            [ALPHA_PANDA, "broker", "--reset", *flags],
            input=answer,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    refused = reset("--yes", url=fresh_broker.bootstrap)  # a running broker would save over it
    assert refused.returncode == 1 and "stop the pipeline first" in refused.stderr
    declined = reset(answer="no\n")
    assert declined.returncode == 1 and "not reset" in declined.stdout
    assert "0 records" in declined.stdout and path.exists()
    confirmed = reset(answer="reset\n")
    assert confirmed.returncode == 0, confirmed.stderr
    assert not path.exists()
    write_snapshot(path, Snapshot("log-2", "2026-11-30T08:00:00+00:00", {}, {}, {}), iter(()))
    assert reset("--yes").returncode == 0 and not path.exists()
    assert "nothing to reset" in reset("--yes").stdout
