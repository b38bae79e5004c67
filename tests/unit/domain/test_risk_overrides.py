"""A strategy's risk overrides are checked by RiskLimits' own rules (one home), in the form the
configuration store keeps; what the store accepts the risk manager applies unchanged."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tables.risk_state import RiskConfigError, RiskLimits, stored_overrides

DEFAULTS = RiskLimits(
    max_order_quantity=1_000,
    max_order_notional=Decimal("500000"),
    max_position_quantity=5_000,
    max_gross_exposure=Decimal("2000000"),
    max_daily_loss=Decimal("50000"),
    max_orders_per_minute=30,
)


def test_text_and_json_forms_become_the_stored_form() -> None:
    stored = stored_overrides(
        {
            "max_order_quantity": " 25 ",
            "max_order_notional": 0.1,
            "max_daily_loss": "2500.50",
            "allowed_instruments": "738561, 256265, 738561",
            "allow_short": "Yes",
            "product": " cnc ",
        }
    )

    assert stored == {
        "max_order_quantity": 25,
        "max_order_notional": "0.1",
        "max_daily_loss": "2500.50",
        "allowed_instruments": [256265, 738561],
        "allow_short": True,
        "product": "CNC",
    }


@pytest.mark.parametrize("empty", ["", " , ", None])
def test_no_instrument_list_allows_every_instrument(empty: str | None) -> None:
    assert stored_overrides({"allowed_instruments": empty}) == {"allowed_instruments": None}


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"max_bananas": 1}, "max_bananas"),
        ({"max_order_quantity": 0}, "max_order_quantity"),
        ({"max_order_quantity": "2.0"}, "max_order_quantity"),
        ({"max_order_quantity": 2.0}, "max_order_quantity"),
        ({"max_orders_per_minute": True}, "max_orders_per_minute"),
        ({"max_daily_loss": "-5"}, "max_daily_loss"),
        ({"max_daily_loss": "NaN"}, "max_daily_loss"),
        ({"max_gross_exposure": "lots"}, "max_gross_exposure"),
        ({"allowed_instruments": []}, "allowed_instruments"),
        ({"allowed_instruments": [0]}, "allowed_instruments"),
        ({"allowed_instruments": "738561,RELIANCE"}, "allowed_instruments"),
        ({"allowed_instruments": {738561}}, "allowed_instruments"),
        ({"allow_short": "maybe"}, "allow_short"),
        ({"product": "BO"}, "product"),
        ({"max_order_quantity": 5, "product": "BO"}, "product"),
    ],
)
def test_a_bad_override_names_its_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(RiskConfigError) as caught:
        stored_overrides(overrides)

    assert caught.value.field == field


def test_the_risk_manager_applies_what_the_store_keeps() -> None:
    stored = stored_overrides(
        {
            "max_order_quantity": "25",
            "max_gross_exposure": "750000",
            "allowed_instruments": [408065],
            "allow_pre_open": "on",
        }
    )

    limits = DEFAULTS.with_overrides(stored)

    assert limits.max_order_quantity == 25
    assert limits.max_gross_exposure == Decimal("750000")
    assert limits.allowed_instruments == frozenset({408065})
    assert limits.allow_pre_open is True
    assert limits.max_daily_loss == DEFAULTS.max_daily_loss
