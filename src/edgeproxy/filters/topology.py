"""servicetopology: show a node's proxies only the endpoints its Service's topology allows.

kube-proxy, CoreDNS and ingress controllers on an edge node should route to
endpoints near the node (same node, same pool) instead of across a slow or
cut WAN link. The Service says how "near" is measured, in one of three
flavours; the first one present on the Service wins:

1. OpenYurt: annotation `openyurt.io/topologyKeys`.
   - `kubernetes.io/hostname` → node scope: endpoints on this node.
   - `openyurt.io/nodepool` or `kubernetes.io/zone` → pool scope: endpoints
     on nodes whose pool label equals this node's. OpenYurt treats the zone
     value as a synonym for the pool, and so do we.
   - any other value → the object is left unchanged.
   Unknown nodes: if the local node is unknown or has no pool label, pool
   scope falls back to node scope (as OpenYurt does), which needs no Node
   object at all. An endpoint whose node is unknown (or has no pool label)
   cannot be shown to share the pool and is dropped.

2. SuperEdge: annotation `topologyKeys`, a JSON list of Node label keys. An
   endpoint is kept when, for any key, its node and the local node both have
   the label with equal values. Fail-closed: an unknown local node removes
   every endpoint, an unknown endpoint node removes that endpoint. A value
   that is not a non-empty JSON list of strings counts as no annotation (and
   flavour 3 is tried), like Kubernetes' own "empty topologyKeys = none".

3. The removed upstream field `spec.topologyKeys` (Kubernetes 1.17-1.21,
   KEP-536): an ordered preference list; the first key that keeps at least
   one endpoint wins, and if none does the object has no endpoints. `*`
   keeps every endpoint. A key matches when the endpoint's node and the local
   node have equal values for it; the local node must have the label.
   Unknown nodes: `kubernetes.io/hostname` compares node names directly, so
   it works with no Node objects at all; for `topology.kubernetes.io/zone`
   an EndpointSlice endpoint whose node is unknown is judged by its own zone
   (v1 `zone`, v1beta1 `topology`); any other key drops an endpoint whose
   node is unknown, and keeps nothing when the local node is unknown.

In every flavour except `*`, an endpoint with no node name does not match.

The object itself is never hidden: a client that is allowed no endpoints
sees an object with none (slices: `endpoints: []`; Endpoints: subsets left
without addresses are dropped), which is what kube-proxy needs to stop
routing. Malformed objects and Services are passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from edgeproxy.filters.base import Applies, FilterInputs, Need, decode, rewritten
from edgeproxy.kube.objects import ObjectRecord

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
OPENYURT_ANNOTATION = "openyurt.io/topologyKeys"
SUPEREDGE_ANNOTATION = "topologyKeys"
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
_POOL_SCOPES = frozenset({"openyurt.io/nodepool", "kubernetes.io/zone"})


def service_of(record: ObjectRecord, resource: str) -> tuple[str, str] | None:
    """(namespace, Service name) an Endpoints or EndpointSlice record belongs to.

    Reads record fields only, so the proxy can find which cached objects to
    re-filter when a Service changes without decoding any of them.
    """
    if resource == "endpoints":
        return (record.namespace, record.name)
    if resource == "endpointslices":
        name = record.labels.get(SERVICE_NAME_LABEL)
        return (record.namespace, name) if name else None
    return None


@dataclass(frozen=True, slots=True)
class _Endpoint:
    """What the rules read of one endpoint."""

    node: str | None
    zone: str | None = None  # the slice's own zone, used only by flavour 3


# A rule maps the endpoints of one object to which of them to keep.
_Rule = Callable[[Sequence[_Endpoint], FilterInputs], list[bool]]


def _node_scope(eps: Sequence[_Endpoint], inputs: FilterInputs) -> list[bool]:
    return [ep.node is not None and ep.node == inputs.node_name for ep in eps]


def _pool_scope(eps: Sequence[_Endpoint], inputs: FilterInputs) -> list[bool]:
    local = inputs.node_labels(inputs.node_name)
    if local is None or inputs.pool_label not in local:
        return _node_scope(eps, inputs)  # OpenYurt: no pool known, stay on this node
    pool = local[inputs.pool_label]
    keep = []
    for ep in eps:
        labels = inputs.node_labels(ep.node) if ep.node is not None else None
        keep.append(labels is not None and labels.get(inputs.pool_label) == pool)
    return keep


def _any_label(keys: Sequence[str]) -> _Rule:
    def rule(eps: Sequence[_Endpoint], inputs: FilterInputs) -> list[bool]:
        local = inputs.node_labels(inputs.node_name)
        if local is None:
            return [False] * len(eps)  # fail closed
        keep = []
        for ep in eps:
            labels = inputs.node_labels(ep.node) if ep.node is not None else None
            keep.append(
                labels is not None
                and any(k in local and k in labels and local[k] == labels[k] for k in keys)
            )
        return keep

    return rule


def _key_matches(
    key: str, ep: _Endpoint, local: Mapping[str, str] | None, inputs: FilterInputs
) -> bool:
    if ep.node is None:
        return False
    if key == HOSTNAME:
        return ep.node == inputs.node_name
    if local is None or key not in local:
        return False
    labels = inputs.node_labels(ep.node)
    if labels is not None:
        return labels.get(key) == local[key]
    return key == ZONE and ep.zone is not None and ep.zone == local[key]


def _preference(keys: Sequence[str]) -> _Rule:
    def rule(eps: Sequence[_Endpoint], inputs: FilterInputs) -> list[bool]:
        local = inputs.node_labels(inputs.node_name)
        for key in keys:
            if key == "*":
                return [True] * len(eps)
            keep = [_key_matches(key, ep, local, inputs) for ep in eps]
            if any(keep):
                return keep
        return [False] * len(eps)

    return rule


def _str_list(value: Any) -> list[str] | None:
    """A non-empty list of strings, or None."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value
    return None


