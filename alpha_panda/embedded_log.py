"""The embedded broker's log across stops: restore at start, save at clean stop, reset.

Used by `alpha-panda run` (which also restores after a broker crash) and `alpha-panda
broker`. The mechanics are in :mod:`alpha_panda.log_snapshot`; the identity that ties
the Redis mirror to the log in :mod:`alpha_panda.log_identity`.
"""

from __future__ import annotations

from pathlib import Path

from alpha_panda.admin import ensure_topics
from alpha_panda.log_identity import LogIdentity, ensure_identity, new_identity, read_identity
from alpha_panda.log_snapshot import restore_log, save_log
from alpha_panda.settings import Settings


def snapshot_path(settings: Settings) -> Path:
    return settings.data_dir / "broker" / "log.snapshot"


def durability(settings: Settings) -> str:
    if settings.broker.storage == "memory":
        return "embedded broker, memory only: a stop or crash of the broker loses the whole log"
    return (
        f"embedded broker, in memory, saved to {snapshot_path(settings)} at each clean stop: "
        "a crash of the broker loses every record since the last clean stop"
    )


async def open_log(settings: Settings, *, after_crash: bool = False) -> tuple[LogIdentity, str]:
    """Prepare a freshly started (empty) embedded broker; return its identity and a note."""
    bootstrap = settings.broker.bootstrap_servers
    path = snapshot_path(settings)
    note = "new log"
    if settings.broker.storage == "snapshot" and path.exists():
        saved = await restore_log(bootstrap[0], path)
        note = f"restored {saved.records} records saved at {saved.saved_at} from {path}"
    await ensure_topics(settings)
    if after_crash:
        # The mirror may hold state from records the crash lost: a new id clears it.
        reason = f"broker crashed; {note}; records written after that are lost"
        return await new_identity(bootstrap, durability=durability(settings), reason=reason), (
            f"{note} (new log id: the records since then are lost)"
        )
    return await ensure_identity(bootstrap, durability=durability(settings)), note


async def close_log(settings: Settings) -> str:
    """Save the log (clean stop); a note saying where, or why not."""
    if settings.broker.storage != "snapshot":
        return "log not saved (ALPHA_PANDA_BROKER_STORAGE=memory)"
    identity = await read_identity(settings.broker.bootstrap_servers)
    path = snapshot_path(settings)
    saved = await save_log(
        settings.broker.bootstrap_servers[0],
        path,
        identity.log_id if identity is not None else "unknown",
    )
    return f"saved {saved.records} records and {len(saved.groups)} groups' offsets to {path}"


def reset_log(settings: Settings) -> bool:
    """Delete the saved log; True if there was one."""
    path = snapshot_path(settings)
    if not path.exists():
        return False
    path.unlink()
    return True
