"""A Faust table seen through its spec (tables/specs.py): values of the spec's type in,
values of the spec's type out, coded by the spec's encode/decode and nowhere else.

:class:`TypedTable` is the write-through form: Faust sends a changelog record per write,
so its memory holds the encoded JSON (Faust serialises what memory holds) and ``get``
decodes, as every handler did by hand before. The write-behind tables
(alpha_panda/write_behind.py) hold the value itself and encode once per commit.

Readers that serve JSON (the Redis mirror, the read API's fallback to the tables) read
:meth:`TypedTable.as_json`: the changelog's form of each value, without a decode and
re-encode round trip.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Generic, TypeVar

import faust

from tables.specs import Json, TableSpec

V = TypeVar("V")


class TypedTable(Generic[V]):
    def __init__(self, spec: TableSpec[V], table: faust.Table) -> None:
        self.spec = spec
        self.table = table  # the Faust table (recovery hooks, the app's table registry)
        self._encode = spec.encode
        self._decode = spec.decode

    @property
    def name(self) -> str:
        return self.spec.name

    def get(self, key: str) -> V | None:
        raw = self.table.get(key)
        return None if raw is None else self._decode(raw)

    def __getitem__(self, key: str) -> V:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def __contains__(self, key: str) -> bool:
        return self.table.get(key) is not None

    def __setitem__(self, key: str, value: V) -> None:
        self.table[key] = self._encode(value)

    def __delitem__(self, key: str) -> None:
        del self.table[key]

    def keys(self) -> Iterator[str]:
        return iter(self.table.keys())

    def items(self) -> Iterator[tuple[str, V]]:
        decode = self._decode
        return ((k, decode(raw)) for k, raw in list(self.table.items()) if raw is not None)

    def get_json(self, key: str) -> Json | None:
        """The value as the changelog holds it (None when there is none)."""
        return self.table.get(key)

    def as_json(self) -> JsonView:
        return JsonView(self)


class JsonView:
    """A table's values in their changelog (and Redis mirror) form: ``get`` and ``items``,
    what the read API needs of a table (web/read_model.py ``TableLike``)."""

    def __init__(self, typed: TypedTable[Any]) -> None:
        self._typed = typed

    def get(self, key: str, /) -> Json | None:
        return self._typed.get_json(key)

    def items(self) -> Iterator[tuple[str, Json]]:
        get = self._typed.get_json
        return ((k, v) for k in list(self._typed.keys()) if (v := get(k)) is not None)
