"""Kite ticker wire format: binary tick frames, text messages, and their encoders. Pure.

Binary frame (all big-endian): uint16 packet count, then per packet a uint16 length and the
packet. Packet kinds are told apart by length only:

    8    ltp    token, last price
    28   index  token, last, high, low, open, close, price change       (index quote)
    32   index  the 28 bytes + exchange timestamp                        (index full)
    44   quote  token, last, last qty, avg price, volume, total buy qty, total sell qty,
                open, high, low, close
    184  full   the 44 bytes + last trade time, OI, OI day high, OI day low, exchange
                timestamp, then 10 depth entries of 12 bytes (qty int32, price int32,
                orders int16, 2 bytes padding): 5 bids, then 5 asks

Note the index packets carry high/low before open/close; the quote packets open first.
A frame of exactly one byte is a heartbeat.

Decisions (also in docs/ZERODHA.md):
- Prices are integers in the segment's smallest unit: the segment is `token & 0xff`; CDS (3)
  prices are divided by 10^7, BCD (6) by 10^4 (as the official client does), every other
  segment by 100. The division is exact (`Decimal.scaleb`), never a float.
- Prices are read as signed int32 (a negative price is possible in commodities); quantities,
  volumes, OI and timestamps as unsigned.
- Timestamps are epoch seconds and become timezone-aware UTC datetimes; 0 means "absent".
- `change` is the absolute change from the previous close (`last_price - close`), exact; None
  when there is no close. (The official client computes a percentage with floats; the index
  packets' own change field is written by our encoder with the same meaning and ignored by the
  parser, which computes it like every other packet.)
- A depth slot with quantity 0 is an empty level and is dropped, so `bids`/`asks` hold only
  real levels, best first.
- A packet whose length is none of the above, or a frame cut short, is a `PacketError` in the
  result, never an exception: parsing goes on with the next packet while the length prefixes
  still allow it.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal


class TickMode(StrEnum):
    LTP = "ltp"
    QUOTE = "quote"
    FULL = "full"


# Segment constants (token & 0xff), from Kite's published exchange map.
SEGMENT_NSE = 1
SEGMENT_NFO = 2
SEGMENT_CDS = 3
SEGMENT_BSE = 4
SEGMENT_BFO = 5
SEGMENT_BCD = 6
SEGMENT_MCX = 7
SEGMENT_MCXSX = 8
SEGMENT_INDICES = 9

LTP_LENGTH = 8
INDEX_QUOTE_LENGTH = 28
INDEX_FULL_LENGTH = 32
QUOTE_LENGTH = 44
FULL_LENGTH = 184
PACKET_LENGTHS = frozenset(
    {LTP_LENGTH, INDEX_QUOTE_LENGTH, INDEX_FULL_LENGTH, QUOTE_LENGTH, FULL_LENGTH}
)
DEPTH_LEVELS = 5
_DEPTH_OFFSET = 64
_DEPTH_ENTRY = 12

_I32 = struct.Struct(">i")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_QUOTE = struct.Struct(">IiIiIIIiiii")  # 44 bytes
_FULL_EXTRA = struct.Struct(">IIIII")  # 20 bytes: ltt, oi, oi high, oi low, exchange ts
_DEPTH = struct.Struct(">IiHxx")  # 12 bytes
_FULL = struct.Struct(">IiIiIIIiiii" + "IIIII" + "IiHxx" * (2 * 5))  # 184 bytes
_INDEX = struct.Struct(">Iiiiiii")  # 28 bytes: token, last, high, low, open, close, change
_LTP = struct.Struct(">Ii")


def segment_of(instrument_token: int) -> int:
    return instrument_token & 0xFF


def price_exponent(instrument_token: int) -> int:
    """Decimal places of the integer prices for this token's segment."""
    segment = segment_of(instrument_token)
    if segment == SEGMENT_CDS:
        return 7
    if segment == SEGMENT_BCD:
        return 4
    return 2


