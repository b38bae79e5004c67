"""Kite binary ticker packets, built byte by byte with struct (not with our encoder).

Values are hand-checked: INFY's token 408065 is 0x063A01 (segment 1, NSE, paise);
NIFTY 50's 256265 is 0x03E909 (segment 9, an index); 1700000000 s is 2023-11-14 22:13:20 UTC.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from alpha_panda.zerodha.ticker_protocol import (
    DepthLevel,
    KiteTick,
    TickMode,
    encode_frame,
    encode_packet,
    mode_message,
    parse_binary_frame,
    parse_client_message,
    parse_text_frame,
    subscribe_message,
)

INFY = 408065
NIFTY = 256265
CDS_TOKEN = 0x123403  # segment 3: prices in 1e-7 rupees
BCD_TOKEN = 0x123406  # segment 6: prices in 1e-4 rupees
T0 = 1_700_000_000
T0_UTC = datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)


def frame(*packets: bytes) -> bytes:
    out = struct.pack(">H", len(packets))
    for packet in packets:
        out += struct.pack(">H", len(packet)) + packet
    return out


def ltp_packet(token: int = INFY, price: int = 150025) -> bytes:
    return struct.pack(">I", token) + struct.pack(">i", price)


def quote_packet() -> bytes:
    return (
        struct.pack(">I", INFY)
        + struct.pack(">i", 150025)  # last 1500.25
        + struct.pack(">I", 7)  # last qty
        + struct.pack(">i", 149950)  # avg 1499.50
        + struct.pack(">I", 1_234_567)  # volume
        + struct.pack(">I", 5000)  # total buy qty
        + struct.pack(">I", 6000)  # total sell qty
        + struct.pack(">i", 149000)  # open 1490.00
        + struct.pack(">i", 151010)  # high 1510.10
        + struct.pack(">i", 148805)  # low 1488.05
        + struct.pack(">i", 148000)  # close 1480.00
    )


def full_packet() -> bytes:
    out = quote_packet()
    out += struct.pack(">I", T0)  # last trade time
    out += struct.pack(">I", 100)  # oi
    out += struct.pack(">I", 150)  # oi day high
    out += struct.pack(">I", 90)  # oi day low
    out += struct.pack(">I", T0 + 1)  # exchange timestamp
    bids = [(10, 150020, 2), (20, 150015, 3), (30, 150010, 1), (0, 0, 0), (0, 0, 0)]
    asks = [(5, 150030, 1), (15, 150035, 2), (25, 150040, 4), (35, 150045, 5), (45, 150050, 6)]
    for qty, price, orders in bids + asks:
        out += struct.pack(">I", qty) + struct.pack(">i", price) + struct.pack(">H", orders)
        out += b"\x00\x00"
    assert len(out) == 184
    return out


def index_packet(full: bool) -> bytes:
    out = (
        struct.pack(">I", NIFTY)
        + struct.pack(">i", 2_345_060)  # last 23450.60
        + struct.pack(">i", 2_350_000)  # high 23500.00
        + struct.pack(">i", 2_330_015)  # low 23300.15
        + struct.pack(">i", 2_340_000)  # open 23400.00
        + struct.pack(">i", 2_335_060)  # close 23350.60
        + struct.pack(">i", 10_000)  # change field (ignored; we compute last - close)
    )
    if full:
        out += struct.pack(">I", T0)
    return out


def test_ltp_packet() -> None:
    parsed = parse_binary_frame(frame(ltp_packet()))
    assert parsed.errors == [] and not parsed.heartbeat
    (tick,) = parsed.ticks
    assert tick.instrument_token == INFY
    assert tick.mode is TickMode.LTP
    assert tick.tradable is True
    assert tick.last_price == Decimal("1500.25")
    assert isinstance(tick.last_price, Decimal)
    assert tick.volume is None and tick.bids == () and tick.asks == ()


def test_quote_packet() -> None:
    (tick,) = parse_binary_frame(frame(quote_packet())).ticks
    assert tick.mode is TickMode.QUOTE
    assert tick.last_price == Decimal("1500.25")
    assert tick.last_quantity == 7
    assert tick.average_price == Decimal("1499.50")
    assert tick.volume == 1_234_567
    assert tick.buy_quantity == 5000 and tick.sell_quantity == 6000
    assert (tick.open, tick.high, tick.low, tick.close) == (
        Decimal("1490.00"),
        Decimal("1510.10"),
        Decimal("1488.05"),
        Decimal("1480.00"),
    )
    assert tick.change == Decimal("20.25")
    assert tick.last_trade_time is None and tick.oi is None and tick.bids == ()


def test_full_packet_with_depth() -> None:
    (tick,) = parse_binary_frame(frame(full_packet())).ticks
    assert tick.mode is TickMode.FULL
    assert tick.last_price == Decimal("1500.25")
    assert tick.last_trade_time == T0_UTC
    assert tick.last_trade_time is not None and tick.last_trade_time.tzinfo is not None
    assert tick.exchange_timestamp == datetime(2023, 11, 14, 22, 13, 21, tzinfo=UTC)
    assert (tick.oi, tick.oi_day_high, tick.oi_day_low) == (100, 150, 90)
    # The two empty bid slots (quantity 0) are dropped.
    assert tick.bids == (
        DepthLevel(10, Decimal("1500.20"), 2),
        DepthLevel(20, Decimal("1500.15"), 3),
        DepthLevel(30, Decimal("1500.10"), 1),
    )
    assert len(tick.asks) == 5
    assert tick.asks[0] == DepthLevel(5, Decimal("1500.30"), 1)
    assert tick.asks[4] == DepthLevel(45, Decimal("1500.50"), 6)


@pytest.mark.parametrize("full", [False, True])
def test_index_packets(full: bool) -> None:
    packet = index_packet(full)
    assert len(packet) == (32 if full else 28)
    (tick,) = parse_binary_frame(frame(packet)).ticks
    assert tick.instrument_token == NIFTY
    assert tick.tradable is False
    assert tick.mode is (TickMode.FULL if full else TickMode.QUOTE)
    assert tick.last_price == Decimal("23450.60")
    # Index packets carry high and low before open and close.
    assert tick.high == Decimal("23500.00")
    assert tick.low == Decimal("23300.15")
    assert tick.open == Decimal("23400.00")
    assert tick.close == Decimal("23350.60")
    assert tick.change == Decimal("100.00")
    assert tick.exchange_timestamp == (T0_UTC if full else None)
    assert tick.volume is None and tick.bids == ()


def test_segment_divisors() -> None:
    ticks = parse_binary_frame(
        frame(ltp_packet(CDS_TOKEN, 832_512_500), ltp_packet(BCD_TOKEN, 832_512))
    ).ticks
    assert ticks[0].last_price == Decimal("83.25125")
    assert ticks[1].last_price == Decimal("83.2512")


def test_negative_price_reads_signed() -> None:
    (tick,) = parse_binary_frame(frame(ltp_packet(0x000107, -3763))).ticks  # MCX segment
    assert tick.last_price == Decimal("-37.63")


def test_multi_packet_frame_keeps_order() -> None:
    parsed = parse_binary_frame(frame(ltp_packet(), full_packet(), index_packet(False)))
    assert parsed.errors == []
    assert [(t.instrument_token, t.mode) for t in parsed.ticks] == [
        (INFY, TickMode.LTP),
        (INFY, TickMode.FULL),
        (NIFTY, TickMode.QUOTE),
    ]


def test_heartbeat() -> None:
    parsed = parse_binary_frame(b"\x00")
    assert parsed.heartbeat is True and parsed.ticks == [] and parsed.errors == []


def test_zero_packet_frame_is_empty_not_an_error() -> None:
    parsed = parse_binary_frame(struct.pack(">H", 0))
    assert parsed.ticks == [] and parsed.errors == [] and not parsed.heartbeat


def test_unknown_length_is_an_error_and_parsing_continues() -> None:
    parsed = parse_binary_frame(frame(ltp_packet(), b"\x01" * 12, ltp_packet(price=100)))
    assert [t.last_price for t in parsed.ticks] == [Decimal("1500.25"), Decimal("1.00")]
    (error,) = parsed.errors
    assert error.index == 1 and error.length == 12
    assert "unknown packet length 12" in error.reason


def test_truncated_packet_is_an_error_not_an_exception() -> None:
    data = frame(ltp_packet(), quote_packet())[:-10]
    parsed = parse_binary_frame(data)
    assert [t.mode for t in parsed.ticks] == [TickMode.LTP]
    (error,) = parsed.errors
    assert error.index == 1 and error.length == 44
    assert "truncated" in error.reason


def test_count_larger_than_the_packets_present() -> None:
    data = struct.pack(">H", 3) + struct.pack(">H", 8) + ltp_packet()
    parsed = parse_binary_frame(data)
    assert len(parsed.ticks) == 1
    (error,) = parsed.errors
    assert error.index == 1 and "2 packet(s) missing" in error.reason


def test_trailing_bytes_are_reported() -> None:
    parsed = parse_binary_frame(frame(ltp_packet()) + b"\x00\x00\x00")
    assert len(parsed.ticks) == 1
    assert [e.reason for e in parsed.errors] == ["3 trailing byte(s)"]


def test_empty_frame_is_an_error() -> None:
    assert parse_binary_frame(b"").errors[0].reason == "empty frame"


def test_encoder_matches_the_hand_built_bytes() -> None:
    """The fake server's encoder writes exactly what the hand-built fixtures say Kite sends."""
    for packet in (ltp_packet(), quote_packet(), full_packet(), index_packet(True)):
        (tick,) = parse_binary_frame(frame(packet)).ticks
        encoded = encode_packet(tick)
        if tick.is_index:
            # Our encoder writes last - close into the index change field.
            assert encoded[:24] == packet[:24] and encoded[28:] == packet[28:]
            assert struct.unpack(">i", encoded[24:28])[0] == 10_000
        else:
            assert encoded == packet
    assert encode_frame([ltp_packet(), quote_packet()]) == frame(ltp_packet(), quote_packet())


