"""The strategy-id rule has one home (models/events.py); its users agree on every sample."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter, ValidationError

from alpha_panda.db import ConfigValidationError, _check_strategy_id
from models.events import STRATEGY_ID_FULL_PATTERN, StrategyId

SAMPLES = [
    ("mom-1", True),
    ("a", True),
    ("A.b_c-9", True),
    ("x" * 64, True),
    ("x" * 65, False),
    ("", False),
    ("bad id", False),
    ("mom/1", False),
    ("mom-1\n", False),
    ("émile", False),
]


@pytest.mark.parametrize(("text", "valid"), SAMPLES)
def test_every_user_of_the_rule_agrees(text: str, valid: bool) -> None:
    try:
        TypeAdapter(StrategyId).validate_python(text)
        event_ok = True
    except ValidationError:
        event_ok = False
    try:
        _check_strategy_id(text)
        store_ok = True
    except ConfigValidationError:
        store_ok = False
    # The API's path parameter check (web/) and its OpenAPI pattern use this expression.
    pattern_ok = re.fullmatch(STRATEGY_ID_FULL_PATTERN, text) is not None

    assert (event_ok, store_ok, pattern_ok) == (valid, valid, valid)
