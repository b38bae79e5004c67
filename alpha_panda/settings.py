"""The one settings object.

Every knob is read from the environment (prefix ``ALPHA_PANDA_``, one ``_`` between the
section and the field: ``ALPHA_PANDA_BROKER_URL`` sets ``broker.url``) or from ``.env``.
It is built once per process by :func:`load_settings` and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

from datetime import datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from alpha_panda.domain.price_band import DEFAULT_TICK_SIZE
from alpha_panda.domain.products import Product

PLACEHOLDER_JWT_SECRET = "change-me-in-production"
# The real Kite Connect REST API; any other root URL is a local or test Kite server.
KITE_ROOT_URL = "https://api.kite.trade"
# Absolute once expanded, so it means the same files from every working directory.
DEFAULT_DATA_DIR = "~/.alpha-panda"
DEFAULT_DATABASE_FILE = "alpha_panda.db"


class Stage(StrEnum):
    """The pipeline stages; each runs as its own worker with its own consumer group."""

    MARKET_FEED = "market-feed"
    STRATEGY_RUNNER = "strategy-runner"
    RISK_MANAGER = "risk-manager"
    TRADING_ENGINE = "trading-engine"
    PORTFOLIO_MANAGER = "portfolio-manager"

    @property
    def consumer_group(self) -> str:
        return f"alpha-panda.{self.value}"


class BrokerKind(StrEnum):
    """What answers at broker.url: it decides defaults that differ between the two."""

    EMBEDDED = "embedded"
    REDPANDA = "redpanda"


# Settings that were removed -> what replaced them. Setting one is refused, not ignored:
# an ignored product setting would leave a strategy trading a product nobody meant.
REMOVED_SETTINGS: dict[tuple[str, str], str] = {
    ("paper", "product"): "paper fills pay the charges of their strategy's product "
    "(risk_limits.product, default ALPHA_PANDA_RISK_PRODUCT: CNC delivery, MIS/NRML intraday)",
    ("zerodha", "product"): "each live order is placed with its strategy's product "
    "(risk_limits.product, default ALPHA_PANDA_RISK_PRODUCT)",
}

# Fetch wait per broker kind, when broker.fetch_max_wait_ms is not set (docs/PERFORMANCE.md).
FETCH_MAX_WAIT_MS_BY_KIND = {BrokerKind.EMBEDDED: 50, BrokerKind.REDPANDA: 500}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BrokerSettings(_Section):
    url: str = Field(
        default="127.0.0.1:9092",
        description="Kafka bootstrap servers, comma separated host:port (Redpanda or embedded).",
    )
    embedded: bool = Field(
        default=True,
        description="`make run` may start the embedded Tansu broker when nothing answers at url.",
    )
    enable_idempotence: bool = Field(
        default=True,
        description="Idempotent producers; falls back with one log line if the broker refuses.",
    )
    exactly_once: bool = Field(
        default=False,
        description="Faust processing_guarantee=exactly_once (Redpanda only; needs transactions).",
    )
    session_timeout_s: float = Field(default=6.0, gt=0, description="Consumer group session.")
    heartbeat_interval_s: float = Field(default=1.0, gt=0, description="Group heartbeat.")
    rebalance_timeout_s: float = Field(default=8.0, gt=0, description="Group rebalance.")
    commit_interval_s: float = Field(default=1.0, gt=0, description="Offset commit interval.")
    replication_factor: int = Field(default=1, ge=1, description="For topics we create.")
    linger_ms: int = Field(default=5, ge=0, description="Producer batching delay.")
    kind: BrokerKind = Field(
        default=BrokerKind.EMBEDDED,
        description="embedded or redpanda: picks the defaults that differ between them "
        "(fetch_max_wait_ms) and turns off what only the embedded broker needs (table "
        "recovery's end-offset confirmation).",
    )
    fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=0,
        le=30_000,
        description="Longest a consumer's fetch waits at the broker for data; unset: by kind, "
        "embedded 50, redpanda 500. The embedded broker does not answer a waiting fetch when "
        "records arrive, so on it this wait is added to a hop's latency when the hop's "
        "partitions are idle, and idle workers poll the broker every wait; Redpanda answers "
        "at once.",
    )
    storage: Literal["snapshot", "memory"] = Field(
        default="snapshot",
        description="How the embedded broker keeps its log: snapshot saves the whole log "
        "and the group offsets under data_dir/broker at each clean stop and restores them "
        "at start (a broker crash loses what came after the last clean stop); memory keeps "
        "nothing across a stop.",
    )
    single_record_batches: bool = Field(
        default=False,
        description="One record per produce batch: a fallback for brokers that list end "
        "offsets short (the embedded broker lists the last batch's base offset + 1). Not "
        "needed by our code, which confirms end offsets by fetch; costs ~20x raw throughput.",
    )

    @property
    def fetch_wait_ms(self) -> int:
        """fetch_max_wait_ms, or the broker kind's default."""
        if self.fetch_max_wait_ms is not None:
            return self.fetch_max_wait_ms
        return FETCH_MAX_WAIT_MS_BY_KIND[self.kind]

    @property
    def max_batch_size(self) -> int:
        # aiokafka still accepts a record larger than the batch size: alone in its batch.
        return 1 if self.single_record_batches else 16384

    @property
    def bootstrap_servers(self) -> list[str]:
        return [s.strip() for s in self.url.removeprefix("kafka://").split(",") if s.strip()]

    @property
    def faust_url(self) -> str:
        return ";".join(f"kafka://{s}" for s in self.bootstrap_servers)


