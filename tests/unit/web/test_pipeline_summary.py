"""The counts line of `alpha-panda run`: pipeline order, only running stages, the halt."""

from __future__ import annotations

from alpha_panda.settings import Stage
from web.pipeline_summary import DOMAIN, counts_line

SCRAPED = {
    Stage.MARKET_FEED: {"alpha_panda_messages_produced_total": 1200.0},
    Stage.STRATEGY_RUNNER: {f"{DOMAIN}:signal": 40.0},
    Stage.RISK_MANAGER: {f"{DOMAIN}:approved": 31.0, f"{DOMAIN}:rejected": 9.0},
    Stage.TRADING_ENGINE: {f"{DOMAIN}:fill": 30.0},
    Stage.PORTFOLIO_MANAGER: {f"{DOMAIN}:fill_booked": 29.0},
}
# The order `alpha-panda run` starts them in: downstream first.
STARTED = [
    Stage.PORTFOLIO_MANAGER,
    Stage.TRADING_ENGINE,
    Stage.RISK_MANAGER,
    Stage.STRATEGY_RUNNER,
    Stage.MARKET_FEED,
]


def test_counts_read_in_pipeline_order_whatever_the_start_order() -> None:
    assert counts_line(SCRAPED, STARTED, []) == (
        "ticks=1200  signals=40  approved=31  rejected=9  fills=30  booked=29"
    )


def test_a_halt_leads_the_line() -> None:
    assert counts_line(SCRAPED, STARTED, ["all"]).startswith("HALTED(all)  ticks=1200")
    assert counts_line(SCRAPED, STARTED, ["mom", "mr"]).startswith("HALTED(mom,mr)  ")


def test_only_the_stages_that_run_and_zero_for_an_unreachable_one() -> None:
    line = counts_line({Stage.RISK_MANAGER: {}}, [Stage.RISK_MANAGER, Stage.MARKET_FEED], [])
    assert line == "ticks=0  approved=0  rejected=0"
