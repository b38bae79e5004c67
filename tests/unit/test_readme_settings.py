"""README's settings table lists every setting, with its real default and description."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from alpha_panda.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"
ROW = re.compile(r"^\| `(ALPHA_PANDA_[A-Z0-9_]+)` \| `([^`]*)` \| (.*) \|$")


def _shown(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return str(value)


def documented_settings() -> dict[str, tuple[str, str]]:
    """ALPHA_PANDA_* name -> (default, description), from the settings themselves."""
    out: dict[str, tuple[str, str]] = {}
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            for sub, subfield in type(default).model_fields.items():
                env = f"ALPHA_PANDA_{name}_{sub}".upper()
                out[env] = (_shown(getattr(default, sub)), subfield.description or "")
        else:
            out[f"ALPHA_PANDA_{name}".upper()] = (_shown(default), field.description or "")
    return out


def readme_rows() -> dict[str, tuple[str, str]]:
    rows = {}
    for line in README.read_text().splitlines():
        match = ROW.match(line)
        if match:
            rows[match[1]] = (match[2], match[3])
    return rows


def test_every_setting_is_in_the_readme_with_its_default_and_description() -> None:
    expected = documented_settings()
    rows = readme_rows()
    assert sorted(set(expected) - set(rows)) == [], "settings missing from README.md"
    assert sorted(set(rows) - set(expected)) == [], "README.md lists settings that do not exist"
    for env, (default, description) in expected.items():
        assert rows[env] == (default, description), env
