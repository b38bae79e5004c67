"""A Faust worker whose agent only iterates market.ticks: the floor under every stage.

`scripts/bench.py --faust-floor` starts three of these at once, one per tick-consuming
stage, each in its own consumer group reading the ticks already on the topic. What they
manage together on this machine is the most any pipeline of Faust agents that process
one event at a time can do here, before any decoding, strategy, table or send.

Built from the stages' own Faust configuration (alpha_panda/factory.py), without tables
or web server. Configured by the environment, because Faust's command line owns argv:

    FLOOR_BOOTSTRAP  broker host:port
    FLOOR_GROUP      consumer group
    FLOOR_COUNT      events to consume before reporting
    FLOOR_RESULT     file to write {"first": t, "last": t, "events": n, "cpu_s": s} to
    FLOOR_DATADIR    Faust's data directory
    FLOOR_STOCK_DRAIN  1: Faust's own per-record delivery, not the stages' workaround
                     (alpha_panda/workarounds/faust_drain.py), to measure the two
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import faust  # noqa: E402

from alpha_panda.factory import faust_config  # noqa: E402
from alpha_panda.lean_monitor import LeanMonitor  # noqa: E402
from alpha_panda.settings import Stage, load_settings  # noqa: E402
from alpha_panda.topics import MARKET_TICKS  # noqa: E402
from alpha_panda.workarounds import faust_drain  # noqa: E402


def build(env: dict[str, str]) -> faust.App:
    settings = load_settings(broker={"url": env["FLOOR_BOOTSTRAP"]}, log_level="WARNING")
    config = faust_config(settings, Stage.STRATEGY_RUNNER)
    config.update(
        datadir=env["FLOOR_DATADIR"],
        web_enabled=False,
        TableManager="faust.tables:TableManager",  # no tables to recover
    )
    app = faust.App(env["FLOOR_GROUP"], monitor=LeanMonitor(), **config)
    if env.get("FLOOR_STOCK_DRAIN") != "1":  # as the stages run, unless told otherwise
        faust_drain.install(app)
    ticks = app.topic(
        MARKET_TICKS.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    wanted = int(env["FLOOR_COUNT"])
    result = Path(env["FLOOR_RESULT"])

    @app.agent(ticks, name="floor")
    async def iterate(stream: Any) -> None:
        seen, first, cpu_first = 0, 0.0, 0.0
        async for _event in stream.events():
            if seen == 0:
                first, cpu_first = time.time(), time.process_time()
            seen += 1
            if seen == wanted:
                report = {
                    "first": first,
                    "last": time.time(),
                    "events": seen,
                    # CPU of the whole process (both threads) from the first event on.
                    "cpu_s": time.process_time() - cpu_first,
                }
                await asyncio.to_thread(result.write_text, json.dumps(report))

    return app


if __name__ == "__main__":
    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    build(dict(os.environ)).main()
