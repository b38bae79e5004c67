"""The workarounds package (alpha_panda/workarounds/): its version check, each module's
stated defect / versions / proof, the reach-ins on a real stage app, the broker-kind switch.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition

import alpha_panda.workarounds as workarounds
from alpha_panda.factory import create_app
from alpha_panda.settings import BrokerKind, Stage, load_settings
from alpha_panda.workarounds import faust_internals
from alpha_panda.workarounds._versions import (
    WorkaroundVersionError,
    require_source,
    require_versions,
)
from alpha_panda.workarounds.recovery import (
    HardenedTableManager,
    ListedEndsTableManager,
    table_manager_for,
)

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(
    m.name for m in pkgutil.iter_modules(workarounds.__path__) if not m.name.startswith("_")
)


def test_a_version_mismatch_names_the_workaround_the_package_and_both_versions() -> None:
    installed = version("aiokafka")
    require_versions("w", {"aiokafka": installed})  # the installed one passes
    with pytest.raises(WorkaroundVersionError) as err:
        require_versions("alpha_panda.workarounds.x", {"aiokafka": "0.0.1"})
    message = str(err.value)
    assert "alpha_panda.workarounds.x" in message
    assert f"aiokafka 0.0.1, but {installed} is installed" in message
    with pytest.raises(WorkaroundVersionError, match=r"no-such-package 1\.0, but none"):
        require_versions("w", {"no-such-package": "1.0"})


def test_a_source_check_fails_when_the_private_name_is_gone() -> None:
    def sample() -> int:
        kept = 1
        return kept

    require_source("w", sample, "kept = 1")
    with pytest.raises(WorkaroundVersionError, match="'renamed'"):
        require_source("w", sample, "kept = 1", "renamed")


@pytest.mark.parametrize("name", MODULES)
def test_each_workaround_names_its_defect_checked_versions_and_proof(name: str) -> None:
    module = importlib.import_module(f"alpha_panda.workarounds.{name}")
    doc = module.__doc__ or ""
    assert "**Defect" in doc, name
    assert "**Versions checked**" in doc, name
    assert "**Proof it is still needed**" in doc, name
    checked: dict[str, str] = module.CHECKED_VERSIONS
    for package, expected in checked.items():
        assert version(package) == expected  # else the import above would have failed
        assert f"{package} {expected}" in doc, (name, package)
    tests = re.findall(r"``(tests/[\w/]+\.py)``", doc)
    assert tests, f"{name} names no test"
    for path in tests:
        assert (ROOT / path).is_file(), path
    # ... and the architecture document lists it.
    assert f"alpha_panda/workarounds/{name}.py" in (ROOT / "docs/ARCHITECTURE.md").read_text()


def test_the_constraints_pin_every_checked_version() -> None:
    pins = dict(
        line.split("==", 1)
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    for name in MODULES:
        module = importlib.import_module(f"alpha_panda.workarounds.{name}")
        for package, expected in module.CHECKED_VERSIONS.items():
            assert pins.get(package) == expected, (name, package)


def _app(**broker: Any) -> Any:
    settings = load_settings(redis={"enabled": False}, broker=broker)
    return create_app(settings, Stage.RISK_MANAGER)


async def test_the_fetch_wait_reaches_the_worker_consumers_fetcher_on_assignment() -> None:
    app = _app(fetch_max_wait_ms=77)
    fetcher = SimpleNamespace(_fetch_max_wait_ms=1500)  # aiokafka's Fetcher, as Faust builds it
    app.consumer._thread._consumer = SimpleNamespace(_fetcher=fetcher)
    await app.on_partitions_assigned.send(assigned=set())
    assert fetcher._fetch_max_wait_ms == 77


def test_the_committed_offset_is_read_from_fausts_consumer() -> None:
    consumer = _app().consumer
    tp = TopicPartition("t", 0)
    assert faust_internals.committed_offset(consumer, tp) is None
    consumer._committed_offset[tp] = 41  # what Faust stores after a commit: last acked + 1
    assert faust_internals.committed_offset(consumer, tp) == 41


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def flush(self) -> None:
        self.calls.append("flush")

    async def flush_for_commit(self) -> None:
        self.calls.append("flush_for_commit")


async def test_open_batches_are_closed_rather_than_lingered_out() -> None:
    buffer, accumulator = _Recorder(), _Recorder()
    client = SimpleNamespace(_message_accumulator=accumulator)
    fallback = _Recorder()
    producer = SimpleNamespace(buffer=buffer, _producer=client, flush=fallback.flush)
    await faust_internals.flush_open_batches(producer)
    assert buffer.calls == ["flush"]
    assert accumulator.calls == ["flush_for_commit"]
    assert fallback.calls == []
    # Not started yet: Faust's own flush.
    producer = SimpleNamespace(buffer=_Recorder(), _producer=None, flush=fallback.flush)
    await faust_internals.flush_open_batches(producer)
    assert fallback.calls == ["flush"]


def test_the_broker_kind_turns_off_the_end_offset_confirmation_on_redpanda() -> None:
    assert table_manager_for(BrokerKind.EMBEDDED) is HardenedTableManager
    assert table_manager_for(BrokerKind.REDPANDA) is ListedEndsTableManager
    embedded = _app().tables
    redpanda = _app(kind="redpanda").tables
    assert type(embedded) is HardenedTableManager
    assert type(redpanda) is ListedEndsTableManager
    assert embedded.recovery.confirm_end_offsets is True
    assert redpanda.recovery.confirm_end_offsets is False
    # The hand-over fix (defect 1) stays on both.
    assert type(redpanda.recovery).on_recovery_completed is (
        type(embedded.recovery).on_recovery_completed
    )


async def test_the_tables_are_not_ready_until_the_latest_rebalance_is_recovered() -> None:
    # Defect 3: after a rebalance Faust's recovery waits its recovery_delay before it sets
    # in_recovery, and `completed` stays set from the previous recovery.
    app = _app()
    recovery = app.tables.recovery
    app.consumer_generation_id = 1
    assert not recovery.holds_assignment()  # never recovered
    recovery._generation_id = 1
    recovery._recovered(1)
    recovery.completed.set()
    assert recovery.holds_assignment()
    # A rebalance (generation 2) signals its recovery; nothing has started yet. Faust's
    # own flags still say "recovered" (the old check), the generations do not.
    app.consumer_generation_id = recovery._generation_id = 2
    assert recovery.completed.is_set() and not recovery.in_recovery
    assert not recovery.holds_assignment()
    recovery._recovered(2)
    assert recovery.holds_assignment()
    # A recovery that ends after yet another rebalance began does not count.
    app.consumer_generation_id = recovery._generation_id = 3
    recovery._recovered(2)
    assert not recovery.holds_assignment()


# The private names the workarounds reach; no other production module may use them.
PRIVATE_NAMES = re.compile(
    r"\.(_message_accumulator|_committed_offset|_fetch_max_wait_ms|_ensure_consumer|_fetcher"
    r"|_runner|_client|_thread|_producer|_generation_id)\b|\b(_drain_messages|_build_highwaters"
    r"|_resume_streams|_make_server)\b"
)


def test_no_module_outside_the_package_reaches_the_private_names() -> None:
    offenders = []
    for package in ("alpha_panda", "agents", "tables", "strategies", "models", "web"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_relative_to(ROOT / "alpha_panda" / "workarounds"):
                continue
            for number, line in enumerate(path.read_text().splitlines(), 1):
                code = re.sub(r"\bself\._\w+", "", line)  # a class's own private state is its own
                if PRIVATE_NAMES.search(code):
                    offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == [], "move these into alpha_panda/workarounds/:\n" + "\n".join(offenders)
