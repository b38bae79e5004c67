"""The OpenAPI 3.0 document of the portfolio-manager worker, served at /api/v1/openapi.json.

The bodies (``components/schemas``) are generated from the pydantic models in
``web/schemas.py`` that the views serialise; the paths are listed here (the views are plain
Faust pages, there is no router to generate them from) and kept honest by tests that
compare them with the routes the worker actually registers, both ways, and that validate
real responses against the document (tests/unit/web/test_responses_match_openapi.py).
The paths include Faust's own ``/router`` and ``/table`` endpoints while they are enabled,
because they are served on the same port.
"""

from __future__ import annotations

from typing import Any

from models.events import STRATEGY_ID_FULL_PATTERN
from web.auth import LoginRequest
from web.schemas import COMPONENTS, component_schemas

API_VERSION = "1.0.0"

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _money(description: str) -> Json:
    return {
        "type": "string",
        "pattern": r"^-?[0-9]+\.[0-9]{2}$",
        "description": f"{description} Rupees as a decimal string quantised to paise.",
        "example": "1000123.45",
    }


def _json(schema: Json, description: str) -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> Json:
    return _json(_ref("Error"), description)


UNAUTHORIZED = {
    "description": "Missing, malformed, wrongly signed or expired token, or the user is "
    "disabled or deleted. Carries `WWW-Authenticate: Bearer`.",
    "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    "content": {"application/json": {"schema": _ref("Error")}},
}
UNAVAILABLE = _error(
    "The user store cannot be read, or Redis is unavailable while the worker's tables are "
    "still recovering, or the key's owner is unknown during a rebalance. Has Retry-After."
)
BEARER: list[Json] = [{"bearerAuth": []}]


def _limit(default: int) -> Json:
    return {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": default},
        "description": "At most this many items; anything but an integer in 1..500 is a 400.",
    }


STRATEGY_PATH_PARAM = {
    "name": "strategy_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "pattern": STRATEGY_ID_FULL_PATTERN},
}


def _protected(
    summary: str, ok: Json, *, params: list[Json] | None = None, not_found: bool = False
) -> Json:
    responses: Json = {
        "200": ok,
        "400": _error("A query or path parameter is invalid."),
        "401": UNAUTHORIZED,
        "503": UNAVAILABLE,
    }
    if not_found:
        responses["404"] = _error("No portfolio for this strategy.")
    return {
        "summary": summary,
        "tags": ["portfolios" if "portfolio" in summary.lower() else "signals"],
        "security": BEARER,
        "parameters": params or [],
        "responses": responses,
    }


