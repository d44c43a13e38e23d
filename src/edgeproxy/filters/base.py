"""The filter framework: what a filter applies to, what it reads, what it does.

A filter is two separate things (ARCHITECTURE.md, "filters"):
- *which requests* it applies to: clients by User-Agent component, resources,
  verbs (`Applies`), decided once per request;
- *what it does to one object*: keep it, drop it (None) or return a rewritten
  record (`Filter.apply`), given the object and read-only `FilterInputs` (the
  local Node, other Nodes, Services).

A filter that reads other objects declares it in `needs`; the proxy keeps
those inputs synced and re-filters cached objects when they change, so a
filter never fetches anything itself and stays a pure function of
(object, inputs) — which is what lets filtered views be memoized and tested
with plain tables.

A filter that reads Node labels may also say which label keys it reads
(`reads_node_labels`): a label change it does not read then re-filters
nothing. Without it, every label change of a node it reads counts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import msgspec

from edgeproxy.kube.objects import ObjectRecord

# Inputs a filter may declare:
#   "local-node": this node's Node object (by --node-name);
#   "nodes":      the labels of the Nodes an object names (the node of each
#                 endpoint), besides this node's: a filter reads no other
#                 node's, so a node's change re-filters only the objects whose
#                 bytes contain its name;
#   "services":   every Service (annotations, spec) by namespace/name.
Need = Literal["local-node", "nodes", "services"]


def component_of(user_agent: str) -> str:
    """The client component a User-Agent names: `kube-proxy/v1.30.1 (linux/amd64) …` → kube-proxy."""
    return user_agent.strip().split("/", 1)[0].split(" ", 1)[0].lower()


@dataclass(frozen=True, slots=True)
class Applies:
    """Which requests a filter applies to; an empty set means "any"."""

    components: frozenset[str] = frozenset()
    resources: frozenset[str] = frozenset()
    verbs: frozenset[str] = frozenset({"get", "list", "watch"})

    def matches(self, component: str, resource: str, verb: str) -> bool:
        return (
            (not self.components or component in self.components)
            and (not self.resources or resource in self.resources)
            and (not self.verbs or verb in self.verbs)
        )

    @classmethod
    def of(
        cls,
        components: Sequence[str] = (),
        resources: Sequence[str] = (),
        verbs: Sequence[str] = ("get", "list", "watch"),
    ) -> Applies:
        return cls(frozenset(components), frozenset(resources), frozenset(verbs))


class FilterInputs(Protocol):
    """What a filter may read besides the object. All reads are local and cheap."""

    @property
    def node_name(self) -> str:
        """This node's name (--node-name)."""
        ...

    @property
    def pool_label(self) -> str:
        """The Node label that names a node's pool (default apps.openyurt.io/nodepool)."""
        ...

    def node_labels(self, name: str) -> Mapping[str, str] | None:
        """A Node's labels; None when the node is not known (not in the cache)."""
        ...

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        """A Service as decoded JSON; None when it is not known."""
        ...

    def all_services(self) -> Iterable[Mapping[str, Any]]:
        """Every known Service, decoded (for filters that ask which Node labels matter)."""
        ...


class Filter(Protocol):
    name: str
    applies: Applies
    needs: frozenset[Need]

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        """The object as this client may see it: unchanged, rewritten, or None (hidden)."""
        ...


class ReadsNodeLabels(Protocol):
    """Optional for a filter that needs Nodes: which label changes can change its output."""

    def reads_node_labels(self, keys: frozenset[str], inputs: FilterInputs) -> bool:
        """Whether a change of these Node label keys (added, removed or changed) matters."""
        ...


def decode(record: ObjectRecord) -> dict[str, Any]:
    """The whole object, for filters that rewrite it (only objects they target)."""
    obj = msgspec.json.decode(record.raw)
    if not isinstance(obj, dict):
        raise ValueError(f"{record.key}: not a JSON object")
    return obj


def rewritten(record: ObjectRecord, obj: Mapping[str, Any]) -> ObjectRecord:
    """`record` with new bytes; a rewrite never changes identity, labels or RV."""
    return dataclasses.replace(record, raw=msgspec.json.encode(obj))


class Chain:
    """The filters that apply to one request, in configured order.

    Its `key` names the view: clients with the same chain share one filtered
    view of a scope (and its memoized bodies).
    """

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self.key = ",".join(f.name for f in self.filters)
        needs: set[Need] = set()
        for f in self.filters:
            needs |= f.needs
        self.needs = frozenset(needs)

    def __bool__(self) -> bool:
        return bool(self.filters)

    def __repr__(self) -> str:
        return f"Chain({self.key})"

    def reads_node_labels(self, keys: frozenset[str], inputs: FilterInputs) -> bool:
        """Whether changing these label keys of a Node can change what this chain shows."""
        for f in self.filters:
            if not f.needs & {"nodes", "local-node"}:
                continue
            check = getattr(f, "reads_node_labels", None)
            if check is None or check(keys, inputs):
                return True
        return False

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        out = record
        for f in self.filters:
            shown = f.apply(out, inputs)
            if shown is None:
                return None
            out = shown
        return out


class FilterSet:
    """Every configured filter; picks the chain for each request."""

    def __init__(self, filters: Sequence[Filter]) -> None:
        self.filters = tuple(filters)
        self._chains: dict[tuple[str, str, str], Chain] = {}

    def __bool__(self) -> bool:
        return bool(self.filters)

    def chain_for(self, component: str, resource: str, verb: str) -> Chain:
        key = (component, resource, verb)
        chain = self._chains.get(key)
        if chain is None:
            chain = Chain([f for f in self.filters if f.applies.matches(component, resource, verb)])
            if len(self._chains) < 4096:  # User-Agents are client-chosen: bound the memo
                self._chains[key] = chain
        return chain
