"""tables/last_price.py: one shape for the last-prices table of both stages, reading back
the JSON each stage wrote before it existed (their changelogs stay readable)."""

from __future__ import annotations

from decimal import Decimal

from models.events import DepthLevel, MarketDepth
from tables.last_price import LastPrice
from tests.factories import NIFTY, T0, tick

PRICE = "101.25"
DEPTH = MarketDepth(
    bids=(DepthLevel(price=Decimal("101.20"), quantity=5, orders=1),),
    asks=(DepthLevel(price=Decimal("101.30"), quantity=7, orders=2),),
)


def test_the_engine_shape_is_what_the_engine_wrote() -> None:
    written = LastPrice.of_tick(
        tick(PRICE, token=NIFTY, depth=DEPTH), with_depth=True
    ).to_json_dict()
    assert written == {
        "price": "101.25",
        "symbol": "NIFTY 50",
        "ts": T0.isoformat(),
        "depth": DEPTH.model_dump(mode="json"),
    }
    back = LastPrice.from_json_dict(written)
    assert back.price == Decimal("101.25") and back.ts == T0 and back.offset is None
    assert back.market_depth() == DEPTH


def test_a_tick_without_depth_clears_the_book() -> None:
    written = LastPrice.of_tick(tick(PRICE, token=NIFTY), with_depth=True).to_json_dict()
    assert "depth" not in written
    assert LastPrice.from_json_dict(written).market_depth() is None


def test_the_portfolio_shape_is_what_the_portfolio_manager_wrote() -> None:
    written = LastPrice.of_tick(tick(PRICE, token=NIFTY, depth=DEPTH), offset=41).to_json_dict()
    assert written == {"price": "101.25", "symbol": "NIFTY 50", "ts": T0.isoformat(), "offset": 41}
    assert LastPrice.from_json_dict(written).offset == 41
