"""An asyncio Kite Connect v3 REST client on aiohttp.

Every call sends `X-Kite-Version: 3` and `Authorization: token api_key:access_token`; the access
token is read from a callable on each call, so a new daily token is picked up without a restart.
Failures are typed (`errors.py`): an HTTP error maps from Kite's error JSON; a timeout or a
connection failure is a `NetworkException` with no status. The client neither retries nor
rate-limits: that policy (queueing, a circuit breaker) belongs to the trader that calls it.
Nothing here logs; a caller logging an error sees messages with the token masked.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import json
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
from pydantic import BaseModel, ValidationError

from alpha_panda.zerodha.errors import (
    DataException,
    NetworkException,
    TokenException,
    error_from_response,
    mask,
)
from alpha_panda.zerodha.models import (
    Candle,
    Instrument,
    KiteOrder,
    KiteSession,
    KiteTrade,
    PlaceOrder,
    format_kite_time,
    parse_kite_time,
)

__all__ = [
    "Candle",
    "Instrument",
    "KiteOrder",
    "KiteRestClient",
    "KiteSession",
    "KiteTrade",
    "PlaceOrder",
    "postback_checksum",
    "session_checksum",
    "verify_postback",
]

KITE_VERSION = "3"
DEFAULT_ROOT_URL = "https://api.kite.trade"
LOGIN_URL = "https://kite.zerodha.com/connect/login"


def session_checksum(api_key: str, request_token: str, api_secret: str) -> str:
    """Kite's checksum for POST /session/token: hex sha256 of key + request token + secret."""
    return hashlib.sha256((api_key + request_token + api_secret).encode()).hexdigest()


def login_url(api_key: str, base: str = LOGIN_URL) -> str:
    return f"{base}?v=3&api_key={api_key}"


def postback_checksum(order_id: str, order_timestamp: str, api_secret: str) -> str:
    """Kite's postback checksum: hex sha256 of order_id + order_timestamp (as sent) + secret."""
    return hashlib.sha256((order_id + order_timestamp + api_secret).encode()).hexdigest()


