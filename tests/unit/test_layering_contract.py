"""The layering contract (pyproject.toml, run by `make lint`) covers every pure module.

import-linter checks the modules it is given; a new module in models/ would escape the
contract unless it is listed. models/db.py (the SQLAlchemy tables) is the one exception.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMPURE_MODELS = {"models.db"}


def _contract() -> dict[str, list[str]]:
    """The pure-logic contract (the other keeps the runtime from importing web/)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("Pure domain logic")
    ]
    return contract


def test_every_pure_models_module_is_in_the_contract() -> None:
    modules = {
        f"models.{path.stem}" for path in (ROOT / "models").glob("*.py") if path.stem != "__init__"
    }

    assert modules - IMPURE_MODELS <= set(_contract()["source_modules"])
