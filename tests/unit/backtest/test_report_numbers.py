"""The report's numbers on a tick sequence worked out by hand.

One momentum strategy (lookback 1, threshold 0.5 %, 10 shares) on one instrument, no
slippage, Zerodha intraday fees, ticks one minute apart:

    tick  price  strategy          fill         fees (brokerage+STT+txn+stamp+GST)
    t0    100    -
    t1    101    +1.00 %: BUY      10 @ 101     0.30 + 0    + 0.03 + 0.03 + 0.06 = 0.42
    t2    102    hold (+0.99 %)
    t3    100    -1.96 %: SELL     10 @ 100     0.30 + 0.25 + 0.03 + 0    + 0.06 = 0.64
    t4    101    +1.00 %: BUY      10 @ 101     0.42
    t5    103    hold (+1.98 %)
    t6    102    -0.97 %: SELL     10 @ 102     0.31 + 0.26 + 0.03 + 0    + 0.06 = 0.66
    t7    102    nothing (flat, 0 %)

Realized: -10 (t3), +10 (t6): gross 0, fees 2.14, net -2.14; one win in two closed
trades. Equity after each tick (C = 1,000,000), marked before the tick's own fill:
C, C-0.42, C+9.58 (peak), C-10.42 then C-11.06 after the sale, C-11.48, C+8.52, C-1.48
then C-2.14, C-2.14: the deepest fall from the peak C+9.58 is to C-11.48, i.e. 21.06.
Open from t1 to t3 and from t4 to t6: 4 of the 7 minutes.
"""

from __future__ import annotations

import itertools
import math
import statistics
from datetime import timedelta
from decimal import Decimal

import pytest

from alpha_panda import db
from alpha_panda.backtest.config import runtime_config
from alpha_panda.backtest.engine import BacktestEngine, BacktestSetup
from alpha_panda.backtest.report import summary_table
from alpha_panda.domain.paper_trader import PaperTrader
from alpha_panda.domain.products import StrategyProducts
from alpha_panda.settings import RiskSettings
from models.events import MarketTick, Side
from tables.risk_state import RiskLimits
from tests.factories import OPEN

D = Decimal
C = D("1000000")
TOKEN = 738561
PRICES = ["100", "101", "102", "100", "101", "103", "102", "102"]


def setup() -> BacktestSetup:
    record = db.validated_strategy(
        "mom",
        "momentum",
        [(TOKEN, "RELIANCE")],
        {"lookback": 1, "threshold_pct": "0.5", "quantity": 10},
        updated_at=OPEN,
    )
    return BacktestSetup(
        config=runtime_config([record]),
        risk_defaults=RiskLimits.from_settings(RiskSettings()),
        trader=PaperTrader(slippage_bps=D("0"), fees=StrategyProducts().fees_of),
        starting_cash=C,
    )


def ticks() -> list[tuple[MarketTick, str]]:
    return [
        (
            MarketTick(
                instrument_token=TOKEN,
                symbol="RELIANCE",
                last_price=D(price),
                volume=100 * (n + 1),
                exchange_ts=OPEN + timedelta(minutes=n),
            ),
            f"tick-{n}",
        )
        for n, price in enumerate(PRICES)
    ]


@pytest.fixture(scope="module")
def result():  # type: ignore[no-untyped-def]
    return BacktestEngine(setup()).run(ticks())


def test_fills_prices_and_fees(result) -> None:  # type: ignore[no-untyped-def]
    assert [(f.side, f.quantity, f.fill_price, f.fees) for f in result.fills] == [
        (Side.BUY, 10, D("101"), D("0.42")),
        (Side.SELL, 10, D("100"), D("0.64")),
        (Side.BUY, 10, D("101"), D("0.42")),
        (Side.SELL, 10, D("102"), D("0.66")),
    ]
    assert [f.filled_ts for f in result.fills] == [
        OPEN + timedelta(minutes=m) for m in (1, 3, 4, 6)
    ]


def test_summary_numbers(result) -> None:  # type: ignore[no-untyped-def]
    (summary,) = result.summaries
    assert summary.fills == 4
    assert summary.closed_trades == 2
    assert summary.win_rate_pct == D("50")
    assert summary.fees == D("2.14")
    assert summary.gross_pnl == D("0")
    assert summary.net_pnl == D("-2.14")
    assert summary.return_pct == D("-0.000214")
    assert summary.max_drawdown == D("21.06")
    assert summary.max_drawdown_pct == D("21.06") * 100 / (C + D("9.58"))
    assert summary.exposure_pct == D(4) * 100 / 7
    assert summary.rejections == 0


