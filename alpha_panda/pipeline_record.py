"""Which configuration database the running pipeline uses, written where every CLI looks.

Every stage that reads the configuration writes ``<data_dir>/pipeline-database.json`` on
its first successful load: the database URL (password masked), the stage and its pid.
The store commands compare it with their own URL before they use a database that has no
schema yet (or a SQLite file that does not exist): meeting a new, empty database while
the pipeline uses another one is the mistake that once let ``alpha-panda halt --all``
report success on a second database while the pipeline kept trading
(docs/CONFIGURATION.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from alpha_panda.settings import Settings

RECORD_FILE = "pipeline-database.json"


@dataclass(frozen=True)
class PipelineRecord:
    url: str  # password masked
    stage: str
    pid: int
    written_at: str

    @property
    def running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def describe(self) -> str:
        state = "running" if self.running else "not running now"
        return f"{self.url} (recorded by {self.stage}, pid {self.pid}, {state})"


def masked_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def record_path(settings: Settings) -> Path:
    return settings.data_dir / RECORD_FILE


def write_record(settings: Settings, stage: str) -> None:
    path = record_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "url": masked_url(settings.database.url),
        "stage": stage,
        "pid": os.getpid(),
        "written_at": datetime.now(UTC).isoformat(),
    }
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(body) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader never sees half a file


def read_record(settings: Settings) -> PipelineRecord | None:
    try:
        raw = json.loads(record_path(settings).read_text(encoding="utf-8"))
        return PipelineRecord(
            url=str(raw["url"]),
            stage=str(raw["stage"]),
            pid=int(raw["pid"]),
            written_at=str(raw["written_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other backends and in-memory databases)."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None  # create_engine names the bad URL
    if parsed.get_backend_name() != "sqlite":
        return None
    database = parsed.database or ""
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser()
