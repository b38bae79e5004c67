"""The one place that builds a stage's Faust app and wires its parts together.

Plain constructor wiring: settings in, app out. Nothing here touches the network; the
broker, database and Redis are reached only when the worker starts.
"""

from __future__ import annotations

from typing import Any

import faust

from alpha_panda.broker_probe import install_broker_probe
from alpha_panda.health import register_health_views
from alpha_panda.http_errors import install_json_errors
from alpha_panda.lean_monitor import LeanMonitor
from alpha_panda.log_identity import install_identity_check
from alpha_panda.logging import faust_logging_config
from alpha_panda.metrics import StageMetrics
from alpha_panda.parent_watch import install_parent_watch
from alpha_panda.runtime import StageContext
from alpha_panda.settings import Settings, Stage
from alpha_panda.stages import STAGES
from alpha_panda.workarounds import faust_drain, producer_flush
from alpha_panda.workarounds.recovery import table_manager_for


def faust_config(settings: Settings, stage: Stage) -> dict[str, Any]:
    broker = settings.broker
    return {
        "broker": broker.faust_url,
        # Tables live in memory and are rebuilt from their changelog topics on start:
        # the log is the source of truth (no RocksDB to install or to go stale).
        "store": "memory://",
        "autodiscover": False,
        "datadir": str(settings.data_dir / "faust" / stage.value),
        "processing_guarantee": "exactly_once" if broker.exactly_once else "at_least_once",
        "producer_acks": -1,  # acks=all
        "producer_linger_ms": broker.linger_ms,
        "producer_max_batch_size": broker.max_batch_size,
        # Faust's /table/{name}/{key} would serve portfolios without authentication.
        "web_tables_enabled": False,
        # Faust's /router/... views (cluster topology, a 500 on /router/0/) are not needed
        # by @app.table_route, which resolves owners from the local assignment.
        "web_router_enabled": False,
        "broker_session_timeout": broker.session_timeout_s,
        "broker_heartbeat_interval": broker.heartbeat_interval_s,
        "broker_rebalance_timeout": broker.rebalance_timeout_s,
        "broker_commit_interval": broker.commit_interval_s,
        "consumer_auto_offset_reset": "earliest",
        "topic_replication_factor": broker.replication_factor,
        "topic_disable_leader": True,
        "table_standby_replicas": 0,
        # Faust's recovery, with two defects that lose or stale state fixed (see
        # alpha_panda/workarounds/recovery.py); the second is the embedded broker's only.
        "TableManager": table_manager_for(broker.kind),
        "web_enabled": True,
        "web_bind": settings.web.host,
        "web_host": settings.web.host,
        "web_port": settings.stage_web_port(stage),
        "web_in_thread": False,
        "logging_config": faust_logging_config(settings.log_level),
        "loghandlers": [],
    }


def create_app(settings: Settings, stage: Stage, **faust_overrides: Any) -> faust.App:
    """Build the Faust app of one stage. Its id is the stage's consumer group."""
    config = faust_config(settings, stage)
    # Faust creates only the last path component of its datadir.
    (settings.data_dir / "faust").mkdir(parents=True, exist_ok=True)
    config.update(faust_overrides)
    app = faust.App(stage.consumer_group, monitor=LeanMonitor(), **config)
    spec = STAGES[stage]
    # A stage whose spec consumes nothing (the feed) boots without a consumer group: Faust's
    # producer-only boot still runs the web server (health, metrics) and its tasks.
    app.producer_only = not spec.inputs
    faust_drain.install(app)  # a record per event without four tasks (see the module)
    producer_flush.install(app)  # a commit waits for every table write before it
    context = StageContext(
        app=app, settings=settings, stage=stage, metrics=StageMetrics(stage.value)
    )
    app.alpha_panda = context  # type: ignore[attr-defined]
    install_json_errors(app)
    register_health_views(context)
    context.install_lag_monitor()
    context.install_fetch_wait()
    install_parent_watch(app)
    context.broker_probe = install_broker_probe(
        app,
        settings.broker.bootstrap_servers,
        restart_after_outage_s=settings.broker.session_timeout_s,
    )
    install_identity_check(context)
    context.stage_handlers = build_stage(context)
    unwired = [a.name for a in spec.agents if a.name not in app.agents]
    if unwired:  # a wiring bug: the stage's spec and its class disagree
        raise RuntimeError(f"{stage.value}: agents {unwired} of its spec are not wired")
    return app


def build_stage(context: StageContext) -> object:
    """The stage's class, built by its plain constructor: it declares its tables and
    subscribes its named handler methods to the topics its spec (alpha_panda/stages.py)
    lists. Imported here, per stage, so a worker imports only its own stage."""
    match context.stage:
        case Stage.MARKET_FEED:
            from agents.market_feed import MarketFeed

            return MarketFeed(context)
        case Stage.STRATEGY_RUNNER:
            from agents.strategy_runner import StrategyRunner

            return StrategyRunner(context)
        case Stage.RISK_MANAGER:
            from agents.risk_manager import RiskManager

            return RiskManager(context)
        case Stage.TRADING_ENGINE:
            from agents.trading_engine import TradingEngine

            return TradingEngine(context)
        case Stage.PORTFOLIO_MANAGER:
            from agents.portfolio_manager import PortfolioManager

            return PortfolioManager(context)
