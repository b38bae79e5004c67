"""One line of portfolio equity for the terminal, read from the Redis mirror.

``alpha-panda run`` calls :func:`equity_summary` every 2 s from its (synchronous) main
loop, so this uses the synchronous redis-py client with short timeouts, values each
portfolio with the same :meth:`Portfolio.valuation` as the API, and never raises: any
problem (Redis disabled or down, mirror empty, unreadable data) gives ``""``.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from alpha_panda.mirror import MirrorKeys
from alpha_panda.settings import Settings
from tables.portfolio import Portfolio
from tables.specs import PORTFOLIOS
from web.formatting import money, parse_prices

TIMEOUT_S = 0.25
MAX_PORTFOLIOS = 8


def grouped(value: Decimal) -> str:
    """``1000123.456`` -> ``1,000,123.46`` (paise, thousands separators)."""
    return f"{Decimal(money(value)):,.2f}"


def signed(value: Decimal) -> str:
    text = grouped(value)
    return text if text.startswith("-") else f"+{text}"


def format_summary(portfolios: list[Portfolio], prices: dict[int, Decimal]) -> str:
    """``momentum-nifty equity 1,000,123.45 (+123.45)  meanrev-it ...``, sorted by id."""
    parts = []
    ordered = sorted(portfolios, key=lambda p: p.strategy_id)
    for portfolio in ordered[:MAX_PORTFOLIOS]:
        valuation = portfolio.valuation(prices)
        parts.append(
            f"{portfolio.strategy_id} equity {grouped(valuation.equity)} "
            f"({signed(valuation.net_pnl)})"
        )
    if len(ordered) > MAX_PORTFOLIOS:
        parts.append(f"(+{len(ordered) - MAX_PORTFOLIOS} more)")
    return "  ".join(parts)


def read_mirror(client: Any, keys: MirrorKeys) -> tuple[list[Portfolio], dict[int, Decimal]]:
    ids = sorted(client.smembers(keys.portfolios))
    if not ids:
        return [], {}
    raw = [v for v in client.mget([keys.portfolio(s) for s in ids]) if v is not None]
    portfolios = [PORTFOLIOS.decode(json.loads(v)) for v in raw]
    tokens = sorted({t for p in portfolios for t in p.positions})
    values = client.hmget(keys.prices, [str(t) for t in tokens]) if tokens else []
    prices = parse_prices({str(t): v for t, v in zip(tokens, values, strict=True) if v is not None})
    return portfolios, prices


def equity_summary(settings: Settings) -> str:
    if not settings.redis.enabled:
        return ""
    try:
        import redis

        client = redis.Redis.from_url(
            settings.redis.url,
            socket_connect_timeout=TIMEOUT_S,
            socket_timeout=TIMEOUT_S,
            decode_responses=True,
        )
        try:
            portfolios, prices = read_mirror(client, MirrorKeys(settings.redis.key_prefix))
        finally:
            client.close()
        return format_summary(portfolios, prices)
    except Exception:  # the terminal summary is decoration: never break `alpha-panda run`
        return ""
