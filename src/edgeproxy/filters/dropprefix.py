"""The challenge's filter rule: objects whose name starts with a prefix are not shown.

Applies to every resource, in lists, gets (404 as upstream would say it) and
watches. Written as a plain keep-or-drop function over one object record so
it moves onto the filter framework unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgeproxy.kube.objects import ObjectRecord


class DropNamePrefix:
    name = "drop-by-name-prefix"

    def __init__(self, prefixes: Sequence[str]) -> None:
        self.prefixes = tuple(prefixes)

    def __call__(self, record: ObjectRecord) -> ObjectRecord | None:
        return None if record.name.startswith(self.prefixes) else record


class KeepAll:
    """No filtering: upstream's own renderings (Table, …) can be passed through."""

    name = "keep-all"

    def __call__(self, record: ObjectRecord) -> ObjectRecord | None:
        return record


keep_all = KeepAll()
