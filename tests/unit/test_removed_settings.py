"""Removed settings are refused, naming the variable and what replaced it, never ignored:
an ignored product setting would leave a strategy trading a product nobody meant."""

from __future__ import annotations

import pytest

from alpha_panda.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("variable", "value", "replacement"),
    [
        ("ALPHA_PANDA_PAPER_PRODUCT", "delivery", "charges of their strategy's product"),
        ("ALPHA_PANDA_ZERODHA_PRODUCT", "CNC", "placed with its strategy's product"),
    ],
)
def test_a_removed_product_setting_is_an_error_saying_what_replaced_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object, variable: str, value: str, replacement: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings(data_dir=tmp_path)
    message = str(caught.value)
    assert f"{variable} was removed" in message
    assert replacement in message
    assert "ALPHA_PANDA_RISK_PRODUCT" in message


def test_the_one_product_default_is_still_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPHA_PANDA_RISK_PRODUCT", "CNC")
    assert load_settings().risk.product == "CNC"