_Flavour = Literal["openyurt", "superedge", "upstream"]


def _topology_of(service: Mapping[str, Any]) -> tuple[_Flavour, Any] | None:
    """Which flavour a Service asks for, with its value; the first one present wins."""
    meta = service.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    if not isinstance(annotations, Mapping):
        annotations = {}
    if OPENYURT_ANNOTATION in annotations:
        return "openyurt", annotations[OPENYURT_ANNOTATION]  # even a value we do not know
    superedge = annotations.get(SUPEREDGE_ANNOTATION)
    if isinstance(superedge, str):
        try:
            keys = _str_list(msgspec.json.decode(superedge))
        except msgspec.DecodeError:
            keys = None
        if keys is not None:
            return "superedge", keys
    spec = service.get("spec")
    keys = _str_list(spec.get("topologyKeys")) if isinstance(spec, Mapping) else None
    return ("upstream", keys) if keys is not None else None


def _rule_of(service: Mapping[str, Any]) -> _Rule | None:
    """The topology rule a Service asks for; None when it asks for none."""
    match _topology_of(service):
        case ("openyurt", value):
            if value == HOSTNAME:
                return _node_scope
            return _pool_scope if value in _POOL_SCOPES else None
        case ("superedge", keys):
            return _any_label(keys)
        case ("upstream", keys):
            return _preference(keys)
    return None


def node_label_keys(service: Mapping[str, Any], pool_label: str) -> frozenset[str]:
    """The Node label keys a Service's topology compares (empty when it has none).

    OpenYurt's pool scope reads the pool label; its node scope and
    `kubernetes.io/hostname` compare node names, not labels.
    """
    match _topology_of(service):
        case ("openyurt", value):
            return frozenset((pool_label,)) if value in _POOL_SCOPES else frozenset()
        case ("superedge", keys):
            return frozenset(keys)
        case ("upstream", keys):
            return frozenset(keys) - {"*", HOSTNAME}
    return frozenset()


