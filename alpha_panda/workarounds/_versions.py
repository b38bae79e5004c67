"""The version check every workaround makes when it is imported.

A workaround reaches into a library's private internals (or relies on a broker's defect);
on a version nobody checked, the reach-in may be a silent no-op or wrong. So each
workaround module names the versions it was checked against and calls
:func:`require_versions` at import: on any other installed version the import fails with
:class:`WorkaroundVersionError`, naming the workaround, the package and both versions.
``constraints.txt`` pins what ``make venv`` installs, so this fails only when someone
upgrades deliberately (``make lock``); then re-check the defect the module names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any


class WorkaroundVersionError(RuntimeError):
    """The installed library is not the version this workaround was checked against."""


def require_versions(workaround: str, checked: Mapping[str, str]) -> None:
    """Raise :class:`WorkaroundVersionError` unless every package is installed at the
    version ``checked`` names. ``workaround`` is the module's name (for the message)."""
    for package, expected in checked.items():
        try:
            installed = version(package)
        except PackageNotFoundError:
            installed = "none"
        if installed != expected:
            raise WorkaroundVersionError(
                f"{workaround} was checked against {package} {expected}, but {installed} "
                "is installed: re-check the defect (see the module docstring) and update "
                "its CHECKED_VERSIONS, or drop the workaround"
            )


def require_source(workaround: str, function: Callable[..., Any], *fragments: str) -> None:
    """Raise :class:`WorkaroundVersionError` unless ``function``'s source contains every
    fragment: the private name a workaround sets or reads is still the one used there."""
    source = inspect.getsource(function)
    missing = [f for f in fragments if f not in source]
    if missing:
        raise WorkaroundVersionError(
            f"{workaround}: {function.__module__}.{function.__qualname__} no longer "
            f"contains {', '.join(map(repr, missing))}; re-check the workaround"
        )