def verify_postback(payload: dict[str, Any], api_secret: str) -> bool:
    """True when a postback's checksum matches; compares in constant time."""
    checksum = payload.get("checksum")
    order_id, timestamp = payload.get("order_id"), payload.get("order_timestamp")
    if not (isinstance(checksum, str) and order_id is not None and isinstance(timestamp, str)):
        return False
    expected = postback_checksum(str(order_id), timestamp, api_secret)
    return hmac.compare_digest(checksum, expected)


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], data: Any) -> M:
    """A response row to its model; a shape Kite should not send is a DataException."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Field names and error kinds only: the input values may hold a token.
        fields = sorted({".".join(str(p) for p in e["loc"]) for e in exc.errors()})
        raise DataException(
            f"unexpected {model.__name__} response (fields: {', '.join(fields)})",
            "DataException",
            200,
        ) from None


class KiteRestClient:
    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        root_url: str,
        api_key: str,
        access_token: Callable[[], str | None],
        timeout_s: float = 10.0,
    ) -> None:
        self._session = session
        self._root = root_url.rstrip("/")
        self._api_key = api_key
        self._access_token = access_token
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)

    # --- session ------------------------------------------------------------------------------

    async def create_session(self, request_token: str, api_secret: str) -> KiteSession:
        """Exchange a single-use request token for the day's access token."""
        form = {
            "api_key": self._api_key,
            "request_token": request_token,
            "checksum": session_checksum(self._api_key, request_token, api_secret),
        }
        data = await self._call(
            "POST", "/session/token", data=form, auth=False, secrets=(request_token, api_secret)
        )
        return _parse(KiteSession, data)

    # --- orders ------------------------------------------------------------------------------

    async def place_order(self, order: PlaceOrder) -> str:
        """Place an order; Kite's order id. Acceptance is not execution: watch its status."""
        data = await self._call("POST", f"/orders/{order.variety}", data=order.form())
        try:
            return str(data["order_id"])
        except (TypeError, KeyError) as exc:
            raise DataException("order response without order_id", "DataException", 200) from exc

    async def cancel_order(self, order_id: str, variety: str = "regular") -> str:
        """Cancel a working order; Kite's order id. Kite refuses (400) an order that is
        already complete, cancelled or rejected."""
        data = await self._call("DELETE", f"/orders/{variety}/{order_id}")
        try:
            return str(data["order_id"])
        except (TypeError, KeyError) as exc:
            raise DataException("cancel response without order_id", "DataException", 200) from exc

    async def orders(self) -> list[KiteOrder]:
        """Today's orders of the user (also those placed by hand on Kite web or mobile)."""
        data = await self._call("GET", "/orders")
        return [_parse(KiteOrder, row) for row in _rows(data)]

    async def order_history(self, order_id: str) -> list[KiteOrder]:
        """Every status the order went through, oldest first."""
        data = await self._call("GET", f"/orders/{order_id}")
        return [_parse(KiteOrder, row) for row in _rows(data)]

    async def order_trades(self, order_id: str) -> list[KiteTrade]:
        data = await self._call("GET", f"/orders/{order_id}/trades")
        return [_parse(KiteTrade, row) for row in _rows(data)]

    # --- market data -------------------------------------------------------------------------

    async def instruments(self, exchange: str | None = None) -> list[Instrument]:
        """The instruments master (CSV, regenerated daily); one exchange or all."""
        path = "/instruments" if exchange is None else f"/instruments/{exchange}"
        text = await self._call("GET", path, raw=True)
        assert isinstance(text, str)
        reader = csv.DictReader(io.StringIO(text))
        out: list[Instrument] = []
        for row in reader:
            cleaned: dict[str, Any] = {k: v for k, v in row.items() if k is not None}
            if not cleaned.get("expiry"):
                cleaned["expiry"] = None
            out.append(_parse(Instrument, cleaned))
        return out

    async def historical(
        self,
        instrument_token: int,
        interval: str,
        from_: datetime,
        to: datetime,
        *,
        continuous: bool = False,
        oi: bool = False,
    ) -> list[Candle]:
        """Candles for an instrument between two aware datetimes (sent as IST wall clock)."""
        params = {
            "from": format_kite_time(from_),
            "to": format_kite_time(to),
            "continuous": "1" if continuous else "0",
            "oi": "1" if oi else "0",
        }
        data = await self._call(
            "GET", f"/instruments/historical/{instrument_token}/{interval}", params=params
        )
        candles = data.get("candles", []) if isinstance(data, dict) else []
        out: list[Candle] = []
        for row in candles:
            if not isinstance(row, list) or len(row) < 6:
                raise DataException("unexpected candle row", "DataException", 200)
            try:
                moment = parse_kite_time(row[0])
            except ValueError:
                raise DataException("unexpected candle time", "DataException", 200) from None
            fields = ("timestamp", "open", "high", "low", "close", "volume", "oi")
            out.append(_parse(Candle, dict(zip(fields, [moment, *row[1:7]], strict=False))))
        return out

    # --- transport -----------------------------------------------------------------------------

    def _headers(self, auth: bool) -> dict[str, str]:
        headers = {"X-Kite-Version": KITE_VERSION}
        if auth:
            token = self._access_token()
            if not token:
                raise TokenException("no access token: log in first", "TokenException", None)
            headers["Authorization"] = f"token {self._api_key}:{token}"
        return headers

    async def _call(
        self,
        method: str,
        path: str,
        *,
        data: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        auth: bool = True,
        raw: bool = False,
        secrets: tuple[str, ...] = (),
    ) -> Any:
        headers = self._headers(auth)
        hidden = (*secrets, self._access_token() if auth else None)
        try:
            async with self._session.request(
                method,
                self._root + path,
                data=data,
                params=params,
                headers=headers,
                timeout=self._timeout,
            ) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            raise NetworkException(f"{method} {path} timed out", "NetworkException", None) from None
        except aiohttp.ClientError as exc:
            message = mask(f"{method} {path}: {type(exc).__name__}: {exc}", hidden)
            raise NetworkException(message, "NetworkException", None) from None
        if status >= 400:
            raise error_from_response(status, _decode(text), secrets=hidden)
        if raw:
            return text
        body = _decode(text)
        if not isinstance(body, dict) or body.get("status") != "success":
            if isinstance(body, dict) and body.get("status") == "error":
                raise error_from_response(status, body, secrets=hidden)
            raise DataException(f"{method} {path}: unreadable response", "DataException", status)
        return body.get("data")


def _decode(text: str) -> Any:
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError:
        return text


def _rows(data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise DataException("expected a list", "DataException", 200)
    return data