def _slice_endpoint(entry: Mapping[str, Any]) -> _Endpoint:
    topology = entry.get("topology")
    if not isinstance(topology, Mapping):
        topology = {}
    node = entry.get("nodeName")
    if not isinstance(node, str):
        node = topology.get(HOSTNAME)  # v1beta1
    zone = entry.get("zone")
    if not isinstance(zone, str):
        zone = topology.get(ZONE)  # v1beta1
    return _Endpoint(
        node if isinstance(node, str) and node else None,
        zone if isinstance(zone, str) else None,
    )


def _filter_slice(obj: dict[str, Any], rule: _Rule, inputs: FilterInputs) -> dict[str, Any] | None:
    """The slice with only the kept endpoints; None when unchanged or malformed."""
    entries = obj.get("endpoints")
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        return None
    keep = rule([_slice_endpoint(e) for e in entries], inputs)
    if all(keep):
        return None
    return {**obj, "endpoints": [e for e, k in zip(entries, keep, strict=True) if k]}


_ADDRESS_KEYS = ("addresses", "notReadyAddresses")


def _filter_endpoints(
    obj: dict[str, Any], rule: _Rule, inputs: FilterInputs
) -> dict[str, Any] | None:
    """The Endpoints with only the kept addresses; None when unchanged or malformed."""
    subsets = obj.get("subsets")
    if not isinstance(subsets, list):
        return None
    flat: list[_Endpoint] = []  # every address of every subset, in order
    for subset in subsets:
        if not isinstance(subset, Mapping):
            return None
        for key in _ADDRESS_KEYS:
            addresses = subset.get(key) or []  # absent or null: none
            if not isinstance(addresses, list):
                return None
            for address in addresses:
                if not isinstance(address, Mapping):
                    return None
                node = address.get("nodeName")
                flat.append(_Endpoint(node if isinstance(node, str) and node else None))
    flags = rule(flat, inputs)
    if all(flags):
        return None
    keep = iter(flags)
    out = []
    for subset in subsets:
        new = dict(subset)
        for key in _ADDRESS_KEYS:
            if key in subset:
                kept = [a for a in subset[key] or () if next(keep)]
                if kept:
                    new[key] = kept
                else:
                    del new[key]  # omitempty, as the apiserver writes it
        if any(new.get(key) for key in _ADDRESS_KEYS):
            out.append(new)
    return {**obj, "subsets": out}


class ServiceTopology:
    """Keep the endpoints the Service's topology allows for this node."""

    name = "servicetopology"
    needs: frozenset[Need] = frozenset(("local-node", "nodes", "services"))

    def __init__(self, applies: Applies | None = None) -> None:
        self.applies = applies or Applies.of(
            ("kube-proxy", "coredns", "nginx-ingress-controller"),
            ("endpoints", "endpointslices"),
        )

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        # Which Service decides is known from record fields alone: a slice
        # names its Service in a label, Endpoints share its name. The record
        # does not say which kind it is, so both Services are asked (two local
        # lookups) and the body is decoded only when one of them has topology;
        # its shape then says which answer counts.
        slice_rule = self._rule(service_of(record, "endpointslices"), inputs)
        endpoints_rule = self._rule(service_of(record, "endpoints"), inputs)
        if slice_rule is None and endpoints_rule is None:
            return record
        try:
            obj = decode(record)
        except ValueError:
            return record
        new = None
        if "endpoints" in obj or "addressType" in obj:
            if slice_rule is not None:  # a slice without the label has no Service
                new = _filter_slice(obj, slice_rule, inputs)
        elif "subsets" in obj and endpoints_rule is not None:
            new = _filter_endpoints(obj, endpoints_rule, inputs)
        return record if new is None else rewritten(record, new)

    def reads_node_labels(self, keys: frozenset[str], inputs: FilterInputs) -> bool:
        """Only the keys some Service's topology compares (a node's pool, usually)."""
        if inputs.pool_label in keys:
            return True
        return any(keys & node_label_keys(svc, inputs.pool_label) for svc in inputs.all_services())

    @staticmethod
    def _rule(key: tuple[str, str] | None, inputs: FilterInputs) -> _Rule | None:
        if key is None:
            return None
        service = inputs.service(*key)
        return _rule_of(service) if isinstance(service, Mapping) else None
