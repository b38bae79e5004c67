"""docs/ARCHITECTURE.md's table of the stages, written from their specs (alpha_panda/stages.py).

The table sits between two marker comments in the doc; this script rewrites what is between
them, so the doc says what the specs declare. tests/unit/test_stages.py fails when the
doc and the specs differ (then run this script, or `make docs`).

    .venv/bin/python scripts/stage_table.py [--check]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alpha_panda.stages import STAGES, StageSpec  # noqa: E402

DOC = ROOT / "docs" / "ARCHITECTURE.md"
BEGIN = "<!-- stage table: generated from alpha_panda/stages.py by `make docs` -->"
END = "<!-- end of stage table -->"
HEADER = "| stage | consumer group | agent: consumes | produces | tables |\n|---|---|---|---|---|\n"


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _row(spec: StageSpec) -> str:
    agents = "; ".join(
        f"`{agent.name}`: {_names([t.name for t in agent.inputs])}" for agent in spec.agents
    )
    cells = [
        spec.stage.value,
        f"`{spec.consumer_group}`",
        agents or "none (a producer task)",
        _names([t.name for t in spec.outputs]) or "none (the read API and the Redis mirror)",
        _names([t.name for t in spec.tables]) or "none",
    ]
    return "| " + " | ".join(cells) + " |\n"


def render() -> str:
    """The table, with its markers, as the doc must hold it."""
    rows = "".join(_row(spec) for spec in STAGES.values())
    return f"{BEGIN}\n{HEADER}{rows}{END}\n"


def current(doc: str) -> str:
    """The doc's table, with its markers; ValueError if a marker is missing."""
    start = doc.index(BEGIN)
    end = doc.index(END, start) + len(END) + 1
    return doc[start:end]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the doc differs, writing nothing"
    )
    args = parser.parse_args()
    doc = DOC.read_text()
    table = current(doc)
    if table == render():
        return 0
    if args.check:
        print(f"{DOC.relative_to(ROOT)}: the stage table differs from alpha_panda/stages.py")
        return 1
    DOC.write_text(doc.replace(table, render()))
    print(f"{DOC.relative_to(ROOT)}: stage table rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