def to_price(raw: int, instrument_token: int) -> Decimal:
    return Decimal(raw).scaleb(-price_exponent(instrument_token))


def from_price(price: Decimal, instrument_token: int) -> int:
    """The wire integer for a price; ValueError if the price has more places than the segment."""
    scaled = price.scaleb(price_exponent(instrument_token))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {price} has more decimal places than the segment allows")
    return int(scaled)


def _to_time(seconds: int | None) -> datetime | None:
    return datetime.fromtimestamp(seconds, tz=UTC) if seconds else None


def _from_time(moment: datetime | None) -> int:
    if moment is None:
        return 0
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    return int(moment.timestamp())


@dataclass(frozen=True, slots=True)
class DepthLevel:
    quantity: int
    price: Decimal
    orders: int


@dataclass(frozen=True, slots=True)
class KiteTick:
    instrument_token: int
    mode: TickMode
    tradable: bool
    last_price: Decimal
    last_quantity: int | None = None
    average_price: Decimal | None = None
    volume: int | None = None
    buy_quantity: int | None = None
    sell_quantity: int | None = None
    open: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    close: Decimal | None = None
    change: Decimal | None = None
    last_trade_time: datetime | None = None
    oi: int | None = None
    oi_day_high: int | None = None
    oi_day_low: int | None = None
    exchange_timestamp: datetime | None = None
    bids: tuple[DepthLevel, ...] = ()
    asks: tuple[DepthLevel, ...] = ()

    @property
    def is_index(self) -> bool:
        return segment_of(self.instrument_token) == SEGMENT_INDICES


@dataclass(frozen=True, slots=True)
class PacketError:
    """One packet that could not be read. `index` is its position in the frame."""

    index: int
    length: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedFrame:
    ticks: list[KiteTick] = field(default_factory=list)
    errors: list[PacketError] = field(default_factory=list)
    heartbeat: bool = False


def _change(last: Decimal, close: Decimal | None) -> Decimal | None:
    if close is None or close == 0:
        return None
    return last - close


def parse_packet(packet: bytes) -> KiteTick | str:
    """One packet to a tick, or the reason it cannot be read."""
    length = len(packet)
    if length not in PACKET_LENGTHS:
        return f"unknown packet length {length}"
    token = _U32.unpack_from(packet, 0)[0]
    tradable = segment_of(token) != SEGMENT_INDICES
    # Hot path (every tick of every instrument): one struct call per packet and an inlined,
    # exact Decimal scaling instead of a helper call per price.
    exp = -price_exponent(token)
    dec = Decimal

    if length == LTP_LENGTH:
        return KiteTick(token, TickMode.LTP, tradable, dec(_LTP.unpack(packet)[1]).scaleb(exp))
    if length in (INDEX_QUOTE_LENGTH, INDEX_FULL_LENGTH):
        _, last, high, low, open_, close, _wire_change = _INDEX.unpack_from(packet, 0)
        last_price, close_price = dec(last).scaleb(exp), dec(close).scaleb(exp)
        exchange_ts = (
            _to_time(_U32.unpack_from(packet, 28)[0]) if length == INDEX_FULL_LENGTH else None
        )
        return KiteTick(
            token,
            TickMode.QUOTE if length == INDEX_QUOTE_LENGTH else TickMode.FULL,
            tradable,
            last_price,
            open=dec(open_).scaleb(exp),
            high=dec(high).scaleb(exp),
            low=dec(low).scaleb(exp),
            close=close_price,
            change=_change(last_price, close_price),
            exchange_timestamp=exchange_ts,
        )
    if length == QUOTE_LENGTH:
        fields = _QUOTE.unpack(packet)
        bids: tuple[DepthLevel, ...] = ()
        asks: tuple[DepthLevel, ...] = ()
        ltt = oi = oi_high = oi_low = exchange_ts = None
    else:
        fields = _FULL.unpack(packet)
        ltt, oi, oi_high, oi_low, exchange_ts = fields[11:16]
        depth = fields[16:]
        levels = [
            DepthLevel(depth[i], dec(depth[i + 1]).scaleb(exp), depth[i + 2])
            for i in range(0, 30, 3)
            if depth[i]  # quantity 0: an empty slot
        ]
        # Slots are 5 bids then 5 asks; empty ones were dropped, so split by position.
        nonempty_bids = sum(1 for i in range(0, 15, 3) if depth[i])
        bids, asks = tuple(levels[:nonempty_bids]), tuple(levels[nonempty_bids:])
    (_, last, last_qty, avg, volume, buy_qty, sell_qty, open_, high, low, close) = fields[:11]
    last_price, close_price = dec(last).scaleb(exp), dec(close).scaleb(exp)
    full = length == FULL_LENGTH
    return KiteTick(
        token,
        TickMode.FULL if full else TickMode.QUOTE,
        tradable,
        last_price,
        last_quantity=last_qty,
        average_price=dec(avg).scaleb(exp),
        volume=volume,
        buy_quantity=buy_qty,
        sell_quantity=sell_qty,
        open=dec(open_).scaleb(exp),
        high=dec(high).scaleb(exp),
        low=dec(low).scaleb(exp),
        close=close_price,
        change=_change(last_price, close_price),
        last_trade_time=_to_time(ltt),
        oi=oi,
        oi_day_high=oi_high,
        oi_day_low=oi_low,
        exchange_timestamp=_to_time(exchange_ts),
        bids=bids,
        asks=asks,
    )


