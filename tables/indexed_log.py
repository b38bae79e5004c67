"""A bounded, newest-last log (a plain tuple) with an index by key beside it.

The risk state's remembered decisions and a portfolio's recent fill ids are both such
logs: up to a few hundred entries, one appended per signal or fill, and asked on every
one whether a key is already in it. A scan costs O(bound) per question, and so would
copying a dict index into each new log; here successive logs share one index instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _KeyIndex(Generic[T]):
    """key -> (sequence number, item), shared by successive IndexedLogs.

    Appending to the newest log adds one entry here instead of copying the index; each
    log answers only for the sequence numbers it holds, so an older log is not misled by
    entries added after it. Any other append (to an older log, of a key the index already
    holds, or once the index has grown to a few times the bound) starts a fresh index:
    rare, and O(bound) when it happens, so the cost per append stays constant.
    """

    __slots__ = ("entries", "tip")

    def __init__(self, log: tuple[T, ...], key: Callable[[T], str]) -> None:
        # Oldest first, so a repeated key keeps its newest item, as a scan from the end finds.
        self.entries = {key(item): (seq, item) for seq, item in enumerate(log)}
        self.tip = len(log) - 1  # the sequence number of the newest item indexed


class IndexedLog(tuple[T, ...]):
    """A tuple of the last ``bound`` items, oldest first, with :meth:`find` by key.

    A plain tuple to everything else (equality, JSON, pydantic's serializer): a stored
    shape does not change. Built only by :meth:`appended`; a log read from JSON is a
    plain tuple, which callers scan until its first append. Never changed after
    construction (the shared index only gains entries past its ``_last``).
    """

    _index: _KeyIndex[T]
    _last: int  # the sequence number of this log's newest item

    @classmethod
    def appended(
        cls, log: tuple[T, ...], item: T, key: Callable[[T], str], bound: int
    ) -> IndexedLog[T]:
        """``log`` with ``item`` appended, its oldest dropped past ``bound``."""
        # Slice before appending: these logs are full (a few hundred items) nearly always.
        kept = log[len(log) - bound + 1 :] if len(log) >= bound else log
        new: IndexedLog[T] = cls((*kept, item))
        index = log._index if isinstance(log, IndexedLog) else None
        item_key = key(item)
        if (
            index is not None
            and isinstance(log, IndexedLog)
            and index.tip == log._last
            and item_key not in index.entries
            and len(index.entries) < 4 * bound
        ):
            index.tip += 1
            index.entries[item_key] = (index.tip, item)
        else:
            index = _KeyIndex(new, key)
        new._index = index
        new._last = index.tip
        return new

    def find(self, item_key: str) -> T | None:
        """The newest item of this log with ``item_key``, or None."""
        entry = self._index.entries.get(item_key)
        if entry is None:
            return None
        seq, item = entry
        # Indexed by a later log (after this one), or fallen off this log's front: not here.
        return item if self._last - len(self) < seq <= self._last else None
