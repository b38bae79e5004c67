"""The one settings object.

Every knob is read from the environment (prefix ``ALPHA_PANDA_``, one ``_`` between the
section and the field: ``ALPHA_PANDA_BROKER_URL`` sets ``broker.url``) or from ``.env``.
It is built once per process by :func:`load_settings` and passed down; nothing else reads
the environment.
"""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_JWT_SECRET = "change-me-in-production"


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
        "(fetch_max_wait_ms).",
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
        default="sqlite+aiosqlite:///var/alpha_panda.db",
        description="SQLAlchemy async URL; production: postgresql+asyncpg://user@host/db.",
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
        default=SecretStr(PLACEHOLDER_JWT_SECRET), description="HS256 signing secret."
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
    product: Literal["intraday", "delivery"] = Field(
        default="intraday", description="Which NSE charge schedule paper fills pay."
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


class PortfolioSettings(_Section):
    starting_cash: Decimal = Field(
        default=Decimal("1000000"), ge=0, description="Rupees per new portfolio."
    )


class FeedSettings(_Section):
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
    data_dir: Path = Field(default=Path("var"), description="Logs, SQLite file, Faust data.")
    broker: BrokerSettings = BrokerSettings()
    database: DatabaseSettings = DatabaseSettings()
    redis: RedisSettings = RedisSettings()
    auth: AuthSettings = AuthSettings()
    web: WebSettings = WebSettings()
    paper: PaperSettings = PaperSettings()
    risk: RiskSettings = RiskSettings()
    portfolio: PortfolioSettings = PortfolioSettings()
    feed: FeedSettings = FeedSettings()

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
