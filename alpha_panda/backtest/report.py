"""A backtest's outputs: the summary table, fills and equity as CSV, JSON, and an HTML
report with inline SVG charts (no script, no external asset: it opens from disk)."""

from __future__ import annotations

import csv
import html
import json
from collections.abc import Sequence
from dataclasses import asdict
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from alpha_panda.backtest.engine import BacktestResult, StrategySummary
from alpha_panda.backtest.metrics import EquityPoint

PAISA = Decimal("0.01")
MAX_CHART_POINTS = 1500

COLUMNS = (
    ("strategy", "strategy_id"),
    ("fills", "fills"),
    ("closed", "closed_trades"),
    ("win %", "win_rate_pct"),
    ("gross P&L", "gross_pnl"),
    ("fees", "fees"),
    ("net P&L", "net_pnl"),
    ("return %", "return_pct"),
    ("max DD", "max_drawdown"),
    ("max DD %", "max_drawdown_pct"),
    ("sharpe*", "sharpe_like"),
    ("exposure %", "exposure_pct"),
    ("rejected", "rejections"),
)


def money(value: Decimal) -> str:
    return str(value.quantize(PAISA, ROUND_HALF_UP))


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def summary_rows(summaries: Sequence[StrategySummary]) -> list[list[str]]:
    return [[cell(getattr(s, attr)) for _, attr in COLUMNS] for s in summaries]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]

    def line(values: Sequence[str]) -> str:
        first = values[0].ljust(widths[0])
        rest = (v.rjust(w) for v, w in zip(values[1:], widths[1:], strict=True))
        return "  ".join([first, *rest])

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def summary_table(result: BacktestResult) -> str:
    rows = summary_rows(result.summaries)
    body = table([h for h, _ in COLUMNS], rows) if rows else "(no strategy)"
    span = (
        f"{result.first_ts.isoformat()} .. {result.last_ts.isoformat()}"
        if result.first_ts and result.last_ts
        else "no ticks"
    )
    return (
        f"{result.ticks} ticks, {span}, {len(result.fills)} fills\n{body}\n"
        "* Sharpe-like: mean/stdev of bar-to-bar equity returns x sqrt(bars a year); "
        "see docs/BACKTESTING.md"
    )


