"""Several portfolio-manager workers: key ownership, and reads that are never partial."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from aiokafka.partitioner import DefaultPartitioner

from alpha_panda.ownership import Ownership, partition_for
from alpha_panda.topics import Tables
from tests.unit.web.test_api import (
    MOM_FILLS,
    book,
    mirror,
    model,
    redis_reader,
    tables_with_mom,
)
from web.api import ApiError, PortfolioReader, ReadApi


@pytest.mark.parametrize("key", ["mom", "mr-a", "256265", "mom:738561", "ünïcode"])
@pytest.mark.parametrize("partitions", [1, 3, 6, 12])
def test_partition_is_the_producers_default_partitioner_of_the_source_key(
    key: str, partitions: int
) -> None:
    everyone = list(range(partitions))
    assert partition_for(key, partitions) == DefaultPartitioner()(key.encode(), everyone, everyone)


def test_the_json_serialized_key_faust_routes_by_lands_elsewhere_for_some_keys() -> None:
    # Why alpha_panda/ownership.py exists: Faust's table_route hashes '"mom-a"'.
    keys = ["mom-a", "mom-b", "mr-a", "mr-b", "mom-c", "mr-c"]
    assert any(partition_for(k, 3) != partition_for(f'"{k}"', 3) for k in keys)


class FakeTopic:
    def __init__(self, name: str) -> None:
        self.name = name

    def get_topic_name(self) -> str:
        return self.name


class FakeTable:
    def __init__(self, name: str, partitions: int) -> None:
        self.changelog_topic = FakeTopic(f"{name}-changelog")
        self.partitions = partitions


class FakeAssignor:
    def __init__(self, actives: set[Any], distribution: dict[str, Any]) -> None:
        self._actives = actives
        self.changelog_distribution = distribution

    def assigned_actives(self) -> set[Any]:
        return self._actives

    def is_active(self, tp: Any) -> bool:
        return tp in self._actives


class FakeConf:
    canonical_url = "http://127.0.0.1:8080"


class FakeApp:
    def __init__(self, actives: set[Any], distribution: dict[str, Any]) -> None:
        self.tables = {Tables.PORTFOLIOS: FakeTable(Tables.PORTFOLIOS, 3)}
        self.assignor = FakeAssignor(actives, distribution)
        self.conf = FakeConf()


def test_ownership_reads_faust_assignment_by_the_source_key() -> None:
    from faust.types import TP

    topic = f"{Tables.PORTFOLIOS}-changelog"
    mine = partition_for("mom", 3)
    others = [p for p in range(3) if p != mine]
    app = FakeApp(
        {TP(topic, mine)},
        {"http://127.0.0.1:8080": {topic: [mine]}, "http://127.0.0.1:9090": {topic: others}},
    )
    ownership = Ownership(app)
    assert ownership.owns(Tables.PORTFOLIOS, "mom")
    assert not ownership.owns_all([Tables.PORTFOLIOS])
    assert ownership.is_self(ownership.owner_url(Tables.PORTFOLIOS, "mom"))  # type: ignore[arg-type]
    other_key = next(k for k in ("a", "b", "c", "d", "e", "f") if partition_for(k, 3) != mine)
    owner = ownership.owner_url(Tables.PORTFOLIOS, other_key)
    assert owner is not None and owner.port == 9090 and not ownership.is_self(owner)
    assert FakeApp(set(), {}).assignor.changelog_distribution == {}
    assert Ownership(FakeApp(set(), {})).owner_url(Tables.PORTFOLIOS, "mom") is None


async def test_list_from_part_of_the_tables_is_a_503_never_a_partial_list() -> None:
    reader = PortfolioReader(model(tables_with_mom()), mirror=None, owns_all=lambda: False)
    with pytest.raises(ApiError) as err:
        await ReadApi(reader).portfolios()
    assert err.value.status == 503 and "several portfolio-manager workers" in err.value.message
    with pytest.raises(ApiError):
        await ReadApi(reader).rejected(None, 10)


def _owns_portfolios_only(table: str, key: str) -> bool:
    return table == Tables.PORTFOLIOS


async def test_an_open_position_priced_by_another_worker_is_a_503_a_flat_one_is_served() -> None:
    from models.events import Side
    from tests.factories import fill

    tables = tables_with_mom()  # mom holds 9 RELIANCE shares
    reader = PortfolioReader(
        model(tables), mirror=None, owns=_owns_portfolios_only, owns_all=lambda: False
    )
    with pytest.raises(ApiError) as err:
        await ReadApi(reader).portfolio("mom")
    assert err.value.status == 503 and "several portfolio-manager workers" in err.value.message

    closing = fill("f4", Side.SELL, 9, "2930.00", "4.00", strategy_id="mom", second=4)
    flat = book([*MOM_FILLS, closing])
    tables["portfolios"]["mom"] = flat.to_json_dict()
    served = await ReadApi(reader).portfolio("mom")
    assert served["cash"] == str(flat.cash.quantize(Decimal("0.01")))
    assert [p["quantity"] for p in served["positions"]] == [0]
    assert served["positions"][0]["priced"] is False  # its price is another worker's


async def test_a_stale_copy_of_a_key_this_worker_no_longer_owns_is_not_served() -> None:
    tables = tables_with_mom()
    reader = PortfolioReader(
        model(tables), mirror=None, owns=lambda table, key: False, owns_all=lambda: False
    )
    with pytest.raises(ApiError) as err:
        await ReadApi(reader).portfolio("mom")
    assert err.value.status == 404
    with pytest.raises(ApiError) as err:
        await ReadApi(reader).fills("mom", 10)
    assert err.value.status == 404


async def test_the_mirror_is_the_whole_view_and_local_extras_are_only_owned_keys() -> None:
    tables = tables_with_mom()
    reader, _ = redis_reader(tables)
    reader.owns_all = lambda: False
    # A key the mirror lacks, held locally but owned by another worker now: left out.
    tables["portfolios"]["stale"] = book(MOM_FILLS[:1]).to_json_dict()
    reader.owns = lambda table, key: key != "stale"
    body = await ReadApi(reader).portfolios()
    assert [r["strategy_id"] for r in body["portfolios"]] == ["mom"]
    assert await reader.in_mirror("mom") and not await reader.in_mirror("stale")


async def test_a_resync_after_a_rebalance_copies_every_owned_key_again() -> None:
    written: list[tuple[set[str], set[str], set[str]]] = []
    the_mirror = mirror(all_keys=lambda: (["mom", "mr"], ["256265"], []))

    async def capture(portfolios: set[str], prices: set[str], rejections: set[str]) -> None:
        written.append((portfolios, prices, rejections))

    the_mirror._write = capture  # type: ignore[method-assign]
    assert await the_mirror.flush()  # the first flush copies everything
    assert await the_mirror.flush()  # then nothing is marked: nothing written
    the_mirror.request_resync()
    assert await the_mirror.flush()
    assert written == [({"mom", "mr"}, {"256265"}, set())] * 2
