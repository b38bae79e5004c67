"""derived_event_id computes uuid5 by hand; it must stay the very same id."""

from __future__ import annotations

import uuid

import pytest

from models.envelope import EVENT_ID_NAMESPACE, derived_event_id


@pytest.mark.parametrize(
    ("parent", "discriminators"),
    [
        ("tick-1", ("momentum", 0)),
        ("sig-1", ("fill",)),
        ("sig-1", ("fill", 7)),
        ("sig-1", ("order",)),
        ("e1", ()),
        ("", ("",)),
        ("0" * 64, ("validated",)),
        ("tick-\u0928\u093f\u092b\u094d\u091f\u0940", ("strat\u00e9gie", -3, None, 2.5)),
    ],
)
def test_same_id_as_uuid5(parent: str, discriminators: tuple[object, ...]) -> None:
    name = ":".join([parent, *(str(d) for d in discriminators)])
    assert derived_event_id(parent, *discriminators) == uuid.uuid5(EVENT_ID_NAMESPACE, name).hex


def test_many_names_match_uuid5() -> None:
    for i in range(2_000):
        parent = f"{i:x}" * (i % 7 + 1)
        expected = uuid.uuid5(EVENT_ID_NAMESPACE, f"{parent}:s{i}:{i % 3}").hex
        assert derived_event_id(parent, f"s{i}", i % 3) == expected


def test_id_is_pinned() -> None:
    # Ids are stored (fills, decisions, dedup windows): the value itself must never drift.
    expected = uuid.uuid5(uuid.UUID("6f1c2a0e-5a57-4b8e-9a3c-a1fa9a9da000"), "sig-1:fill").hex
    assert derived_event_id("sig-1", "fill") == expected
    assert uuid.UUID(hex=derived_event_id("sig-1", "fill")).version == 5