def parse_binary_frame(data: bytes) -> ParsedFrame:
    """A whole binary WebSocket message to ticks, per-packet errors and the heartbeat flag."""
    if len(data) == 1:
        return ParsedFrame(heartbeat=True)
    if len(data) < 2:
        return ParsedFrame(errors=[PacketError(0, None, "empty frame")])
    count = _U16.unpack_from(data, 0)[0]
    ticks: list[KiteTick] = []
    errors: list[PacketError] = []
    pos = 2
    for index in range(count):
        if pos + 2 > len(data):
            errors.append(
                PacketError(index, None, f"frame truncated: {count - index} packet(s) missing")
            )
            break
        length = _U16.unpack_from(data, pos)[0]
        start = pos + 2
        if start + length > len(data):
            errors.append(
                PacketError(
                    index, length, f"packet truncated: {len(data) - start} of {length} bytes"
                )
            )
            break
        result = parse_packet(data[start : start + length])
        if isinstance(result, str):
            errors.append(PacketError(index, length, result))
        else:
            ticks.append(result)
        pos = start + length
    else:
        if pos != len(data):
            errors.append(PacketError(count, None, f"{len(data) - pos} trailing byte(s)"))
    return ParsedFrame(ticks=ticks, errors=errors)


# --- encoders (the local Kite server and tests) ---------------------------------------------


def _encode_depth(levels: tuple[DepthLevel, ...], token: int) -> bytes:
    if len(levels) > DEPTH_LEVELS:
        raise ValueError(f"at most {DEPTH_LEVELS} depth levels per side")
    out = b"".join(
        _DEPTH.pack(lv.quantity, from_price(lv.price, token), lv.orders) for lv in levels
    )
    return out + bytes(_DEPTH_ENTRY * (DEPTH_LEVELS - len(levels)))


