"""The backtest: ticks, in order, through the stages' own domain code, in one process.

No broker, no Faust, no database server. Each tick goes where the live pipeline sends it,
through the same modules the stages call, with in-memory dicts where the stages have
tables:

1. portfolio manager: the tick's price becomes the instrument's mark;
2. trading engine: :func:`alpha_panda.domain.engine_rules.tick_is_stale`, the last price and book
   (depth, when the tick has one), and resting LIMIT orders the tick trades through
   (:meth:`alpha_panda.domain.paper_trader.PaperTrader.on_tick`);
3. strategy runner: :class:`alpha_panda.domain.strategy_host.StrategyHost`; signal ids derive
   from the tick's envelope id exactly as live;
4. risk manager, per signal: :meth:`alpha_panda.domain.risk_policy.RiskPolicy.decide` on the
   strategy's :class:`tables.risk_state.StrategyRiskState`;
5. trading engine, per approved signal: :func:`alpha_panda.domain.engine_rules.execute_validated`
   (paper fills with slippage, or one per level of the last book, charged by each
   strategy's product: :mod:`alpha_panda.domain.products`);
6. portfolio manager, per fill: :func:`tables.portfolio.book_fill`; strategy runner, per
   fill and per rejection: the strategy's own position
   (:class:`alpha_panda.domain.own_position.OwnPosition`), which the host hands the
   strategy with its next tick.

The live pipeline runs these steps in separate processes; on one instrument a tick
reaches the engine long before the signals it causes (one hop against four), so the
engine fills them at that tick's price, as here. A strategy's own fills and rejections
reach its runner some ticks later live, before its next tick here: a strategy that reads
them may decide differently; one that does not decides the same. docs/BACKTESTING.md has
the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from alpha_panda.backtest.metrics import Ledger, sharpe_like
from alpha_panda.db import RuntimeConfig
from alpha_panda.domain.engine_rules import EngineRejection, execute_validated, tick_is_stale
from alpha_panda.domain.own_position import NOTHING_BOOKED, OwnPosition
from alpha_panda.domain.paper_trader import MarketFills, PaperTrader, PendingLimitOrder
from alpha_panda.domain.products import StrategyProducts
from alpha_panda.domain.risk_policy import RiskPolicy
from alpha_panda.domain.session_rules import SessionRules, session_rules_from
from alpha_panda.domain.strategy_host import StrategyHost
from alpha_panda.settings import Settings
from alpha_panda.topics import rejected_key, strategy_instrument_key
from models.events import (
    REJECTION_DETAIL_MAX,
    MarketTick,
    OrderFill,
    RejectedSignal,
    RejectionReason,
    TradingSignal,
    ValidatedSignal,
)
from tables.portfolio import Portfolio, PortfolioValuation, book_fill
from tables.risk_state import RiskLimits, StrategyRiskState

ZERO = Decimal("0")
HUNDRED = Decimal("100")
DEFAULT_BAR = timedelta(minutes=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class BacktestConfigError(ValueError):
    """The strategies or limits cannot be backtested; the message names strategy and field."""


@dataclass(frozen=True)
class BacktestSetup:
    """Everything a run depends on besides its ticks."""

    config: RuntimeConfig
    risk_defaults: RiskLimits
    trader: PaperTrader
    starting_cash: Decimal
    bar: timedelta = DEFAULT_BAR
    # The trading-day rules the risk manager and strategy runner apply (None: any hour),
    # and the per-strategy defaults they fall back on: a backtest decides as they do.
    sessions: SessionRules | None = None
    default_product: str = "MIS"
    default_allow_pre_open: bool = False

    @classmethod
    def from_settings(
        cls, config: RuntimeConfig, settings: Settings, bar: timedelta = DEFAULT_BAR
    ) -> BacktestSetup:
        """The stages' own settings: risk defaults, paper slippage, starting cash; fees by
        each strategy's product, as the trading engine charges them."""
        paper = settings.paper
        products = StrategyProducts.from_config(config, settings.risk.product)
        return cls(
            config=config,
            risk_defaults=RiskLimits.from_settings(settings.risk),
            trader=PaperTrader(
                slippage_bps=paper.slippage_bps,
                fees=products.fees_of,
                leave_rest_unfilled=paper.leave_rest_unfilled,
            ),
            starting_cash=settings.portfolio.starting_cash,
            bar=bar,
            sessions=session_rules_from(settings),
            default_product=settings.risk.product,
            default_allow_pre_open=settings.risk.allow_pre_open,
        )

    @property
    def instruments(self) -> frozenset[int]:
        return frozenset(
            i.token for record in self.config.enabled_strategies for i in record.instruments
        )