def write_fills_csv(result: BacktestResult, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(
            [
                "filled_ts",
                "strategy_id",
                "instrument_token",
                "symbol",
                "side",
                "quantity",
                "fill_price",
                "fees",
                "fill_id",
                "order_id",
                "signal_event_id",
            ]
        )
        for f in result.fills:
            writer.writerow(
                [
                    f.filled_ts.isoformat(),
                    f.strategy_id,
                    f.instrument_token,
                    f.symbol,
                    f.side.value,
                    f.quantity,
                    f.fill_price,
                    f.fees,
                    f.fill_id,
                    f.order_id,
                    f.signal_event_id,
                ]
            )


def write_equity_csv(result: BacktestResult, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["ts", "strategy_id", "equity", "drawdown"])
        for sid in sorted(result.ledgers):
            for point in result.ledgers[sid].series:
                writer.writerow(
                    [point.ts.isoformat(), sid, money(point.equity), money(point.drawdown)]
                )


def summary_json(result: BacktestResult) -> dict[str, Any]:
    def plain(value: object) -> object:
        return str(value) if isinstance(value, Decimal) else value

    return {
        "ticks": result.ticks,
        "first_ts": result.first_ts.isoformat() if result.first_ts else None,
        "last_ts": result.last_ts.isoformat() if result.last_ts else None,
        "fills": len(result.fills),
        "strategies": [{k: plain(v) for k, v in asdict(s).items()} for s in result.summaries],
    }


def write_outputs(result: BacktestResult, out_dir: Path, title: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / n for n in ("fills.csv", "equity.csv", "summary.json", "report.html")]
    write_fills_csv(result, paths[0])
    write_equity_csv(result, paths[1])
    paths[2].write_text(json.dumps(summary_json(result), indent=2) + "\n", encoding="utf-8")
    paths[3].write_text(html_report(result, title), encoding="utf-8")
    return paths


# -- HTML --------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1d2433;background:#fff}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:24px 0 6px}
p.meta{color:#5b6472;margin:0 0 16px}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6eb;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left} th{background:#f5f7fa}
.charts{display:flex;flex-wrap:wrap;gap:16px}
figure{margin:0;border:1px solid #e3e6eb;border-radius:6px;padding:8px}
figcaption{font-weight:600;margin-bottom:4px}
svg text{font:11px system-ui,sans-serif;fill:#5b6472}
.note{color:#5b6472;font-size:12px;max-width:900px}
"""


def _thin(points: Sequence[EquityPoint], limit: int = MAX_CHART_POINTS) -> list[EquityPoint]:
    """At most about ``limit`` points; the deepest drawdown point of each stride is kept so
    the chart never looks shallower than the figure in the table."""
    if len(points) <= limit:
        return list(points)
    stride = -(-len(points) // limit)
    kept = []
    for start in range(0, len(points), stride):
        chunk = points[start : start + stride]
        kept.append(max(chunk, key=lambda p: p.drawdown))
    if kept[-1] is not points[-1]:
        kept.append(points[-1])
    return kept


def _polyline(values: Sequence[float], x0: float, y0: float, w: float, h: float) -> str:
    lo, hi = min(values), max(values)
    span = hi - lo or 1.0
    n = max(len(values) - 1, 1)
    return " ".join(
        f"{x0 + w * i / n:.1f},{y0 + h - h * (v - lo) / span:.1f}" for i, v in enumerate(values)
    )


def chart_svg(points: Sequence[EquityPoint], width: int = 560, height: int = 260) -> str:
    """Equity (top) and drawdown (bottom, downwards) of one strategy as inline SVG."""
    if not points:
        return f'<svg width="{width}" height="40"><text x="8" y="24">no equity samples</text></svg>'
    thin = _thin(points)
    left, right, top = 70.0, 10.0, 10.0
    plot_w = width - left - right
    eq_h, gap, dd_h = height * 0.55, 28.0, height * 0.25
    equity = [float(p.equity) for p in thin]
    drawdown = [float(p.drawdown) for p in thin]
    dd_top = top + eq_h + gap
    eq_line = _polyline(equity, left, top, plot_w, eq_h)
    deepest = max(drawdown) or 1.0
    n = max(len(drawdown) - 1, 1)
    dd_line = " ".join(
        f"{left + plot_w * i / n:.1f},{dd_top + dd_h * d / deepest:.1f}"
        for i, d in enumerate(drawdown)
    )
    area = f"{left:.1f},{dd_top:.1f} {dd_line} {left + plot_w:.1f},{dd_top:.1f}"
    dd_lo = -max(drawdown)
    first, last = thin[0].ts, thin[-1].ts
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 30}" '
        f'role="img" aria-label="equity and drawdown">'
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{eq_h}" fill="#fafbfc" '
        'stroke="#e3e6eb"/>'
        f'<polyline points="{eq_line}" fill="none" stroke="#1f6feb" stroke-width="1.5"/>'
        f'<text x="{left - 6}" y="{top + 10}" text-anchor="end">{max(equity):,.0f}</text>'
        f'<text x="{left - 6}" y="{top + eq_h}" text-anchor="end">{min(equity):,.0f}</text>'
        f'<text x="{left}" y="{top + eq_h + 14}">equity (Rs)</text>'
        f'<rect x="{left}" y="{dd_top}" width="{plot_w}" height="{dd_h}" fill="#fafbfc" '
        'stroke="#e3e6eb"/>'
        f'<polygon points="{area}" fill="#f85149" fill-opacity="0.35" stroke="#cf222e" '
        'stroke-width="1"/>'
        f'<text x="{left - 6}" y="{dd_top + 10}" text-anchor="end">0</text>'
        f'<text x="{left - 6}" y="{dd_top + dd_h}" text-anchor="end">{dd_lo:,.0f}</text>'
        f'<text x="{left}" y="{dd_top + dd_h + 14}">drawdown (Rs)</text>'
        f'<text x="{left}" y="{height + 26}">{html.escape(first.isoformat(timespec="seconds"))}'
        "</text>"
        f'<text x="{left + plot_w}" y="{height + 26}" text-anchor="end">'
        f"{html.escape(last.isoformat(timespec='seconds'))}</text>"
        "</svg>"
    )


def html_report(result: BacktestResult, title: str) -> str:
    header = "".join(f"<th>{html.escape(h)}</th>" for h, _ in COLUMNS)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>"
        for row in summary_rows(result.summaries)
    )
    figures = "".join(
        f"<figure><figcaption>{html.escape(sid)}</figcaption>"
        f"{chart_svg(result.ledgers[sid].series)}</figure>"
        for sid in sorted(result.ledgers)
    )
    span = (
        f"{result.first_ts.isoformat()} to {result.last_ts.isoformat()}"
        if result.first_ts and result.last_ts
        else "no ticks"
    )
    bar = int(result.setup.bar.total_seconds())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='meta'>{result.ticks:,} ticks, {html.escape(span)}; {len(result.fills):,} "
        f"fills; starting cash Rs {money(result.setup.starting_cash)} per strategy</p>"
        f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"
        f"<h2>Equity and drawdown per strategy</h2><div class='charts'>{figures}</div>"
        "<p class='note'>Money in rupees. Equity = cash + positions at the last tick price, "
        f"sampled at the close of each {bar} s bar with ticks; max DD is measured on every "
        "tick. sharpe*: mean / standard deviation of bar-to-bar equity returns times "
        "sqrt(bars in 252 sessions of 375 minutes), no risk-free rate. Win % counts fills "
        "that reduce a position, won when their realized P&amp;L before fees is positive. "
        "Exposure: share of the run's event time with an open position.</p>"
        "</body></html>\n"
    )