def encode_packet(tick: KiteTick) -> bytes:
    """The packet Kite would send for this tick: its length follows from mode and segment."""
    token = tick.instrument_token

    def p(value: Decimal | None) -> int:
        return from_price(value, token) if value is not None else 0

    if tick.mode is TickMode.LTP:
        return _LTP.pack(token, p(tick.last_price))
    if tick.is_index:
        change = tick.last_price - tick.close if tick.close else Decimal(0)
        body = _INDEX.pack(
            token,
            p(tick.last_price),
            p(tick.high),
            p(tick.low),
            p(tick.open),
            p(tick.close),
            p(change),
        )
        if tick.mode is TickMode.QUOTE:
            return body
        return body + _U32.pack(_from_time(tick.exchange_timestamp))
    body = _QUOTE.pack(
        token,
        p(tick.last_price),
        tick.last_quantity or 0,
        p(tick.average_price),
        tick.volume or 0,
        tick.buy_quantity or 0,
        tick.sell_quantity or 0,
        p(tick.open),
        p(tick.high),
        p(tick.low),
        p(tick.close),
    )
    if tick.mode is TickMode.QUOTE:
        return body
    return (
        body
        + _FULL_EXTRA.pack(
            _from_time(tick.last_trade_time),
            tick.oi or 0,
            tick.oi_day_high or 0,
            tick.oi_day_low or 0,
            _from_time(tick.exchange_timestamp),
        )
        + _encode_depth(tick.bids, token)
        + _encode_depth(tick.asks, token)
    )


def encode_frame(packets: list[bytes]) -> bytes:
    parts = [_U16.pack(len(packets))]
    for packet in packets:
        parts.append(_U16.pack(len(packet)))
        parts.append(packet)
    return b"".join(parts)


HEARTBEAT_FRAME = b"\x00"


# --- text messages ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KiteTextMessage:
    """A text frame from the ticker.

    kind "order": an order update, `order` holds Kite's order dict (also for orders placed on
    Kite web or mobile). kind "error" / "message": `text` holds Kite's string. kind "unknown":
    not JSON or an unknown type; `text` holds the raw frame. Never raises.
    """

    kind: Literal["order", "error", "message", "unknown"]
    order: dict[str, Any] | None = None
    text: str | None = None


def parse_text_frame(text: str | bytes) -> KiteTextMessage:
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    try:
        # Prices in order updates are JSON numbers: read them as exact Decimals.
        payload = json.loads(text, parse_float=Decimal)
    except ValueError:
        return KiteTextMessage("unknown", text=text)
    if not isinstance(payload, dict):
        return KiteTextMessage("unknown", text=text)
    kind = payload.get("type")
    data = payload.get("data")
    if kind == "order" and isinstance(data, dict):
        return KiteTextMessage("order", order=data)
    if kind in ("error", "message"):
        return KiteTextMessage(kind, text=str(data))
    return KiteTextMessage("unknown", text=text)


def encode_order_update(order: dict[str, Any]) -> str:
    return json.dumps({"type": "order", "data": order}, default=str)


def encode_error_message(message: str) -> str:
    return json.dumps({"type": "error", "data": message})


def subscribe_message(tokens: list[int]) -> str:
    return json.dumps({"a": "subscribe", "v": tokens})


def unsubscribe_message(tokens: list[int]) -> str:
    return json.dumps({"a": "unsubscribe", "v": tokens})


def mode_message(mode: TickMode, tokens: list[int]) -> str:
    return json.dumps({"a": "mode", "v": [mode.value, tokens]})


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """A client's text message as the server reads it."""

    action: Literal["subscribe", "unsubscribe", "mode"]
    tokens: tuple[int, ...]
    mode: TickMode | None = None


def parse_client_message(text: str) -> ClientRequest:
    """Server side: ValueError with the reason for anything but a well-formed request."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise ValueError("not JSON") from exc
    if not isinstance(payload, dict):
        raise ValueError("not an object")
    action, value = payload.get("a"), payload.get("v")
    if action in ("subscribe", "unsubscribe"):
        return ClientRequest(action, _tokens(value))
    if action == "mode":
        if not (isinstance(value, list) and len(value) == 2):
            raise ValueError("mode expects [mode, [tokens]]")
        try:
            mode = TickMode(value[0])
        except ValueError as exc:
            raise ValueError(f"unknown mode {value[0]!r}") from exc
        return ClientRequest("mode", _tokens(value[1]), mode)
    raise ValueError(f"unknown action {action!r}")


def _tokens(value: object) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) and 0 <= t < 2**32 for t in value
    ):
        raise ValueError("tokens must be a list of unsigned 32-bit integers")
    return tuple(value)