@dataclass(frozen=True)
class StrategySummary:
    strategy_id: str
    fills: int
    closed_trades: int
    win_rate_pct: Decimal | None  # None without a closed trade
    gross_pnl: Decimal
    fees: Decimal
    net_pnl: Decimal
    return_pct: Decimal
    max_drawdown: Decimal
    max_drawdown_pct: Decimal
    sharpe_like: float
    exposure_pct: Decimal
    rejections: int
    unfilled_shares: int = 0  # MARKET shares the book could not absorb (leave_rest_unfilled)


@dataclass
class BacktestResult:
    setup: BacktestSetup
    ticks: int
    first_ts: datetime | None
    last_ts: datetime | None
    fills: list[OrderFill]
    portfolios: dict[str, Portfolio]
    valuations: dict[str, PortfolioValuation]
    ledgers: dict[str, Ledger]
    rejections: Counter[tuple[str, str]]
    marks: dict[int, Decimal]
    summaries: list[StrategySummary] = field(default_factory=list)


class BacktestEngine:
    def __init__(self, setup: BacktestSetup) -> None:
        self.setup = setup
        self.trader = setup.trader
        self.host = StrategyHost(
            sessions=setup.sessions,
            default_product=setup.default_product,
            default_allow_pre_open=setup.default_allow_pre_open,
        )
        problems = self.host.configure(setup.config)
        if problems:
            # The runner would skip these and trade the rest; a backtest asked for them.
            raise BacktestConfigError("; ".join(problems))
        self._host_on_tick = self.host.on_instrument_tick_in_order
        self.policy = RiskPolicy(setup.risk_defaults, setup.sessions)
        invalid = self.policy.configure(setup.config)
        if invalid:
            raise BacktestConfigError(
                "; ".join(f"strategy {sid!r}: {error}" for sid, error in invalid)
            )
        self._risk: dict[str, StrategyRiskState] = {}
        # token -> the engine's last tick: its price, time, and book (None without depth).
        self._engine_ticks: dict[int, MarketTick] = {}
        self._resting: dict[int, list[PendingLimitOrder]] = {}
        self.portfolios: dict[str, Portfolio] = {}
        self._own_booked = self.host.own_position_booked
        self.marks: dict[int, Decimal] = {}
        self.fills: list[OrderFill] = []
        self.rejections: Counter[tuple[str, str]] = Counter()
        # Shares of MARKET orders the book could not absorb (paper.leave_rest_unfilled).
        self.unfilled: Counter[str] = Counter()
        self.ledgers = {
            r.strategy_id: Ledger(r.strategy_id, setup.starting_cash)
            for r in setup.config.enabled_strategies
        }
        # token -> ledgers holding it, so a tick re-marks only the strategies it moves.
        self._holders: dict[int, dict[str, Ledger]] = {}
        self._bar_seconds = setup.bar.total_seconds()
        self._bar: float | None = None
        self._bar_ts: datetime | None = None
        # [from, until): event times known to fall in self._bar, so most ticks skip
        # computing their bar (see _bar_span). Empty until the first tick.
        self._bar_from = self._bar_until = _EPOCH
        self.ticks = 0
        self.first_ts: datetime | None = None
        self.last_ts: datetime | None = None

    def run(
        self,
        ticks: Iterable[tuple[MarketTick, str]],
        progress: Callable[[int], None] | None = None,
    ) -> BacktestResult:
        on_tick = self.on_tick
        if progress is None:
            for tick, event_id in ticks:
                on_tick(tick, event_id)
        else:
            for count, (tick, event_id) in enumerate(ticks, 1):
                on_tick(tick, event_id)
                if not count & 0x3FF:
                    progress(count)
            progress(self.ticks)
        return self.finish()

    def on_tick(self, tick: MarketTick, tick_event_id: str) -> None:
        token = tick.instrument_token
        price = tick.last_price
        ts = tick.exchange_ts
        self.ticks += 1
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        if not self._bar_from <= ts < self._bar_until:
            bar = ts.timestamp() // self._bar_seconds
            if bar != self._bar:
                if self._bar_ts is not None:
                    for ledger in self.ledgers.values():
                        ledger.close_bar(self._bar_ts)
                self._bar = bar
            self._bar_from, self._bar_until = self._bar_span(bar)
        self._bar_ts = ts

        # Portfolio manager: the mark, and the equity of every strategy holding it.
        old = self.marks.get(token)
        self.marks[token] = price
        holders = self._holders.get(token)
        if holders and old is not None and old != price:
            for ledger in holders.values():
                ledger.remark(token, old, price)

        # Trading engine: last price, then resting LIMIT orders this tick trades through.
        previous = self._engine_ticks.get(token)
        if not tick_is_stale(None if previous is None else previous.exchange_ts, tick):
            self._engine_ticks[token] = tick
            resting = self._resting.get(token)
            if resting:
                fills, still_resting = self.trader.on_tick(resting, tick)
                if fills:
                    self._resting[token] = still_resting
                    for fill in fills:
                        self._book(fill)

        # Strategy runner, then risk and the engine for each signal.
        signals = self._host_on_tick(tick, tick_event_id)
        if signals:
            for signal_event_id, signal in signals:
                self._on_signal(signal_event_id, signal)

    def _bar_span(self, bar: float) -> tuple[datetime, datetime]:
        """The event times [from, until) whose bar, ``ts.timestamp() // bar seconds``, is
        ``bar``; an empty span where that cannot be confirmed.

        The bar is a float computation, so the span's ends are checked with it rather than
        trusted: it never decreases as time goes on, so when the first and the last
        microsecond of the span both give ``bar``, every time between them does too.
        """
        seconds = self._bar_seconds
        try:
            start = _EPOCH + timedelta(seconds=bar * seconds)
            end = _EPOCH + timedelta(seconds=(bar + 1) * seconds)
        except OverflowError:
            return _EPOCH, _EPOCH
        if (
            start.timestamp() // seconds == bar
            and (end - _MICROSECOND).timestamp() // seconds == bar
        ):
            return start, end
        return _EPOCH, _EPOCH

    def _on_signal(self, signal_event_id: str, signal: TradingSignal) -> None:
        sid = signal.strategy_id
        state = self._risk.get(sid)
        decision = self.policy.decide(
            signal, signal_event_id, state if state is not None else StrategyRiskState.new(sid)
        )
        if decision.new_state is not None:
            self._risk[sid] = decision.new_state
        if decision.rejection is not None:
            rejection = decision.rejection
            self._reject(
                signal_event_id, signal, rejection.reason, rejection.detail, "risk-manager"
            )
            return
        # Not validated again: the id is derived (32 hex digits), the signal is a validated
        # model (the strategy's), and its time is already UTC. The risk manager validates
        # the same three values when it builds the record.
        validated = ValidatedSignal.model_construct(
            signal_event_id=signal_event_id, signal=signal, validated_ts=signal.signal_ts
        )
        token = signal.instrument_token
        last = self._engine_ticks.get(token)
        resting = self._resting.get(token, [])
        outcome = execute_validated(
            self.trader,
            validated,
            None if last is None else last.last_price,
            None if last is None else last.exchange_ts,
            (order.signal_event_id for order in resting),
            None if last is None else last.depth,
        )
        if outcome is None:
            return
        if isinstance(outcome, EngineRejection):
            self._reject(signal_event_id, signal, outcome.reason, outcome.detail, "trading-engine")
        elif isinstance(outcome, PendingLimitOrder):
            self._resting[token] = [*resting, outcome]
        elif isinstance(outcome, MarketFills):
            for fill in outcome.fills:
                self._book(fill)
            if outcome.unfilled:
                self.unfilled[sid] += outcome.unfilled
        else:
            self._book(outcome)

    @property
    def own(self) -> Mapping[str, OwnPosition]:
        """Each strategy's own position by "strategy:instrument", as the runner books it."""
        return self.host.in_order_own

    def _reject(
        self,
        signal_event_id: str,
        signal: TradingSignal,
        reason: RejectionReason,
        detail: str,
        by: str,
    ) -> None:
        self.rejections[(signal.strategy_id, reason.value)] += 1
        rejected = RejectedSignal(
            signal_event_id=signal_event_id,
            signal=signal,
            reason=reason,
            detail=detail[:REJECTION_DETAIL_MAX],
            rejected_by=by,
            rejected_ts=signal.signal_ts,
        )
        key = rejected_key(rejected)
        booked = self.own.get(key, NOTHING_BOOKED).book_rejection(rejected)
        if booked is not None:
            self._own_booked(key, booked)

    def _book(self, fill: OrderFill) -> None:
        key = strategy_instrument_key(fill.strategy_id, fill.instrument_token)
        own = self.own.get(key, NOTHING_BOOKED).book_fill(fill)
        if own is not None:
            self._own_booked(key, own)
        sid = fill.strategy_id
        before = self.portfolios.get(sid) or Portfolio.new(sid, self.setup.starting_cash)
        booking = book_fill(before, fill, None)
        if booking is None or not booking.booked:
            return  # the same fill id twice: booked once, as the portfolio manager does
        self.portfolios[sid] = booking.portfolio
        self.fills.append(fill)
        ledger = self.ledgers[sid]
        ledger.on_fill(before, booking.portfolio, fill.instrument_token, self.marks, fill.filled_ts)
        token = fill.instrument_token
        if token in ledger.quantities:
            self._holders.setdefault(token, {})[sid] = ledger
        else:
            self._holders.get(token, {}).pop(sid, None)

    def finish(self) -> BacktestResult:
        if self._bar_ts is not None:
            for ledger in self.ledgers.values():
                ledger.close_bar(self._bar_ts)
            self._bar_ts = None
        valuations = {
            sid: portfolio.valuation(self.marks) for sid, portfolio in self.portfolios.items()
        }
        result = BacktestResult(
            setup=self.setup,
            ticks=self.ticks,
            first_ts=self.first_ts,
            last_ts=self.last_ts,
            fills=self.fills,
            portfolios=dict(self.portfolios),
            valuations=valuations,
            ledgers=self.ledgers,
            rejections=self.rejections,
            marks=dict(self.marks),
        )
        result.summaries = [self._summary(sid, result) for sid in sorted(self.ledgers)]
        return result

    def _summary(self, sid: str, result: BacktestResult) -> StrategySummary:
        ledger = self.ledgers[sid]
        cash = self.setup.starting_cash
        valuation = result.valuations.get(sid)
        equity = valuation.equity if valuation is not None else cash
        fees = valuation.fees_paid if valuation is not None else ZERO
        net = equity - cash
        return StrategySummary(
            strategy_id=sid,
            fills=ledger.fills,
            closed_trades=ledger.closed_trades,
            win_rate_pct=(
                Decimal(ledger.winning_trades) * HUNDRED / ledger.closed_trades
                if ledger.closed_trades
                else None
            ),
            gross_pnl=net + fees,
            fees=fees,
            net_pnl=net,
            return_pct=net * HUNDRED / cash if cash else ZERO,
            max_drawdown=ledger.max_drawdown,
            max_drawdown_pct=ledger.max_drawdown_pct,
            sharpe_like=sharpe_like([p.equity for p in ledger.series], self.setup.bar),
            exposure_pct=ledger.exposure(self.first_ts, self.last_ts),
            rejections=sum(n for (s, _), n in self.rejections.items() if s == sid),
            unfilled_shares=self.unfilled[sid],
        )
