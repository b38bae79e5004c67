"""The dashboard in headless Chromium against a real portfolio-manager worker.

Logs in through the page, sees the seeded portfolios, then produces one tick and waits
for the unrealised P&L on the page to move to the hand-computed value (the update
travels tick -> table -> Redis mirror -> pub/sub -> SSE -> DOM).

Needs Debian's chromium and chromium-driver: with CI=true they are installed by
scripts/install_chromium.sh (and must be), elsewhere the test skips without them.
ALPHA_PANDA_UPDATE_SCREENSHOT=1 also refreshes docs/dashboard.png.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from alpha_panda import db
from alpha_panda.admin import ensure_topics
from alpha_panda.broker import EmbeddedBroker
from alpha_panda.mirror import MirrorKeys
from alpha_panda.settings import Stage, load_settings
from alpha_panda.topics import MARKET_TICKS, ORDERS_FILLED_PAPER, SIGNALS_REJECTED
from models.envelope import new_event_id
from models.events import (
    RejectionReason,
    Side,
)
from tests.factories import INFY, RELIANCE, TCS, fill, rejection, signal, tick
from tests.integration.harness import Deployment, StageProcess, produce, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").lower() == "true"
PASSWORD = "dashboard-demo-pw"
# Wall-clock time, not the stubs' RECENT: the dashboard's recent views must show the seed.
RECENT = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=40)

# momentum-nifty: BUY 20 @ 2895.50, SELL 10 @ 2912.80 (realises 173.00), BUY 10 @ 2901.10
# -> 20 RELIANCE at average (2895.50 + 2901.10) / 2 = 2898.30.
# Marked at 2904.65 the unrealised P&L is (2904.65 - 2898.30) * 20 = +127.00;
# after the final tick at 2911.40 it is (2911.40 - 2898.30) * 20 = +262.00.
LAST_WALK_PRICE = "2904.65"
FINAL_PRICE = "2911.40"
UNREALISED_BEFORE, UNREALISED_AFTER = "+127.00", "+262.00"


def require_chromium() -> None:
    if CHROMIUM.exists() and shutil.which("chromedriver"):
        return
    if not IN_CI:
        pytest.skip("chromium/chromedriver not installed (scripts/install_chromium.sh)")
    result = subprocess.run(
        [str(REPO / "scripts" / "install_chromium.sh")], capture_output=True, text=True
    )
    assert result.returncode == 0, f"install_chromium.sh failed:\n{result.stdout}{result.stderr}"
    assert CHROMIUM.exists(), "install_chromium.sh did not install /usr/bin/chromium"


def fill_record(
    fid: str, sid: str, side: Side, qty: int, token: int, price: str, fees: str, minute: int
) -> Any:
    order = fill(
        fid,
        side,
        qty,
        price,
        fees,
        strategy_id=sid,
        token=token,
        ts=RECENT + timedelta(minutes=minute),
    )
    return ORDERS_FILLED_PAPER.record(
        order, event_id=f"ev-{fid}", ts=order.filled_ts, source="test"
    )


def rejection_record(
    n: int, sid: str, token: int, side: Side, qty: int, reason: RejectionReason, detail: str
) -> Any:
    ts = RECENT + timedelta(minutes=20 + n)
    price = "2900" if token == RELIANCE else "1500"
    refused = signal(side, qty, price, token, strategy_id=sid, ts=ts)
    rejected = rejection(
        refused, reason, detail, signal_event_id=f"sig-rej-{n}", rejected_by="risk-manager"
    )
    return SIGNALS_REJECTED.record(rejected, event_id=f"rej-{n}", ts=ts, source="test")


def tick_record(token: int, price: Decimal | str, when: datetime) -> Any:
    payload = tick(price, ts=when, token=token, volume=1000)
    return MARKET_TICKS.record(payload, event_id=new_event_id(), ts=when, source="test")


def seed() -> list[Any]:
    return [
        fill_record("m1", "momentum-nifty", Side.BUY, 20, RELIANCE, "2895.50", "23.41", 1),
        fill_record("m2", "momentum-nifty", Side.SELL, 10, RELIANCE, "2912.80", "31.07", 6),
        fill_record("m3", "momentum-nifty", Side.BUY, 10, RELIANCE, "2901.10", "11.74", 12),
        fill_record("r1", "meanrev-it", Side.BUY, 15, TCS, "3921.40", "24.56", 3),
        fill_record("r2", "meanrev-it", Side.BUY, 30, INFY, "1512.25", "18.93", 8),
        fill_record("r3", "meanrev-it", Side.SELL, 30, INFY, "1519.60", "22.17", 15),
        rejection_record(
            1,
            "momentum-nifty",
            RELIANCE,
            Side.BUY,
            1200,
            RejectionReason.MAX_ORDER_QUANTITY,
            "quantity 1200 exceeds max_order_quantity 1000",
        ),
        rejection_record(
            2,
            "meanrev-it",
            INFY,
            Side.SELL,
            30,
            RejectionReason.SHORT_SELLING_NOT_ALLOWED,
            "would leave INFY short by 30; allow_short is off",
        ),
        rejection_record(
            3,
            "momentum-nifty",
            RELIANCE,
            Side.BUY,
            10,
            RejectionReason.ORDER_RATE,
            "31 orders in the last minute; max_orders_per_minute 30",
        ),
        tick_record(RELIANCE, "2899.00", RECENT + timedelta(minutes=16)),
        tick_record(TCS, "3921.40", RECENT + timedelta(minutes=16)),
        tick_record(INFY, "1519.60", RECENT + timedelta(minutes=16)),
    ]


async def walk_prices(bootstrap: str, redis_url: str, keys: MirrorKeys, steps: int) -> None:
    """A seeded random walk, one step at a time; each step waits for its equity sample.

    Waiting for the mirror's sample (rather than sleeping) gives the chart one point per
    step however fast or slow the worker is.
    """
    import redis.asyncio as redis_asyncio

    rng = random.Random(7)
    prices = {RELIANCE: Decimal("2899.00"), TCS: Decimal("3921.40"), INFY: Decimal("1519.60")}
    client = redis_asyncio.Redis.from_url(redis_url, decode_responses=True)
    key = keys.equity("momentum-nifty")
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", max_batch_size=1, linger_ms=1
    )
    await producer.start()
    try:
        for step in range(steps):
            when = RECENT + timedelta(minutes=17, seconds=10 * step)
            for token in prices:
                move = Decimal(rng.choice([-1, 1]) * rng.randint(1, 40)) * Decimal("0.05")
                prices[token] += move
            if step == steps - 1:
                prices[RELIANCE] = Decimal(LAST_WALK_PRICE)
            before = await client.llen(key)
            for t, p in prices.items():
                record = tick_record(t, p, when)
                await producer.send(record.topic, key=record.key, value=record.value)
            await producer.flush()
            deadline = time.monotonic() + 10
            while await client.llen(key) == before:
                assert time.monotonic() < deadline, f"no equity sample for step {step}"
                await asyncio.sleep(0.02)
    finally:
        await producer.stop()
        await client.aclose()


async def create_user(url: str) -> None:
    engine = db.create_engine(url)
    try:
        await db.upgrade(engine)
        await db.create_user(db.session_factory(engine), "demo", PASSWORD)
    finally:
        await engine.dispose()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1440,1000",
        "--force-device-scale-factor=1",
    ]:
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        driver.quit()


def test_dashboard_logs_in_and_follows_a_tick_live(
    fresh_broker: EmbeddedBroker, pg_url: str, redis_url: str, tmp_path: Path, browser: Any
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    asyncio.run(ensure_topics(load_settings(broker={"url": fresh_broker.bootstrap})))
    asyncio.run(create_user(pg_url))
    asyncio.run(produce(fresh_broker.bootstrap, seed()))
    deployment = Deployment(
        bootstrap=fresh_broker.bootstrap,
        data_dir=tmp_path,
        database_url=pg_url,
        redis_url=redis_url,
        extra_env={"ALPHA_PANDA_AUTH_JWT_SECRET": "browser-test-secret-" + "b" * 40},
    )
    worker = StageProcess(deployment, Stage.PORTFOLIO_MANAGER).start()
    try:
        worker.wait_ready(require="mirror in sync")
        # ~0.7 s a step (the worker's fetch latency): enough points for a chart, quickly.
        asyncio.run(
            walk_prices(fresh_broker.bootstrap, redis_url, deployment.mirror_keys, steps=16)
        )

        waiter = WebDriverWait(browser, 20, ignored_exceptions=(StaleElementReferenceException,))

        def until(condition: Any, what: str) -> None:
            try:
                waiter.until(condition)
            except TimeoutException:
                body = browser.find_element(By.TAG_NAME, "body").text
                logs = browser.get_log("browser")
                raise AssertionError(f"timed out: {what}\npage:\n{body}\nconsole: {logs}") from None

        browser.get(f"http://127.0.0.1:{worker.port}/")
        until(lambda d: d.find_element(By.ID, "login-form").is_displayed(), "login form")
        browser.find_element(By.ID, "username").send_keys("demo")
        browser.find_element(By.ID, "password").send_keys(PASSWORD)
        browser.find_element(By.ID, "login-submit").click()

        def texts(selector: str) -> list[str]:
            # The dashboard re-renders its tables every second, replacing the elements, so a
            # WebElement found a moment ago can be stale by the time its text is read. One
            # script reads every match in a single turn of the page's event loop instead.
            found = browser.execute_script(
                "return Array.from(document.querySelectorAll(arguments[0]),"
                " e => e.innerText.trim());",
                selector,
            )
            return [str(t) for t in found]

        def card_value(strategy: str, field: str) -> str:
            found = texts(f'[data-strategy="{strategy}"] [data-field="{field}"]')
            return found[0] if found else ""

        until(
            lambda d: card_value("momentum-nifty", "unrealised_pnl") == UNREALISED_BEFORE,
            "the card's unrealised P&L",
        )
        # The first strategy by name is selected on login; pick the one the tick moves.
        # The cards are re-rendered too: a click on a replaced card is retried, not lost.
        until(
            lambda d: (
                d.find_element(By.CSS_SELECTOR, '[data-strategy="momentum-nifty"]').click() or True
            ),
            "a click on the momentum-nifty card",
        )
        until(
            lambda d: (
                texts("#detail-title") == ["momentum-nifty"]
                and texts("#detail-unrealised") == [UNREALISED_BEFORE]
            ),
            "the detail's unrealised P&L",
        )
        assert card_value("momentum-nifty", "realised_pnl") == "+173.00"
        assert card_value("meanrev-it", "realised_pnl") == "+220.50"
        until(lambda d: texts("#live-status") == ["live"], "live status")
        until(lambda d: len(texts("#fills tbody tr")) == 3, "3 fills")
        until(lambda d: len(texts("#rejections tbody tr")) == 3, "3 rejections")
        # The figures above come from the stream's summary at once; the positions come
        # from the detail request the click started, which can answer later under load.
        until(
            lambda d: texts("#positions tbody tr td")[:2] == ["RELIANCE", "20"],
            "momentum-nifty's position",
        )

        asyncio.run(
            produce(fresh_broker.bootstrap, [tick_record(RELIANCE, FINAL_PRICE, datetime.now(UTC))])
        )
        until(
            lambda d: texts("#detail-unrealised") == [UNREALISED_AFTER],
            "the unrealised P&L after the tick",
        )
        assert card_value("momentum-nifty", "unrealised_pnl") == UNREALISED_AFTER
        # The positions table follows within its one-second refresh.
        until(
            lambda d: texts("#positions tbody tr td")[3:4] == ["2,911.40"],
            "the position's last price",
        )

        severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert severe == [], json.dumps(severe, indent=2)

        shot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        if os.environ.get("ALPHA_PANDA_UPDATE_SCREENSHOT") == "1":
            shutil.copyfile(shot, REPO / "docs" / "dashboard.png")
    finally:
        worker.stop()
    wait_for(lambda: worker.proc is not None and worker.proc.poll() is not None, what="worker exit")
