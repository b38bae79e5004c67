"""Ledger._watch skips drawdowns no deeper than one already seen under the same peak;
its maxima must equal comparing every drawdown, as before."""

from __future__ import annotations

import random
from decimal import Decimal

from alpha_panda.backtest.metrics import Ledger

HUNDRED = Decimal(100)


def test_maxima_equal_checking_every_mark() -> None:
    rng = random.Random(7)
    for _ in range(50):
        start = Decimal(rng.choice([1000, 100_000, 1_000_000]))
        ledger = Ledger("s", start)
        ledger.quantities[1] = rng.randint(1, 5)
        price = Decimal("100.00")
        # The reference compares every equity, the percentage recomputed each time.
        peak, max_dd, max_pct = start, Decimal(0), Decimal(0)
        for _ in range(400):
            # Falls under one peak of varying depth, new peaks, repeats of the same price.
            new_price = max(Decimal("0.05"), price + Decimal(rng.randint(-6, 6)) / 20)
            ledger.remark(1, price, new_price)
            price = new_price
            equity = ledger.equity
            if equity > peak:
                peak = equity
            else:
                max_dd = max(max_dd, peak - equity)
                max_pct = max(max_pct, (peak - equity) * HUNDRED / peak)
            assert (ledger.max_drawdown, ledger.max_drawdown_pct) == (max_dd, max_pct)
        assert ledger.max_drawdown > 0
