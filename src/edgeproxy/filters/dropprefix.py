"""The challenge's filter rule: objects whose name starts with a prefix are not shown.

Applies to every client and resource by default, in lists, gets (404 as
upstream would say it) and watches (an object renamed into hiding cannot
happen — names are immutable — so a hidden object is never seen at all).
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeproxy.filters.base import Applies, FilterInputs, Need
from edgeproxy.kube.objects import ObjectRecord


class DropNamePrefix:
    name = "drop-by-name-prefix"
    needs: frozenset[Need] = frozenset()

    def __init__(self, prefixes: Sequence[str], applies: Applies | None = None) -> None:
        self.prefixes = tuple(prefixes)
        self.applies = applies or Applies()

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        return None if record.name.startswith(self.prefixes) else record
