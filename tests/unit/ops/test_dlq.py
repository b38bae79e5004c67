"""DLQ tooling without a broker: topic resolution, safe printing, selection, refusals."""

from __future__ import annotations

import pytest

from alpha_panda.ops import EXIT_REFUSED, EXIT_USAGE, OpsError
from alpha_panda.ops.dlq import (
    LIST_HEADER,
    DlqRecord,
    Replayed,
    check_replayable,
    known_dlqs,
    resolve,
    safe_text,
    select,
)
from alpha_panda.topics import all_topic_layout


def record(offset: int, original: str = "market.ticks", **extra: bytes) -> DlqRecord:
    headers = {
        "x-error-type": b"DecodeError.invalid_json",
        "x-error-message": b"Expecting value: line 1 column 1 (char 0)",
        "x-stage": b"strategy-runner",
        "x-attempts": b"1",
        "x-original-topic": original.encode(),
        "x-original-partition": b"5",
        "x-original-offset": str(100 + offset).encode(),
    }
    headers.update({k.replace("_", "-"): v for k, v in extra.items()})
    return DlqRecord(
        topic="market.ticks.dlq",
        partition=0,
        offset=offset,
        timestamp_ms=1_767_600_000_000,
        key=b"256265",
        value=b"\x00not json\x1b[2J",
        headers=tuple(headers.items()),
    )


def test_both_spellings_resolve() -> None:
    assert resolve("market.ticks") == ("market.ticks", "market.ticks.dlq")
    assert resolve("market.ticks.dlq") == ("market.ticks", "market.ticks.dlq")
    internal = "alpha-panda.risk-manager.signals-by-strategy"
    assert resolve(internal) == (internal, internal + ".dlq")


@pytest.mark.parametrize("name", ["ticks", "market.ticks.dlq.dlq", "", "orders.filled"])
def test_unknown_topic_is_bad_input_naming_the_known_ones(name: str) -> None:
    with pytest.raises(OpsError) as err:
        resolve(name)
    assert err.value.code == EXIT_USAGE
    assert "known: alpha-panda.risk-manager.signals-by-strategy" in str(err.value)
    assert "orders.filled.paper" in str(err.value)


def test_known_dlqs_are_the_registry_layout() -> None:
    dlqs = {dlq for _, dlq in known_dlqs()}
    assert dlqs == {name for name in all_topic_layout() if name.endswith(".dlq")}


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b'plain {"json": 1}', 'plain {"json": 1}'),
        (b"\x1b[31mred", "\\x1b[31mred"),  # no terminal escape reaches the screen
        (b"line\nbreak\ttab\r", "line\\nbreak\\ttab\\r"),
        (b"\xff\xferaw", "\\xff\\xferaw"),  # not UTF-8
        ("caf\u00e9 \u20b9".encode(), "caf\u00e9 \u20b9"),  # printable UTF-8 stays readable
        ("\u202egnp.exe".encode(), "\\u202egnp.exe"),  # bidi override
        (b"back\\slash", "back\\\\slash"),  # doubled, so \x41 above is never ambiguous
        (None, "<none>"),
    ],
)
def test_safe_text(raw: bytes | None, shown: str) -> None:
    assert safe_text(raw) == shown


def test_safe_text_truncates_with_a_marker() -> None:
    assert safe_text(b"abcdef", 3) == "abc..."
    assert safe_text(b"abc", 3) == "abc"


def test_list_line_has_the_columns_of_the_header() -> None:
    line = record(7).list_line()
    assert line.split("\t") == [
        "7",
        "market.ticks[5]@107",
        "DecodeError.invalid_json",
        "strategy-runner",
        "1",
        "Expecting value: line 1 column 1 (char 0)",
    ]
    assert len(LIST_HEADER.split("\t")) == 6


def test_list_line_escapes_hostile_messages() -> None:
    line = record(1, x_error_message=b"boom\n\x1b]0;owned\x07").list_line()
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert line.endswith("boom\\n\\x1b]0;owned\\x07")


def test_show_prints_headers_key_and_escaped_value() -> None:
    lines = record(3).show_lines()
    assert lines[0] == "market.ticks.dlq[0]@3"
    assert lines[1] == "timestamp: 2026-01-05T08:00:00.000+00:00"
    assert "  x-original-topic: market.ticks" in lines
    assert "key: 256265 (6 bytes)" in lines
    assert lines[-2] == "value (13 bytes, non-printable bytes escaped):"
    assert lines[-1] == "\\x00not json\\x1b[2J"
    assert not any("\x1b" in line for line in lines)


def test_show_a_tombstone_without_key() -> None:
    tomb = DlqRecord("market.ticks.dlq", 0, 0, -1, None, None, ())
    lines = tomb.show_lines()
    assert "key: <none>" in lines and "value: <none> (tombstone)" in lines
    assert "  (none)" in lines and "timestamp: -" in lines


def test_select_all_or_the_named_offsets() -> None:
    records = [record(0), record(1), record(2)]
    assert select(records, None) == records
    assert [r.offset for r in select(records, [2, 0, 2])] == [0, 2]


def test_select_refuses_missing_offsets() -> None:
    with pytest.raises(
        OpsError, match=r"no record at offset 5, 9 \(the DLQ holds offsets 0..2\)"
    ) as err:
        select([record(0), record(1), record(2)], [1, 5, 9])
    assert err.value.code == EXIT_REFUSED
    with pytest.raises(OpsError, match="holds no records"):
        select([], [0])


def test_replay_refuses_records_from_another_topic() -> None:
    check_replayable([record(0)], "market.ticks")
    with pytest.raises(OpsError, match=r"1 record\(s\) do not name 'market.ticks'") as err:
        check_replayable([record(0), record(1, original="orders.filled.paper")], "market.ticks")
    assert err.value.code == EXIT_REFUSED
    missing_header = DlqRecord("market.ticks.dlq", 0, 4, 0, b"k", b"v", ())
    with pytest.raises(OpsError, match="@4 says None"):
        check_replayable([missing_header], "market.ticks")


def test_replay_lines() -> None:
    r = record(3)
    assert Replayed(r, "market.ticks", None, None).line(dry_run=True) == (
        "would replay market.ticks.dlq@3 -> market.ticks key=256265 (13 bytes)"
    )
    assert Replayed(r, "market.ticks", 5, 41).line(dry_run=False) == (
        "replayed market.ticks.dlq@3 -> market.ticks[5]@41 key=256265 (13 bytes)"
    )
    assert (
        Replayed(r, "market.ticks", 2, 41).line(dry_run=False).endswith("(originally partition 5)")
    )