class DatabaseSettings(_Section):
    url: str = Field(
        default="",
        description="SQLAlchemy async URL; empty: the SQLite file data_dir/alpha_panda.db. "
        "Production: postgresql+asyncpg://user@host/db.",
    )
    config_refresh_s: float = Field(
        default=2.0, gt=0, description="How often stages re-read strategy configuration."
    )


class RedisSettings(_Section):
    url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis for the mirror.")
    enabled: bool = Field(default=True, description="Mirror portfolios to Redis.")
    key_prefix: str = Field(default="alpha-panda", description="Prefix of every mirror key.")


class AuthSettings(_Section):
    jwt_secret: SecretStr = Field(
        default=SecretStr(PLACEHOLDER_JWT_SECRET),
        description="HS256 signing secret. The placeholder never signs: development generates "
        "a key into data_dir/jwt_secret, production refuses to start.",
    )
    jwt_algorithm: Literal["HS256"] = Field(default="HS256", description="Only HS256.")
    token_ttl_minutes: int = Field(default=60, gt=0, le=24 * 60, description="Token lifetime.")
    login_max_failures: int = Field(
        default=5, gt=0, description="Failed logins per user or address per window."
    )
    login_window_s: float = Field(default=300.0, gt=0, description="Login throttle window.")


class WebSettings(_Section):
    host: str = Field(default="127.0.0.1", description="Address the web servers bind.")
    port: int = Field(
        default=8080, gt=0, lt=65536, description="Port of the read API (portfolio manager)."
    )
    stage_base_port: int = Field(
        default=8081,
        gt=0,
        lt=65536,
        description="Other stages serve /health and /metrics on base, base+1, ...",
    )


class PaperSettings(_Section):
    slippage_bps: Decimal = Field(
        default=Decimal("5"), ge=0, le=1000, description="Paper MARKET slippage, basis points."
    )
    leave_rest_unfilled: bool = Field(
        default=False,
        description="A paper MARKET order walking the depth leaves what the five levels "
        "cannot absorb unfilled, instead of filling it at the last level plus slippage.",
    )


class RiskSettings(_Section):
    """Global risk defaults; a strategy's configuration may override any of them."""

    max_order_quantity: int = Field(default=1_000, gt=0, description="Shares per order.")
    max_order_notional: Decimal = Field(
        default=Decimal("500000"), gt=0, description="Rupees per order."
    )
    max_position_quantity: int = Field(
        default=5_000, gt=0, description="Absolute shares per instrument."
    )
    max_gross_exposure: Decimal = Field(
        default=Decimal("2000000"), gt=0, description="Rupees across a strategy's positions."
    )
    max_daily_loss: Decimal = Field(
        default=Decimal("50000"), gt=0, description="Rupees; the strategy halts for the day."
    )
    max_orders_per_minute: int = Field(default=30, gt=0, description="Per strategy.")
    allowed_instruments: str = Field(
        default="", description="Comma separated instrument tokens; empty allows all."
    )
    allow_short: bool = Field(default=False, description="Allow SELL below a flat position.")
    product: Product = Field(
        default="MIS",
        description="Product a strategy trades unless its configuration says otherwise "
        "(risk_limits.product); it decides the MIS square-off, the fees of its fills (CNC "
        "delivery, else intraday) and the product of its live orders.",
    )
    allow_pre_open: bool = Field(
        default=False, description="Approve signals in the 09:00-09:08 pre-open order entry."
    )


class PortfolioSettings(_Section):
    starting_cash: Decimal = Field(
        default=Decimal("1000000"), ge=0, description="Rupees per new portfolio."
    )


