"""Filtered views: what one filter chain lets its clients see of a scope.

A scope's store holds upstream's objects as they are. A client whose
requests a filter chain applies to is served from a `FilteredView` of that
store: a ScopeStore of its own (objects, RV, history, watchers, memoized
bodies) that follows the base store event by event through the chain. So a
filtered client gets real list/watch semantics (RVs, selectors, paging,
resume) and the filters run once per change, not once per request.

When a filter's inputs change (a node label, a Service annotation), the
affected objects are re-filtered and the difference goes out as
ADDED/MODIFIED/DELETED events. Those events need a resourceVersion no earlier
event of the view has: the input's own revision when it is newer than the
view (an etcd revision of a Node or Service write never is an event of this
resource), else the view's RV + 1. The objects they carry are stamped with
that RV, so a client's RV only moves forward and it can resume from it. One
re-filter is one batch at one RV; a client resuming from exactly that RV gets
a batch of several events again (at least once: it may have missed part of it).
Once a batch of several events is out, the view's RV moves one past it (the
batch is sealed): a list taken after the batch says RV + 1, so a client that
lists and then watches from the list's RV is not sent the batch again, and
the periodic bookmarks move watchers past it too. A lone event needs no seal:
whoever saw its RV saw all of it.

The view's RV may thus run ahead of the base store's. A later base event
at or below it is stamped with the view's RV + 1 (it is still delivered, in
order). Objects of a view may therefore carry an RV upstream did not give
them; filtered clients are readers (kube-proxy, coredns, kubelet), and an
update sent with such an RV is refused by upstream with a Conflict, as for
any stale read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from edgeproxy.cache.broadcast import Event
from edgeproxy.cache.store import ScopeStore, restamped
from edgeproxy.kube.objects import ObjectRecord

log = logging.getLogger(__name__)

Apply = Callable[[ObjectRecord], ObjectRecord | None]


class FilteredView(ScopeStore):
    """A ScopeStore fed by `base` through `apply` (a filter chain with its inputs)."""

    def __init__(self, base: ScopeStore, key: str, apply: Apply) -> None:
        super().__init__(base.scope, base.rt, base.history_limit)
        self.base = base
        self.view_key = key
        self._apply_chain = apply
        # Objects stamped with an RV other than their own: key -> filtered bytes
        # before stamping, so a re-filter compares like with like.
        self._unstamped: dict[str, bytes] = {}
        self.refilters = 0
        base.views[key] = self
        if base.synced:
            self.rebuild()

    def filtered(self, record: ObjectRecord) -> ObjectRecord | None:
        try:
            return self._apply_chain(record)
        except Exception:  # a filter bug must not take the scope down
            log.exception("filter chain %s failed on %s; hiding it", self.view_key, record.key)
            return None

    def touch(self) -> None:
        super().touch()
        self.base.touch()

    # -- following the base store ------------------------------------------------

    def rebuild(self) -> None:
        """Start over from the base store's state (journal load, first list)."""
        self.typed_items = self.base.typed_items
        self._unstamped.clear()
        records = {}
        for key, record in self.base.objects.items():
            out = self.filtered(record)
            if out is not None:
                records[key] = out
        self.load(records, max(self.base.rv, self.rv))

    def on_base_event(self, event: Event) -> None:
        if not self.synced:
            return
        key = event.obj.key
        new = None if event.type == "DELETED" else self.filtered(event.obj)
        old = self.objects.get(key)
        if event.type == "DELETED" and old is not None:
            # The last state, as this chain shows it (or as the client last saw it).
            last = self.filtered(event.obj) or old
            self._emit_delete(key, last, old, self._next_rv(event.rv))
        elif new is not None:
            self._emit_upsert(key, new, old, self._next_rv(event.rv))
        elif old is not None:  # no longer shown: gone, for this client
            self._emit_delete(key, old, old, self._next_rv(event.rv))
        else:
            self.on_base_rv(event.rv)

    def on_base_rv(self, rv: int) -> None:
        if rv > self.rv:
            self.rv = rv
            self._persist({}, [], rv)

    def _next_rv(self, rv: int) -> int:
        return rv if rv > self.rv else self.rv + 1

    def _emit_upsert(
        self, key: str, new: ObjectRecord, old: ObjectRecord | None, at: int, batch: bool = False
    ) -> None:
        self._unstamped.pop(key, None)
        if new.rv != at:
            self._unstamped[key] = new.raw
            new = restamped(new, at)
        self._apply("MODIFIED" if old is not None else "ADDED", new, old, at, batch=batch)
        self.rv = max(self.rv, at)
        self._persist({}, [], at)

    def _emit_delete(
        self, key: str, last: ObjectRecord, old: ObjectRecord, at: int, batch: bool = False
    ) -> None:
        self._unstamped.pop(key, None)
        self._apply("DELETED", restamped(last, at) if last.rv != at else last, old, at, batch=batch)
        self.rv = max(self.rv, at)
        self._persist({}, [], at)

    # -- inputs changed ------------------------------------------------------------

    def refilter(
        self, keys: Callable[[ObjectRecord], bool] | None = None, input_rv: int = 0
    ) -> int:
        """Re-run the chain over base objects (those `keys` selects); emit the difference.

        Returns how many objects changed for this view's clients.
        """
        if not self.synced:
            return 0
        changes: list[tuple[str, ObjectRecord | None, ObjectRecord | None]] = []
        for key in list(self.base.objects.keys() | self.objects.keys()):
            record = self.base.objects.get(key)
            if keys is not None and not keys(record or self.objects[key]):
                continue
            new = self.filtered(record) if record is not None else None
            old = self.objects.get(key)
            if new is None and old is None:
                continue
            if new is not None and old is not None and new.raw == self._unstamped.get(key, old.raw):
                continue
            changes.append((key, new, old))
        if not changes:
            return 0
        at = max(input_rv, self.rv + 1)
        changes.sort(key=lambda c: c[0])
        # A lone event is an ordinary one: whoever saw its RV saw all of it.
        batch = len(changes) > 1
        for key, new, old in changes:
            if new is not None:
                self._emit_upsert(key, new, old, at, batch=batch)
            elif old is not None:
                self._emit_delete(key, old, old, at, batch=batch)
        if batch:
            self.on_base_rv(at + 1)  # sealed: RV at + 1 has seen every event of the batch
        self.refilters += 1
        return len(changes)