def test_encoder_refuses_a_price_off_the_segment_grid() -> None:
    tick = KiteTick(INFY, TickMode.LTP, True, Decimal("1500.255"))
    with pytest.raises(ValueError, match="decimal places"):
        encode_packet(tick)


def test_text_frames() -> None:
    order = parse_text_frame(
        '{"type":"order","data":{"order_id":"250101000000001","status":"OPEN"}}'
    )
    assert order.kind == "order" and order.order == {
        "order_id": "250101000000001",
        "status": "OPEN",
    }
    priced = parse_text_frame('{"type":"order","data":{"average_price":1500.05,"quantity":3}}')
    assert priced.order == {"average_price": Decimal("1500.05"), "quantity": 3}
    assert parse_text_frame('{"type":"error","data":"bad"}').text == "bad"
    assert parse_text_frame('{"type":"message","data":"hi"}').kind == "message"
    assert parse_text_frame("not json").kind == "unknown"
    assert parse_text_frame("[1,2]").kind == "unknown"
    assert parse_text_frame('{"type":"order","data":"x"}').kind == "unknown"


def test_client_messages_round_trip() -> None:
    request = parse_client_message(subscribe_message([INFY, NIFTY]))
    assert request.action == "subscribe" and request.tokens == (INFY, NIFTY)
    request = parse_client_message(mode_message(TickMode.FULL, [INFY]))
    assert request.action == "mode" and request.mode is TickMode.FULL
    for bad in ('{"a":"mode","v":["deep",[1]]}', '{"a":"subscribe","v":["x"]}', "{", '{"a":"x"}'):
        with pytest.raises(ValueError):
            parse_client_message(bad)