class FeedSettings(_Section):
    source: Literal["mock", "zerodha"] = Field(
        default="mock",
        description="mock: the seeded random walk; zerodha: Kite's live ticker (full mode, "
        "the instruments of enabled strategies).",
    )
    instruments: str = Field(
        default="256265:NIFTY 50:22000,738561:RELIANCE:2900,2953217:TCS:3900,408065:INFY:1500",
        description="token:symbol:start_price, comma separated.",
    )
    ticks_per_second: float = Field(default=20.0, gt=0, description="Mock feed rate (total).")
    seed: int = Field(default=42, description="Random-walk seed: same seed, same prices.")
    volatility_bps: Decimal = Field(
        default=Decimal("8"), ge=0, description="Std dev of a tick's move, basis points."
    )
    max_ticks: int = Field(default=0, ge=0, description="Stop after N ticks (0 = run forever).")
    linger_ms: int = Field(
        default=0,
        ge=0,
        description="The feed's producer batching delay. 0 sends each tick at once (ticks "
        "still share a request while one is in flight); the 5 ms of broker.linger_ms was "
        "half of a tick's median trip to the portfolio at low rates.",
    )
    sessions_only: bool = Field(
        default=True,
        description="The mock feed publishes only while an NSE session is open (wall "
        "clock, IST); `make run` and the test harness set false to tick at any hour.",
    )


class MarketSettings(_Section):
    """The NSE trading day (alpha_panda/market_calendar.py), judged in event time."""

    enforce_sessions: bool = Field(
        default=True,
        description="Risk rejects signals outside the regular session (market_closed) and "
        "new MIS entries after square-off; the runner squares MIS positions off. false for "
        "demos and tests at any hour.",
    )
    square_off_time: time = Field(
        default=time(15, 20),
        description="IST time MIS positions are closed; special sessions keep the same "
        "lead before their close.",
    )

    @field_validator("square_off_time")
    @classmethod
    def _inside_regular_session(cls, value: time) -> time:
        if not time(9, 15) < value < time(15, 30):
            raise ValueError("must be after 09:15 and before 15:30 (IST)")
        return value

    @property
    def square_off_lead(self) -> timedelta:
        """How long before the regular session's close MIS positions are squared off."""
        close = datetime.combine(datetime.min, time(15, 30))
        return close - datetime.combine(datetime.min, self.square_off_time)


class ZerodhaSettings(_Section):
    """Kite Connect. api_key and api_secret come from the Kite Connect app; the daily access
    token is not a setting: `alpha-panda zerodha login` stores it in the database."""

    api_key: SecretStr = Field(
        default=SecretStr(""), description="Kite Connect app's API key; empty: Zerodha is off."
    )
    api_secret: SecretStr = Field(
        default=SecretStr(""), description="Kite Connect app's API secret (never logged)."
    )
    root_url: str = Field(default=KITE_ROOT_URL, description="Kite REST API.")
    ws_url: str = Field(default="wss://ws.kite.trade", description="Kite ticker WebSocket.")
    login_url: str = Field(
        default="https://kite.zerodha.com/connect/login",
        description="Kite's login page; it redirects to the app's registered URL.",
    )
    market_protection: int = Field(
        default=-1,
        ge=-1,
        le=100,
        description="Percent sent with MARKET orders (-1: Kite's automatic); the 2026 "
        "rules reject MARKET orders without a non-zero value.",
    )
    token_poll_s: float = Field(
        default=5.0, gt=0, description="How often the feed and trader re-read the stored token."
    )
    order_poll_s: float = Field(
        default=2.0,
        gt=0,
        description="How often the trader lists Kite's orders for fills (the fallback to "
        "WebSocket order updates).",
    )
    orders_per_second: int = Field(
        default=10, gt=0, description="Client-side order rate limit (Kite: 10/s)."
    )
    orders_per_minute: int = Field(
        default=400, gt=0, description="Client-side order rate limit (Kite: 400/min)."
    )
    max_signal_age_s: float = Field(
        default=60.0,
        gt=0,
        description="A live signal older than this (by its tick's time) is refused, not "
        "placed: after an outage, a backlog or a replay, old prices must not become orders.",
    )
    breaker_failures: int = Field(
        default=3, gt=0, description="Consecutive Kite 5xx/timeouts that open the breaker."
    )
    breaker_reset_s: float = Field(
        default=10.0, gt=0, description="How long the open breaker refuses before a probe."
    )
    allow_embedded_broker: bool = Field(
        default=False,
        description="Place live orders although the log is the embedded broker's, which a "
        "crash rolls back to its last clean stop (Kite fills since then are forgotten); "
        "false: the engine refuses live signals there.",
    )

    @property
    def configured(self) -> bool:
        """Whether Zerodha is set up at all: the feed and trader need only the api_key
        (and a stored token); the login needs the api_secret too."""
        return bool(self.api_key.get_secret_value())


