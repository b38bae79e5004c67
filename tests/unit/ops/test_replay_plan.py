"""`alpha-panda replay` without a broker: what a stage consumes, how targets become
offsets, and how the broker's group description is judged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition

from alpha_panda.ops import EXIT_USAGE, OpsError
from alpha_panda.ops.replay import (
    REPLAY_CAUTION,
    GroupDescription,
    Member,
    PartitionStatus,
    Target,
    TargetKind,
    consumed_topics,
    decide,
    describe_members,
    parse_datetime,
    parse_description,
    parse_stage,
    plan_offset,
)
from alpha_panda.settings import Stage
from alpha_panda.stages import STAGES

EARLIEST = Target(TargetKind.EARLIEST)


def test_a_stage_replays_what_its_spec_consumes() -> None:
    for stage in Stage:
        if stage is not Stage.MARKET_FEED:
            assert consumed_topics(stage) == STAGES[stage].inputs != ()


def test_market_feed_has_nothing_to_replay() -> None:
    with pytest.raises(OpsError, match="consumes no topics") as err:
        consumed_topics(Stage.MARKET_FEED)
    assert err.value.code == EXIT_USAGE


def test_unknown_stage_is_bad_input_naming_the_known_ones() -> None:
    with pytest.raises(OpsError, match="known: market-feed, strategy-runner") as err:
        parse_stage("strategy")
    assert err.value.code == EXIT_USAGE
    assert parse_stage("risk-manager") is Stage.RISK_MANAGER


def test_datetime_needs_an_offset() -> None:
    ist = timezone(timedelta(hours=5, minutes=30))
    assert parse_datetime("2026-01-05T09:15:00+05:30") == datetime(2026, 1, 5, 9, 15, tzinfo=ist)
    assert parse_datetime("2026-01-05T03:45:00Z") == datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
    for bad, reason in (("2026-01-05T09:15", "no UTC offset"), ("yesterday", "not ISO 8601")):
        with pytest.raises(OpsError, match=reason) as err:
            parse_datetime(bad)
        assert err.value.code == EXIT_USAGE


def test_target_in_milliseconds() -> None:
    at = datetime(2026, 1, 5, 3, 45, tzinfo=UTC)
    assert Target(TargetKind.DATETIME, at=at).at_ms == int(at.timestamp()) * 1000


def test_earliest_is_the_log_start() -> None:
    assert plan_offset(EARLIEST, 3, 10).offset == 3


@pytest.mark.parametrize(
    ("wanted", "offset", "note"),
    [
        (5, 5, ""),
        (3, 3, ""),
        (10, 10, ""),  # the high watermark itself: "nothing left to read" is valid
        (1, 3, "clamped to the log start 3"),
        (99, 10, "clamped to the high watermark 10"),
    ],
)
def test_explicit_offsets_are_clamped_into_the_log(wanted: int, offset: int, note: str) -> None:
    planned = plan_offset(Target(TargetKind.OFFSET, offset=wanted), 3, 10)
    assert (planned.offset, planned.note) == (offset, note)


def test_datetime_takes_the_lookup_or_the_end() -> None:
    target = Target(TargetKind.DATETIME, at=datetime(2026, 1, 5, tzinfo=UTC))
    assert plan_offset(target, 0, 10, found=4).offset == 4
    end = plan_offset(target, 0, 10, found=None)
    assert (end.offset, end.note) == (10, "no record at or after that time: end of the log")


GROUP = "alpha-panda.strategy-runner"


def response(*groups: tuple[object, ...]) -> SimpleNamespace:
    return SimpleNamespace(groups=list(groups))


def test_description_is_parsed_from_the_broker_answer() -> None:
    answer = response(
        (0, "other", "Stable", "consumer", "", []),
        (0, GROUP, "Stable", "consumer", "range", [("m-1", "faust-1", "/10.0.0.5", b"", b"")]),
    )
    assert parse_description(answer, GROUP) == GroupDescription(
        "Stable", (Member("m-1", "faust-1", "/10.0.0.5"),)
    )
    with pytest.raises(OpsError, match="error code 16"):
        parse_description(response((16, GROUP, "", "", "", [])), GROUP)
    with pytest.raises(OpsError, match="did not describe"):
        parse_description(response(), GROUP)


def test_no_members_is_inactive() -> None:
    activity = decide(GroupDescription("Empty", ()), GROUP)
    assert activity is not None and not activity.active


def test_members_with_details_are_active() -> None:
    activity = decide(GroupDescription("Stable", (Member("m-1", "faust-1", "/10.0.0.5"),)), GROUP)
    assert activity is not None and activity.active
    assert "1 active member(s): faust-1@/10.0.0.5" in activity.reason


def test_bare_member_ids_cannot_be_judged_from_the_broker_alone() -> None:
    # The embedded broker's answer: it may list a consumer that has already gone.
    assert decide(GroupDescription("Stable", (Member("m-1", "", ""),)), GROUP) is None


def test_partition_lag_counts_from_the_commit_or_the_log_start() -> None:
    tp = TopicPartition("market.ticks", 3)
    assert PartitionStatus(tp, 7, 0, 10).lag == 3
    assert PartitionStatus(tp, None, 4, 10).lag == 6  # never committed: from the log start
    assert PartitionStatus(tp, 2, 4, 10).lag == 6  # committed below a deleted log start
    assert PartitionStatus(tp, 10, 0, 10).line() == "market.ticks[3]\t10\t10\t0"
    assert PartitionStatus(tp, None, 0, 0).line() == "market.ticks[3]\tnone\t0\t0"


def test_member_descriptions() -> None:
    assert describe_members(GROUP, GroupDescription("Empty", ())) == (
        f"group {GROUP}: Empty, 0 member(s)"
    )
    real = GroupDescription("Stable", (Member("m-1", "faust-1", "/10.0.0.5"),))
    assert describe_members(GROUP, real) == (
        f"group {GROUP}: Stable, 1 member(s): faust-1@/10.0.0.5"
    )
    bare = describe_members(GROUP, GroupDescription("Stable", (Member("m-1", "", ""),)))
    assert bare.startswith(f"group {GROUP}: Stable, 1 member(s): m-1 (this broker keeps")


def test_replay_cautions_where_memory_of_handled_inputs_is_bounded() -> None:
    assert set(REPLAY_CAUTION) == {Stage.RISK_MANAGER, Stage.TRADING_ENGINE}