def _api_paths() -> Json:
    return {
        "/api/v1/auth/login": {
            "post": {
                "summary": "Exchange a username and password for a bearer token",
                "tags": ["auth"],
                "security": [],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref("LoginRequest")}},
                },
                "responses": {
                    "200": _json(_ref("Token"), "A token valid for auth.token_ttl_minutes."),
                    "400": _error("The body is not the JSON object above."),
                    "401": _error(
                        "Wrong username or password, or the user is disabled (one message)."
                    ),
                    "413": _error("Body larger than 8 KiB."),
                    "429": {
                        "description": "Too many failed logins for this username or address "
                        "within auth.login_window_s.",
                        "headers": {"Retry-After": {"schema": {"type": "integer"}}},
                        "content": {"application/json": {"schema": _ref("Error")}},
                    },
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/portfolios": {
            "get": _protected(
                "Every portfolio with its valuation at last prices",
                _json(_ref("PortfolioList"), "Sorted by strategy_id."),
            )
        },
        "/api/v1/portfolios/{strategy_id}": {
            "get": _protected(
                "One portfolio with its positions (served by the worker owning the key)",
                _json(_ref("PortfolioDetail"), "The portfolio."),
                params=[STRATEGY_PATH_PARAM],
                not_found=True,
            )
        },
        "/api/v1/portfolios/{strategy_id}/fills": {
            "get": _protected(
                "Recent fills of a portfolio, newest first",
                _json(_ref("FillList"), "Up to limit fills (the worker keeps 100)."),
                params=[STRATEGY_PATH_PARAM, _limit(50)],
                not_found=True,
            )
        },
        "/api/v1/portfolios/{strategy_id}/equity": {
            "get": _protected(
                "Equity samples of a portfolio for charting",
                _json(_ref("EquitySeries"), "Samples from the mirror, or one current point."),
                params=[STRATEGY_PATH_PARAM, _limit(500)],
                not_found=True,
            )
        },
        "/api/v1/signals/rejected": {
            "get": _protected(
                "Recently rejected signals with reason codes",
                _json(_ref("RejectionList"), "Newest first."),
                params=[
                    _limit(50),
                    {
                        "name": "strategy_id",
                        "in": "query",
                        "required": False,
                        "schema": STRATEGY_PATH_PARAM["schema"],
                        "description": "Only this strategy's rejections.",
                    },
                ],
            )
        },
        "/api/v1/stream": {
            "get": {
                "summary": "Server-Sent Events: portfolio summaries as they change",
                "description": "`event: portfolios` carries the body of GET /api/v1/portfolios "
                "whenever it changes; `event: unavailable` an Error body when state cannot be read "
                "(the stream keeps trying); `event: unauthorized` precedes the end of the "
                "stream when the token expires or the user is disabled. A `: keep-alive` "
                "comment is sent after 15 s of silence. EventSource cannot send headers, so "
                "the token may be passed as `?access_token=`.",
                "tags": ["live"],
                "security": [{"bearerAuth": []}, {"queryToken": []}],
                "responses": {
                    "200": {
                        "description": "An event stream.",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    "401": UNAUTHORIZED,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["meta"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document.")},
            }
        },
    }


def _ops_paths() -> Json:
    html = {
        "description": "The dashboard page.",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
    return {
        "/health": {
            "get": {
                "summary": "Readiness: broker, partition assignment, tables, Redis mirror",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": _json(_ref("Health"), "Every check passes."),
                    "503": _json(_ref("Health"), "Some check fails; see failing."),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this worker",
                "tags": ["operations"],
                "security": [],
                "responses": {
                    "200": {
                        "description": "Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/": {
            "get": {
                "summary": "The dashboard (logs in from the page)",
                "tags": ["dashboard"],
                "security": [],
                "responses": {"200": html},
            }
        },
        "/dashboard": {
            "get": {
                "summary": "The dashboard (same page as /)",
                "tags": ["dashboard"],
                "security": [],
                "responses": {"200": html},
            }
        },
        "/static/{filename}": {
            "get": {
                "summary": "The dashboard's script and stylesheet",
                "tags": ["dashboard"],
                "security": [],
                "parameters": [
                    {
                        "name": "filename",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "enum": ["dashboard.js", "dashboard.css"]},
                    }
                ],
                "responses": {
                    "200": {"description": "The file."},
                    "404": _error("Not one of the dashboard's files."),
                },
            }
        },
    }


def _zerodha_paths() -> Json:
    """The daily Kite login (web/zerodha.py); no response carries a token or the secret."""
    not_configured = _error("ALPHA_PANDA_ZERODHA_API_KEY or _API_SECRET is not set.")
    return {
        "/api/v1/zerodha/login-url": {
            "get": {
                "summary": "Kite's login URL with a signed 15-minute state (admin only)",
                "tags": ["zerodha"],
                "security": BEARER,
                "responses": {
                    "200": _json(
                        _ref("ZerodhaLoginUrl"),
                        "Open it in a browser; Kite redirects to the callback below.",
                    ),
                    "401": UNAUTHORIZED,
                    "403": _error("The user is not an admin."),
                    "409": not_configured,
                    "503": UNAVAILABLE,
                },
            }
        },
        "/api/v1/zerodha/callback": {
            "get": {
                "summary": "The Kite app's redirect URL: stores the day's access token",
                "tags": ["zerodha"],
                "security": [],
                "description": "Authenticated by the signed `state` the login URL carries "
                "(Kite returns it unchanged), or by an admin bearer token.",
                "parameters": [
                    {"name": n, "in": "query", "required": n == "request_token", "schema": s}
                    for n, s in (
                        ("request_token", {"type": "string"}),
                        ("state", {"type": "string"}),
                        ("status", {"type": "string"}),
                        ("action", {"type": "string"}),
                        ("type", {"type": "string"}),
                    )
                ],
                "responses": {
                    "200": _json(
                        _ref("ZerodhaLoggedIn"),
                        "Logged in; running stages pick the token up within zerodha.token_poll_s.",
                    ),
                    "400": _error("Bad or missing request token or state, or Kite refused."),
                    "401": _error("Neither a state nor a bearer token."),
                    "403": _error("The bearer token's user is not an admin."),
                    "409": not_configured,
                    "424": _error("Kite cannot be reached."),
                },
            }
        },
        "/api/v1/zerodha/session": {
            "get": {
                "summary": "Who is logged in to Kite and until when",
                "tags": ["zerodha"],
                "security": BEARER,
                "responses": {
                    "200": _json(
                        _ref("ZerodhaSession"), "session is null when no token is stored."
                    ),
                    "401": UNAUTHORIZED,
                    "503": UNAVAILABLE,
                },
            }
        },
    }


def _faust_get(summary: str, params: list[str]) -> Json:
    return {
        "get": {
            "summary": summary,
            "tags": ["faust-internal"],
            "security": [],
            "parameters": [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ],
            "responses": {"200": _json({}, "Faust's own JSON.")},
        }
    }


def _faust_router_paths() -> Json:
    return {
        "/router/": _faust_get("Faust: table partition owners by worker URL", []),
        "/router/topics": _faust_get("Faust: topic partition owners by worker URL", []),
        "/router/{name}/": _faust_get("Faust: partition owners of one table", ["name"]),
        "/router/{name}/{key}/": _faust_get("Faust: the worker URL owning a key", ["name", "key"]),
    }


def _faust_table_paths() -> Json:
    warning = " UNAUTHENTICATED: exposes table contents; disable with web_tables_enabled=False."
    return {
        "/table/": _faust_get("Faust: the tables of this app." + warning, []),
        "/table/{name}/": _faust_get("Faust: a table's local contents." + warning, ["name"]),
        "/table/{name}/{key}/": _faust_get("Faust: one table value." + warning, ["name", "key"]),
    }


def openapi_document(*, faust_router: bool = True, faust_tables: bool = True) -> Json:
    """The document; the flags say which of Faust's built-in endpoints the worker serves."""
    paths: Json = {**_api_paths(), **_zerodha_paths(), **_ops_paths()}
    if faust_router:
        paths.update(_faust_router_paths())
    if faust_tables:
        paths.update(_faust_table_paths())
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Alpha Panda read API",
            "version": API_VERSION,
            "description": "Portfolios, fills, equity and rejected signals of the paper and "
            "live trading pipeline, served by the portfolio-manager worker. Money is a "
            "decimal string in rupees quantised to paise; quantities are integers. Every "
            'error body is {"error": {"code", "message"}}.',
        },
        "servers": [{"url": "/"}],
        "tags": [
            {"name": "auth"},
            {"name": "portfolios"},
            {"name": "signals"},
            {"name": "live"},
            {"name": "meta"},
            {"name": "operations"},
            {"name": "dashboard"},
            {"name": "zerodha", "description": "The daily Kite Connect login."},
            {"name": "faust-internal", "description": "Served by Faust itself on this port."},
        ],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "queryToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "access_token",
                    "description": "The same JWT, for EventSource (only /api/v1/stream).",
                },
            },
            "schemas": component_schemas((*COMPONENTS, LoginRequest)),
        },
    }


def documented_operations(document: Json) -> set[tuple[str, str]]:
    """``{(METHOD, path)}`` of every operation in ``document``."""
    methods = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in methods
    }