class TicksSettings(_Section):
    """Checks every consuming stage applies to market.ticks (alpha_panda/domain/price_band.py)."""

    price_band_pct: Decimal = Field(
        default=Decimal("20"),
        gt=0,
        le=100,
        description="A tick more than this % from the previous accepted price is "
        "dead-lettered (NSE bands: 2, 5, 10, 20).",
    )
    tick_size: Decimal = Field(
        default=DEFAULT_TICK_SIZE,
        gt=0,
        description="The tick size of an instrument Kite's instruments master does not "
        "give (the mock feed's, or before the master is loaded): a tick whose price is not a "
        "multiple of its instrument's tick size is dead-lettered.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ALPHA_PANDA_",
        env_nested_delimiter="_",
        env_nested_max_split=1,
        env_file=".env",
        extra="ignore",
        frozen=True,
    )

    env: Literal["development", "production"] = Field(
        default="development", description="production refuses placeholder secrets."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="JSON log level."
    )
    data_dir: Path = Field(
        default=Path(DEFAULT_DATA_DIR),
        description="Logs, SQLite file, Faust data, the development JWT key. Made absolute "
        "at load (~ expanded, a relative path taken from the working directory), so every "
        "command of one deployment finds the same files wherever it runs.",
    )
    broker: BrokerSettings = BrokerSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    auth: AuthSettings = AuthSettings()
    web: WebSettings = WebSettings()
    paper: PaperSettings = PaperSettings()
    risk: RiskSettings = RiskSettings()
    portfolio: PortfolioSettings = PortfolioSettings()
    feed: FeedSettings = FeedSettings()
    market: MarketSettings = MarketSettings()
    zerodha: ZerodhaSettings = ZerodhaSettings()
    ticks: TicksSettings = TicksSettings()

    @model_validator(mode="before")
    @classmethod
    def _refuse_removed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for (section, name), replacement in REMOVED_SETTINGS.items():
                given = data.get(section)
                if isinstance(given, dict) and name in given:
                    env = f"ALPHA_PANDA_{section}_{name}".upper()
                    raise ValueError(f"{env} was removed: {replacement}; unset it")
        return data

    @model_validator(mode="after")
    def _resolve_locations(self) -> Settings:
        # A default that depends on the working directory once made `alpha-panda halt`,
        # run from another directory, create and halt a second, empty database while the
        # pipeline kept trading. So the data directory is made absolute here, once, and
        # the default database lives inside it (docs/CONFIGURATION.md).
        data_dir = self.data_dir.expanduser()
        if not data_dir.is_absolute():
            data_dir = Path.cwd() / data_dir
        object.__setattr__(self, "data_dir", data_dir)
        if not self.database.url:
            url = f"sqlite+aiosqlite:///{data_dir / DEFAULT_DATABASE_FILE}"
            object.__setattr__(self, "database", self.database.model_copy(update={"url": url}))
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if (
            self.env != "development"
            and self.auth.jwt_secret.get_secret_value() == PLACEHOLDER_JWT_SECRET
        ):
            raise ValueError(
                "auth.jwt_secret (ALPHA_PANDA_AUTH_JWT_SECRET) is the placeholder; "
                "set a real secret outside development"
            )
        return self

    @model_validator(mode="after")
    def _zerodha_feed_needs_a_key(self) -> Settings:
        if self.feed.source == "zerodha" and not self.zerodha.configured:
            raise ValueError(
                "feed.source (ALPHA_PANDA_FEED_SOURCE) is zerodha but zerodha.api_key "
                "(ALPHA_PANDA_ZERODHA_API_KEY) is not set"
            )
        return self

    @property
    def live_trading_refusal(self) -> str | None:
        """Why the trading engine may not place live orders with these settings, or None."""
        if self.broker.kind is BrokerKind.EMBEDDED and not self.zerodha.allow_embedded_broker:
            return (
                "live trading refused on the embedded broker: a crash rolls its log back to "
                "the last clean stop and Kite fills since then would be forgotten; run on "
                "Redpanda (ALPHA_PANDA_BROKER_KIND=redpanda) or accept the risk with "
                "ALPHA_PANDA_ZERODHA_ALLOW_EMBEDDED_BROKER=true"
            )
        return None

    def stage_web_port(self, stage: Stage) -> int:
        if stage is Stage.PORTFOLIO_MANAGER:
            return self.web.port
        others = [s for s in Stage if s is not Stage.PORTFOLIO_MANAGER]
        return self.web.stage_base_port + others.index(stage)


class SettingsError(Exception):
    """A configuration value is invalid; the message names the environment variable."""


def _env_name(loc: tuple[int | str, ...]) -> str:
    return "ALPHA_PANDA_" + "_".join(str(p) for p in loc).upper()


def load_settings(**overrides: object) -> Settings:
    """Build the settings; errors name the offending field and its environment variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{_env_name(err['loc'])}: {err['msg']}" if err["loc"] else err["msg"]
            for err in exc.errors()
        )
        raise SettingsError(f"invalid configuration: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, for entry points only (CLI, `faust -A alpha_panda`)."""
    return load_settings()
