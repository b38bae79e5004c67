"""A poison pill on every consumed topic lands in its DLQ with the mandated headers; every
good record around it is processed; /metrics counts say so (parsed from the text format)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.settings import Stage, load_settings
from alpha_panda.stages import STAGES
from alpha_panda.topics import (
    ENGINE_SIGNALS_BY_INSTRUMENT,
    MARKET_TICKS,
    ORDERS_FILLED_LIVE,
    ORDERS_FILLED_PAPER,
    RISK_SIGNALS_BY_STRATEGY,
    RUNNER_FILLS_BY_INSTRUMENT,
    RUNNER_REJECTIONS_BY_INSTRUMENT,
    SIGNALS_GENERATED,
    SIGNALS_REJECTED,
    SIGNALS_VALIDATED,
    OutgoingRecord,
    TopicSpec,
)
from models.envelope import EventType
from models.events import (
    ExecutionMode,
    RejectionReason,
    Side,
    ValidatedSignal,
)
from tests.factories import OPEN, fill, rejection, signal, tick
from tests.integration.harness import (
    Deployment,
    StageProcess,
    metric,
    produce,
    read_topic,
    wait_for,
)

pytestmark = pytest.mark.integration
PILL = b'{"type": "market.tick", "version": 1, "data": "not an object"'

# topic -> the stages that consume it, as their specs declare (alpha_panda/stages.py)
CONSUMERS: dict[str, list[Stage]] = {}
for _stage in STAGES.values():
    for _topic in _stage.inputs:
        CONSUMERS.setdefault(_topic.name, []).append(_stage.stage)


def good_records(spec: TopicSpec, n: int) -> list[OutgoingRecord]:
    out = []
    for i in range(n):
        ts = OPEN + timedelta(seconds=i)
        payload: object
        kind = spec.event_type
        nobody = signal(quantity=1, price="100", token=101, strategy_id="nobody", ts=ts)
        if kind is EventType.MARKET_TICK:
            payload = tick("100", ts=ts, token=101, volume=i)
        elif kind is EventType.SIGNAL_GENERATED:
            payload = nobody
        elif kind is EventType.SIGNAL_VALIDATED:
            payload = ValidatedSignal(signal_event_id=f"v{i}", signal=nobody, validated_ts=ts)
        elif kind is EventType.SIGNAL_REJECTED:
            payload = rejection(
                nobody, RejectionReason.MAX_POSITION, signal_event_id=f"r{i}", rejected_by="test"
            )
        else:
            live = spec is ORDERS_FILLED_LIVE
            payload = fill(
                f"{spec.name}-{i}",
                Side.BUY,
                1,
                "100",
                strategy_id="nobody",
                token=101,
                ts=ts,
                mode=ExecutionMode.LIVE if live else ExecutionMode.PAPER,
            )
        out.append(spec.record(payload, event_id=f"{spec.name}-good-{i}", ts=ts, source="test"))  # type: ignore[arg-type]
    return out


@pytest.fixture
def deployment(fresh_broker: EmbeddedBroker, pg_url: str, tmp_path: Path) -> Deployment:
    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))

    async def empty_config() -> None:
        engine = db.create_engine(pg_url)
        try:
            await db.upgrade(engine)  # no strategies: risk rejects every signal as unknown
        finally:
            await engine.dispose()

    asyncio.run(empty_config())
    return Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        extra_env={"ALPHA_PANDA_REDIS_ENABLED": "false"},
    )


def test_a_poison_pill_on_each_consumed_topic_is_dead_lettered_and_the_rest_processed(
    deployment: Deployment,
) -> None:
    stages = [
        Stage.PORTFOLIO_MANAGER,
        Stage.TRADING_ENGINE,
        Stage.RISK_MANAGER,
        Stage.STRATEGY_RUNNER,
    ]
    workers = {s: StageProcess(deployment, s).start() for s in stages}
    specs = [
        MARKET_TICKS,
        SIGNALS_GENERATED,
        RISK_SIGNALS_BY_STRATEGY,
        SIGNALS_VALIDATED,
        ENGINE_SIGNALS_BY_INSTRUMENT,
        SIGNALS_REJECTED,
        ORDERS_FILLED_PAPER,
        ORDERS_FILLED_LIVE,
        RUNNER_FILLS_BY_INSTRUMENT,
        RUNNER_REJECTIONS_BY_INSTRUMENT,
    ]
    try:
        for w in workers.values():
            w.wait_ready()
        # Ticks first so the engine has a price; then, per topic: good, pill, good.
        batches = []
        for spec in specs:
            good = good_records(spec, 2)
            key = good[0].key
            batches += [good[0], (spec.name, key, PILL), good[1]]
        asyncio.run(produce(deployment.bootstrap, batches))

        for spec in specs:
            dlq = asyncio.run(
                read_topic(deployment.bootstrap, spec.dlq_name, until=len(CONSUMERS[spec.name]))
            )
            assert sorted(dict(r.headers)["x-stage"].decode() for r in dlq) == sorted(
                s.value for s in CONSUMERS[spec.name]
            ), spec.name
            for record in dlq:
                headers = dict(record.headers)
                assert record.value == PILL
                assert record.key == good_records(spec, 1)[0].key
                assert headers["x-error-type"].startswith(b"DecodeError.")
                assert headers["x-original-topic"] == spec.name.encode()
                assert headers["x-attempts"] == b"1"
                assert int(headers["x-original-offset"]) >= 0
                assert int(headers["x-original-partition"]) >= 0
                assert headers["x-error-message"]

        processed = "alpha_panda_messages_processed_total"
        runner, risk, engine, pm = (workers[s] for s in reversed(stages))
        # Exactly the good records, per stage and topic (risk rejects the 2 generated
        # signals as unknown; those rejections reach the portfolio manager too).
        wait_for(
            lambda: metric(runner, processed, topic=MARKET_TICKS.name) == 2, what="runner ticks"
        )
        wait_for(
            lambda: metric(risk, processed, topic=SIGNALS_GENERATED.name) == 2,
            what="risk generated",
        )
        # 2 forwarded by risk's own repartition + 2 produced straight to its topic
        wait_for(
            lambda: metric(risk, processed, topic=RISK_SIGNALS_BY_STRATEGY.name) == 4,
            what="risk decided",
        )
        wait_for(
            lambda: metric(engine, processed, topic=SIGNALS_VALIDATED.name) == 2,
            what="engine validated",
        )
        wait_for(
            lambda: metric(engine, processed, topic=ENGINE_SIGNALS_BY_INSTRUMENT.name) == 4,
            what="engine executed",
        )
        wait_for(
            lambda: metric(pm, processed, topic=ORDERS_FILLED_LIVE.name) == 2, what="live fills"
        )
        wait_for(
            lambda: (
                metric(pm, processed, topic=ORDERS_FILLED_PAPER.name)
                + metric(pm, processed, topic=SIGNALS_REJECTED.name)
                == 2 + 2 + 4 + 4
            ),  # ours + ours + risk's 4 rejections + the engine's 4 outcomes
            what="portfolio fills and rejections",
        )
        # The runner forwards every good fill and rejection the portfolio manager saw
        # (2 + 2 live among them) to its own topics, where 2 more were produced to each.
        wait_for(
            lambda: (
                metric(runner, processed, topic=RUNNER_FILLS_BY_INSTRUMENT.name)
                + metric(runner, processed, topic=RUNNER_REJECTIONS_BY_INSTRUMENT.name)
                == 2 + 2 + 4 + 4 + 2 + 2 + 2
            ),
            what="runner's own fills and rejections",
        )
        for stage, w in workers.items():
            for topic, consumers in CONSUMERS.items():
                if stage in consumers:
                    assert metric(w, "alpha_panda_dlq_records_total", topic=topic) == 1, (
                        stage,
                        topic,
                    )
                    assert (
                        metric(w, "alpha_panda_messages_failed_total", topic=topic, kind="decode")
                        == 1
                    )
                    assert (
                        metric(w, "alpha_panda_messages_consumed_total", topic=topic)
                        == metric(w, processed, topic=topic) + 1
                    )
        for w in workers.values():
            assert w.proc is not None and w.proc.poll() is None, (
                "a poison pill must not crash a stage"
            )
    finally:
        for w in workers.values():
            w.stop()
