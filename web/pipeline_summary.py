"""The counts line of ``alpha-panda run``'s summary, in pipeline order, with the halt.

``ticks signals approved rejected fills booked``: the order a tick travels, so a person
reads the line left to right as the pipeline and sees where the numbers stop growing.
``HALTED`` leads the line while any halt is in force, so a halted pipeline is never
mistaken for a quiet market. Pure: the caller scrapes the stages' /metrics and reads the
halts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from alpha_panda.settings import Stage

DOMAIN = "alpha_panda_domain_events_total"
# (label, the stage whose /metrics has it, the metric family[:event label])
PIPELINE_COUNTS: tuple[tuple[str, Stage, str], ...] = (
    ("ticks", Stage.MARKET_FEED, "alpha_panda_messages_produced_total"),
    ("signals", Stage.STRATEGY_RUNNER, f"{DOMAIN}:signal"),
    ("approved", Stage.RISK_MANAGER, f"{DOMAIN}:approved"),
    ("rejected", Stage.RISK_MANAGER, f"{DOMAIN}:rejected"),
    ("fills", Stage.TRADING_ENGINE, f"{DOMAIN}:fill"),
    ("booked", Stage.PORTFOLIO_MANAGER, f"{DOMAIN}:fill_booked"),
)


def counts_line(
    scraped: Mapping[Stage, Mapping[str, float]], stages: Sequence[Stage], halted: Sequence[str]
) -> str:
    """``HALTED(all) ticks=120  signals=4 ...`` for the stages that run."""
    parts = [
        f"{label}={int(scraped.get(stage, {}).get(metric, 0.0))}"
        for label, stage, metric in PIPELINE_COUNTS
        if stage in stages
    ]
    marker = f"HALTED({','.join(halted)})  " if halted else ""
    return marker + "  ".join(parts)
