"""Benchmark: the Kite ticker parser, and ticks through the local Kite server's WebSocket.

Prints (1) `parse_binary_frame` throughput on frames of full-mode packets (184 bytes, with
depth) and of quote packets, in packets/s; (2) how many ticks/s `KiteTicker` receives and
parses from `FakeKite` over loopback when the server steps as fast as it can with N
instruments in full mode (our client against our server: a ceiling, not a claim about Kite);
(3) reading an instruments master of N rows (CSV to models). A benchmark, not a test: it
asserts nothing.

    .venv/bin/python scripts/bench_kite.py [--packets 200000] [--instruments 5] [--seconds 5]
        [--instrument-rows 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from alpha_panda.zerodha.fake_market import (  # noqa: E402
    DEFAULT_INSTRUMENTS,
    FakeInstrument,
    FakeMarket,
)
from alpha_panda.zerodha.fake_server import FakeKite  # noqa: E402
from alpha_panda.zerodha.models import Instrument  # noqa: E402
from alpha_panda.zerodha.ticker import Backoff, KiteTicker, TicksReceived  # noqa: E402
from alpha_panda.zerodha.ticker_protocol import (  # noqa: E402
    TickMode,
    encode_frame,
    encode_packet,
    parse_binary_frame,
)

PACKETS_PER_FRAME = 50  # a frame as Kite sends it for 50 subscribed instruments


def bench_parser(total: int, mode: TickMode) -> dict[str, float]:
    market = FakeMarket(DEFAULT_INSTRUMENTS)
    now = datetime.now(UTC)
    tradable = [t for t, i in market.instruments.items() if not i.is_index]
    packets = [
        encode_packet(market.tick(tradable[i % len(tradable)], mode, now))
        for i in range(PACKETS_PER_FRAME)
    ]
    frame = encode_frame(packets)
    frames = max(1, total // PACKETS_PER_FRAME)
    started = time.perf_counter()
    parsed = 0
    for _ in range(frames):
        parsed += len(parse_binary_frame(frame).ticks)
    elapsed = time.perf_counter() - started
    return {
        "packets": parsed,
        "seconds": round(elapsed, 4),
        "packets_per_s": round(parsed / elapsed),
        "us_per_packet": round(elapsed / parsed * 1e6, 3),
    }


def bench_instruments_csv(rows: int) -> dict[str, float]:
    """Reading the instruments master as `KiteRestClient.instruments` does (CSV -> models)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(INSTRUMENT_COLUMNS)
    for i in range(rows):
        writer.writerow(
            [i << 8 | 2, i, f"NIFTY26DEC{i}CE", "NIFTY", "0.0", "2026-12-31", "24000.0", *OPTION]
        )
    text = out.getvalue()
    started = time.perf_counter()
    parsed = [Instrument.model_validate(row) for row in csv.DictReader(io.StringIO(text))]
    elapsed = time.perf_counter() - started
    return {"rows": len(parsed), "seconds": round(elapsed, 3)}


INSTRUMENT_COLUMNS = [
    "instrument_token",
    "exchange_token",
    "tradingsymbol",
    "name",
    "last_price",
    "expiry",
    "strike",
    "tick_size",
    "lot_size",
    "instrument_type",
    "segment",
    "exchange",
]
OPTION = ["0.05", "75", "CE", "NFO-OPT", "NFO"]  # tick size .. exchange of an index option


async def bench_websocket(instruments: int, seconds: float) -> dict[str, float]:
    extra = tuple(
        FakeInstrument(
            instrument_token=(1000 + i) << 8 | 1,
            tradingsymbol=f"SYM{i}",
            exchange="NSE",
            price=Decimal("100.00"),
        )
        for i in range(max(0, instruments - 5))
    )
    catalogue = DEFAULT_INSTRUMENTS[:5] + extra
    tokens = [i.instrument_token for i in catalogue][:instruments]
    async with FakeKite(tick_interval_s=None, instruments=catalogue) as kite:
        box = {"token": kite.issue_token()}
        async with aiohttp.ClientSession() as http:
            ticker = KiteTicker(
                http,
                ws_url=kite.ws_url,
                api_key=kite.api_key,
                access_token=lambda: box["token"],
                backoff=Backoff(initial_s=0.01, max_s=0.1),
            )
            await ticker.subscribe(tokens, TickMode.FULL)
            received = 0

            async def pump() -> None:
                while True:
                    await kite.step()
                    await asyncio.sleep(0)

            events = ticker.run()
            pump_task: asyncio.Task[None] | None = None
            started = 0.0
            try:
                async for event in events:
                    if isinstance(event, TicksReceived):
                        if pump_task is None:
                            pump_task = asyncio.create_task(pump())
                            started = time.perf_counter()
                            continue
                        received += len(event.ticks)
                        if time.perf_counter() - started >= seconds:
                            break
            finally:
                await events.aclose()
                if pump_task is not None:
                    pump_task.cancel()
            elapsed = time.perf_counter() - started
    return {
        "instruments": instruments,
        "seconds": round(elapsed, 3),
        "ticks": received,
        "ticks_per_s": round(received / elapsed),
        "parse_errors": ticker.stats.parse_errors,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--instruments", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--instrument-rows", type=int, default=100_000)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    if args.packets < PACKETS_PER_FRAME or args.instruments < 1 or args.seconds <= 0:
        parser.error("--packets >= 50, --instruments >= 1 and --seconds > 0")

    results = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "parse_full": bench_parser(args.packets, TickMode.FULL),
        "parse_quote": bench_parser(args.packets, TickMode.QUOTE),
        "websocket_full": asyncio.run(bench_websocket(args.instruments, args.seconds)),
        "instruments_csv": bench_instruments_csv(args.instrument_rows),
    }
    full, quote, ws = results["parse_full"], results["parse_quote"], results["websocket_full"]
    print(
        f"parse full (184 B, depth): {full['packets_per_s']:>10,} packets/s "
        f"({full['us_per_packet']} us each)"
    )
    print(
        f"parse quote (44 B):        {quote['packets_per_s']:>10,} packets/s "
        f"({quote['us_per_packet']} us each)"
    )
    print(
        f"FakeKite -> KiteTicker:    {ws['ticks_per_s']:>10,} ticks/s "
        f"({ws['instruments']} instruments, full mode, {ws['seconds']} s, "
        f"{ws['parse_errors']} parse errors)"
    )
    csv_result = results["instruments_csv"]
    print(f"instruments master CSV:    {csv_result['rows']:>10,} rows in {csv_result['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