def test_equity_series_and_sharpe(result) -> None:  # type: ignore[no-untyped-def]
    ledger = result.ledgers["mom"]
    offsets = ["0", "-0.42", "9.58", "-11.06", "-11.48", "8.52", "-2.14", "-2.14"]
    assert [p.equity - C for p in ledger.series] == [D(x) for x in offsets]
    assert [p.drawdown for p in ledger.series] == [
        D(x) for x in ("0", "0.42", "0", "20.64", "21.06", "1.06", "11.72", "11.72")
    ]
    equities = [float(C + D(x)) for x in offsets]
    returns = [b / a - 1 for a, b in itertools.pairwise(equities)]
    expected = statistics.fmean(returns) / statistics.stdev(returns) * math.sqrt(252 * 375)
    assert result.summaries[0].sharpe_like == pytest.approx(expected, rel=1e-9)


def test_portfolio_is_the_portfolio_managers_accounting(result) -> None:  # type: ignore[no-untyped-def]
    portfolio = result.portfolios["mom"]
    assert portfolio.cash == C - D("2.14")
    assert portfolio.realized_pnl == D("0")
    assert portfolio.fees_paid == D("2.14")
    assert result.valuations["mom"].equity == result.ledgers["mom"].equity


def test_summary_table_prints_the_numbers(result) -> None:  # type: ignore[no-untyped-def]
    text = summary_table(result)
    assert "8 ticks" in text and "4 fills" in text
    row = next(line for line in text.splitlines() if line.startswith("mom"))
    assert row.split() == [
        "mom", "4", "2", "50.00", "0.00", "2.14", "-2.14", "-0.00", "21.06", "0.00",
        row.split()[10], "57.14", "0",
    ]  # fmt: skip


def test_market_orders_walk_the_book_when_ticks_carry_depth() -> None:
    """The engine's depth fills (alpha_panda/domain/paper_trader.py) reach the backtest unchanged:
    one fill per level, the first with the single-fill id, all booked."""
    from alpha_panda.domain.paper_trader import fill_id_for
    from models.events import DepthLevel, MarketDepth

    book = MarketDepth(
        bids=(DepthLevel(quantity=50, price=D("100.95"), orders=1),),
        asks=(
            DepthLevel(quantity=4, price=D("101.05"), orders=1),
            DepthLevel(quantity=3, price=D("101.10"), orders=1),
            DepthLevel(quantity=9, price=D("101.20"), orders=2),
        ),
    )
    with_depth = [
        (t.model_copy(update={"depth": book}) if n == 1 else t, event_id)
        for n, (t, event_id) in enumerate(ticks()[:2])
    ]
    result = BacktestEngine(setup()).run(with_depth)
    buys = [(f.quantity, f.fill_price) for f in result.fills]
    assert buys == [(4, D("101.05")), (3, D("101.10")), (3, D("101.20"))]
    signal_id = result.fills[0].signal_event_id
    assert result.fills[0].fill_id == fill_id_for(signal_id)
    assert result.portfolios["mom"].positions[TOKEN].quantity == 10


def test_what_the_book_cannot_absorb_is_reported_when_left_unfilled() -> None:
    from models.events import DepthLevel, MarketDepth

    book = MarketDepth(asks=(DepthLevel(quantity=4, price=D("101.05"), orders=1),))
    base = setup()
    leave = BacktestSetup(
        config=base.config,
        risk_defaults=base.risk_defaults,
        trader=PaperTrader(
            slippage_bps=D("0"), fees=StrategyProducts().fees_of, leave_rest_unfilled=True
        ),
        starting_cash=C,
    )
    with_depth = [
        (t.model_copy(update={"depth": book}) if n == 1 else t, event_id)
        for n, (t, event_id) in enumerate(ticks()[:2])
    ]
    result = BacktestEngine(leave).run(with_depth)
    assert [(f.quantity, f.fill_price) for f in result.fills] == [(4, D("101.05"))]
    assert result.summaries[0].unfilled_shares == 6
