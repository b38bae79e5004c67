"""The response (and request) bodies of the read API as pydantic models.

The one description of each body: the response builders in ``web/read_model.py`` build
these models and serialise them, and ``web/openapi.py`` generates the document's
``components/schemas`` from them (:func:`component_schemas`), so the document cannot drift
from what the views send. tests/unit/web/test_responses_match_openapi.py validates real
responses, errors included, against the served document.

Wire format: money is a string of a decimal quantised to paise (``web.formatting.money``),
quantities are integers, times ISO 8601 strings; fields serialise in declaration order.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

Json = dict[str, Any]
MONEY_PATTERN = r"^-?[0-9]+\.[0-9]{2}$"
DATE_TIME: Json = {"format": "date-time"}
Side = Literal["BUY", "SELL"]
Source = Literal["redis", "tables"]


def money(description: str) -> Any:
    """A money field: ``description`` plus the wire format, with the pattern it obeys."""
    return Field(
        pattern=MONEY_PATTERN,
        description=f"{description} Rupees as a decimal string quantised to paise.",
        json_schema_extra={"example": "1000123.45"},
    )


def date_time(description: str | None = None) -> Any:
    return Field(description=description, json_schema_extra=DATE_TIME)


class Body(BaseModel):
    # Built by our own code from validated state: forbid typos in field names.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorDetail(Body):
    code: str = Field(json_schema_extra={"example": "invalid_token"})
    message: str


class Error(Body):
    error: ErrorDetail


class Token(Body):
    access_token: str = Field(description="HS256 JWT.")
    token_type: Literal["bearer"]
    expires_at: str = date_time()


class PortfolioSummary(Body):
    strategy_id: str
    cash: str = money("Cash after fills and fees.")
    equity: str = money("cash + market_value.")
    market_value: str = money("Signed value of open positions at last prices.")
    realised_pnl: str = money("Realised on closed quantity, fees excluded.")
    unrealised_pnl: str = money("Open positions marked at last prices.")
    net_pnl: str = money("equity - starting_cash (fees included).")
    fees_paid: str = money("Total fees.")
    trade_count: int
    starting_cash: str = money("Starting capital.")
    positions_count: int = Field(description="Open (non-zero) positions.")
    last_fill_ts: str | None = date_time()
    source: Source = Field(
        description="Where the state was read: the Redis mirror or the worker's tables."
    )


class PortfolioList(Body):
    portfolios: list[PortfolioSummary]


class Position(Body):
    instrument_token: int
    symbol: str
    quantity: int = Field(description="Signed; 0 when flat.")
    avg_price: str = money("Average cost.")
    last_price: str = money("Mark price (average cost when unpriced).")
    priced: bool = Field(description="False: no tick seen yet.")
    market_value: str = money("quantity * last_price.")
    unrealised_pnl: str = money("(last_price - avg_price) * quantity.")
    realised_pnl: str = money("Realised on this instrument.")


class PortfolioDetail(PortfolioSummary):
    positions: list[Position]


class Fill(Body):
    fill_id: str
    order_id: str
    signal_event_id: str
    instrument_token: int
    symbol: str
    side: Side
    quantity: int
    fill_price: str = money("Fill price.")
    notional: str = money("fill_price * quantity.")
    fees: str = money("All fees of this fill.")
    execution_mode: Literal["paper", "live"]
    filled_ts: str = date_time()
    reason: str = Field(
        description="Why the order was placed (the signal's reason); an MIS square-off "
        "starts with mis_square_off. Empty when unknown."
    )


class FillList(Body):
    strategy_id: str
    source: Source
    fills: list[Fill] = Field(description="Newest first.")


class EquitySample(Body):
    ts: str = date_time()
    equity: str = money("Equity at ts.")


class EquitySeries(Body):
    strategy_id: str
    source: Source
    samples: list[EquitySample] = Field(
        description="Oldest first. From the tables: one point, now."
    )


class Rejection(Body):
    event_id: str
    signal_event_id: str
    strategy_id: str
    instrument_token: int
    symbol: str
    side: Side
    quantity: int
    reference_price: str = money("Last price the strategy saw.")
    reason: str = Field(
        description="Machine-readable reason code (models.events.RejectionReason).",
        json_schema_extra={"example": "max_order_quantity"},
    )
    detail: str
    rejected_by: str
    rejected_ts: str = date_time()


class RejectionList(Body):
    source: Literal["redis", "tables", "redis+tables"] = Field(
        description="redis+tables: the mirror lacked some lists this worker's tables hold "
        "(e.g. after Redis lost its data)."
    )
    rejections: list[Rejection] = Field(
        description="Newest first, merged across strategies and instruments."
    )


class Health(Body):
    # Read by the stage's /health view (web/health.py), which builds its body itself;
    # only the documented keys are required.
    model_config = ConfigDict(extra="allow", frozen=True)

    status: Literal["ok", "unavailable"]
    stage: str
    pid: int
    failing: list[str]
    checks: dict[str, Any]


class KiteSession(Body):
    """The stored Kite session, without its access token (``BrokerSessionRecord.public``)."""

    broker: str
    user_id: str
    user_name: str
    login_time: str = date_time()
    expires_at: str = date_time()
    expires_at_ist: str = date_time()
    valid: bool


class ZerodhaLoginUrl(Body):
    login_url: str


class ZerodhaLoggedIn(Body):
    session: KiteSession


class ZerodhaSession(Body):
    configured: bool
    session: KiteSession | None = Field(description="null when no token is stored.")


# The response models the document names under components/schemas, by their class names
# (web/openapi.py adds the request body, web.auth.LoginRequest).
COMPONENTS: tuple[type[BaseModel], ...] = (
    Error,
    Token,
    PortfolioSummary,
    PortfolioList,
    Position,
    PortfolioDetail,
    Fill,
    FillList,
    EquitySeries,
    Rejection,
    RejectionList,
    Health,
    KiteSession,
    ZerodhaLoginUrl,
    ZerodhaLoggedIn,
    ZerodhaSession,
)
REF_TEMPLATE = "#/components/schemas/{model}"


def component_schemas(models: Iterable[type[BaseModel]] = COMPONENTS) -> Json:
    """``components/schemas`` in OpenAPI 3.0 form, generated from ``models``."""
    models = tuple(models)
    _, top = models_json_schema(
        [(model, "serialization") for model in models], ref_template=REF_TEMPLATE
    )
    defs: Json = {name: to_openapi_30(schema) for name, schema in top["$defs"].items()}
    named = {model.__name__ for model in models}
    # Parts of a body (ErrorDetail, EquitySample) are written inline, as in the document's
    # earlier hand-written form; only the bodies themselves are named components.
    return {name: _inline(defs[name], defs, named) for name in sorted(named)}


def _inline(schema: Any, defs: Json, named: set[str]) -> Any:
    if isinstance(schema, list):
        return [_inline(item, defs, named) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.rsplit("/", 1)[1]
        if name not in named:
            return _inline(defs[name], defs, named)
    return {k: _inline(v, defs, named) for k, v in schema.items()}


def to_openapi_30(schema: Any) -> Any:
    """JSON Schema 2020-12 (pydantic) -> the OpenAPI 3.0 dialect: ``nullable`` instead of
    a ``null`` branch, ``enum`` instead of ``const``; ``$ref`` stands alone."""
    if isinstance(schema, list):
        return [to_openapi_30(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: Json = {k: to_openapi_30(v) for k, v in schema.items() if k != "title"}
    if "const" in out:
        out["enum"] = [out.pop("const")]
    branches = out.get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        out.pop("anyOf")
        (only,) = rest  # every optional field here is "X or null"
        if "$ref" in only:
            out["allOf"] = [only]
        else:
            out.update(only)
        out["nullable"] = True
    if "$ref" in out and len(out) > 1:
        ref = out.pop("$ref")
        out["allOf"] = [{"$ref": ref}]
    return out
