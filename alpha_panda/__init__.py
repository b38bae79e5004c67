"""Alpha Panda: a real-time algorithmic trading pipeline on a unified log.

``faust -A alpha_panda worker`` asks this package for ``app``; it is built on first access
for the stage named by ``ALPHA_PANDA_STAGE`` (importing the package does no I/O).
"""

from __future__ import annotations

from typing import Any

__all__ = ["app"]
_app: Any = None


def __getattr__(name: str) -> Any:
    global _app
    if name != "app":
        raise AttributeError(f"module 'alpha_panda' has no attribute {name!r}")
    if _app is None:
        import os

        from alpha_panda.factory import create_app
        from alpha_panda.logging import configure_logging
        from alpha_panda.settings import Stage, get_settings

        settings = get_settings()
        raw_stage = os.environ.get("ALPHA_PANDA_STAGE", "")
        try:
            stage = Stage(raw_stage)
        except ValueError:
            known = ", ".join(s.value for s in Stage)
            raise RuntimeError(
                f"ALPHA_PANDA_STAGE={raw_stage!r} is not a stage; choose one of: {known}"
            ) from None
        configure_logging(settings.log_level, stage=stage.value)
        _app = create_app(settings, stage)
    return _app
