"""Filters over the `kubernetes` Service and Services an edge node should not serve.

- masterservice: kubelet injects KUBERNETES_SERVICE_HOST/PORT into every pod
  from Service default/kubernetes; pointing it at this proxy keeps in-cluster
  clients working while the node is cut off from the control plane.
- forwardkubesvctraffic: the same for kube-proxy, through the `kubernetes`
  EndpointSlice, so traffic to the cluster IP lands on this proxy.
- discardcloudservice: cloud LoadBalancers (and the tunnel server's internal
  Service) are unreachable from edge nodes; kube-proxy should not program them.
- nodeportisolation: a NodePort Service may be opened only on some node pools.

Every filter is total: an object of an unexpected shape is returned unchanged,
and an object that is not a target is returned without being decoded.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from edgeproxy.filters.base import Applies, FilterInputs, Need, decode, rewritten
from edgeproxy.kube.objects import ObjectRecord

DISCARD_ANNOTATION = "svc.openyurt.io/discard"
NODEPORT_LISTEN_ANNOTATION = "nodeport.openyurt.io/listen"
TUNNEL_SERVER_INTERNAL = ("kube-system", "x-tunnel-server-internal-svc")


def _load(record: ObjectRecord) -> dict[str, Any] | None:
    """The decoded object, or None when its bytes are not a JSON object."""
    try:
        return decode(record)
    except ValueError:  # msgspec.DecodeError is a ValueError
        return None


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, Mapping) else None
    return annotations if isinstance(annotations, Mapping) else {}


def _spec_type(record: ObjectRecord, obj: Mapping[str, Any] | None = None) -> str | None:
    """spec.type, from the record's field-selector values when it has them.

    Service records carry `spec.type` as a field label (resources.py), so most
    Services are ruled out without decoding; `obj` is read otherwise.
    """
    if obj is None:
        value = record.fields.get("spec.type")
        return value if isinstance(value, str) else None
    spec = obj.get("spec")
    value = spec.get("type") if isinstance(spec, Mapping) else None
    return value if isinstance(value, str) else None


def _list_or_none(value: Any) -> bool:
    """Whether an optional list field has a shape a rewrite can work on."""
    return value is None or isinstance(value, list)


def _with_https_port(ports: list[Any], port: int) -> list[Any]:
    """`ports` with the first entry named exactly "https" set to `port`."""
    out = list(ports)
    for i, entry in enumerate(out):
        if isinstance(entry, Mapping) and entry.get("name") == "https":
            out[i] = {**entry, "port": port}
            break
    return out


class MasterService:
    """Point Service default/kubernetes at this proxy for kubelet.

    spec.clusterIP becomes `host` and the first port named "https" becomes
    `port` (targetPort and nodePort are left alone: they describe the
    apiservers, not the proxy). Deviation from OpenYurt: a non-empty
    spec.clusterIPs becomes [host] too. OpenYurt leaves it, so the object
    says two different things (clusterIPs[0] must equal clusterIP), and a
    client reading clusterIPs would still go around the proxy.
    """

    name = "masterservice"
    needs: frozenset[Need] = frozenset()

    def __init__(self, host: str, port: int, applies: Applies | None = None) -> None:
        self.host = host
        self.port = port
        self.applies = applies or Applies.of(("kubelet",), ("services",))

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        if record.namespace != "default" or record.name != "kubernetes":
            return record
        obj = _load(record)
        spec = obj.get("spec") if obj is not None else None
        if obj is None or not isinstance(spec, Mapping):
            return record
        cluster_ips, ports = spec.get("clusterIPs"), spec.get("ports")
        if not _list_or_none(cluster_ips) or not _list_or_none(ports):
            return record
        new_spec = {**spec, "clusterIP": self.host}
        if cluster_ips:
            new_spec["clusterIPs"] = [self.host]
        if ports is not None:
            new_spec["ports"] = _with_https_port(ports, self.port)
        if new_spec == spec:
            return record
        return rewritten(record, {**obj, "spec": new_spec})


class DiscardCloudService:
    """Hide cloud LoadBalancer Services marked for discarding, and the tunnel server's.

    Only `svc.openyurt.io/discard: "true"` exactly counts: annotations are
    strings, and a looser reading ("True", "1") would hide Services their
    owners did not mark. x-tunnel-server-internal-svc is always hidden: it
    addresses the tunnel server from the cloud side only.
    """

    name = "discardcloudservice"
    needs: frozenset[Need] = frozenset()

    def __init__(self, applies: Applies | None = None) -> None:
        self.applies = applies or Applies.of(("kube-proxy",), ("services",))

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        if (record.namespace, record.name) == TUNNEL_SERVER_INTERNAL:
            return None
        if _spec_type(record) not in (None, "LoadBalancer"):
            return record
        obj = _load(record)
        if obj is None or _spec_type(record, obj) != "LoadBalancer":
            return record
        return None if _annotations(obj).get(DISCARD_ANNOTATION) == "true" else record


def listen_pools(value: str) -> frozenset[str]:
    """The tokens of a `nodeport.openyurt.io/listen` value that count.

    Comma-separated, whitespace around each token ignored. "-P" disables pool
    P, "P" enables it, "*" enables every pool not disabled. When a pool is
    named more than once the first mention wins ("foo,-foo" enables foo,
    "-foo,foo" disables it); empty tokens are skipped.
    """
    seen: dict[str, str] = {}
    for raw in value.split(","):
        token = raw.strip()
        key = token.removeprefix("-")
        if key and key not in seen:
            seen[key] = token
    return frozenset(seen.values())


def listens_on(tokens: frozenset[str], pool: str) -> bool:
    """Whether a NodePort with these listen tokens is opened on nodes of `pool`."""
    if pool in tokens:
        return True
    if f"-{pool}" in tokens:
        return False
    return "*" in tokens


class NodePortIsolation:
    """Hide NodePort/LoadBalancer Services not meant to listen on this node's pool.

    Only Services carrying `nodeport.openyurt.io/listen` are isolated; an
    empty value counts as present and so listens nowhere. A node that is not
    known or not in a pool sees every Service, as in plain Kubernetes: with no
    pool there is nothing to isolate against. Isolated Services are hidden
    whole, never rewritten.
    """

    name = "nodeportisolation"
    needs: frozenset[Need] = frozenset(("local-node",))

    def __init__(self, applies: Applies | None = None) -> None:
        self.applies = applies or Applies.of(("kube-proxy",), ("services",))

    def reads_node_labels(self, keys: frozenset[str], inputs: FilterInputs) -> bool:
        return inputs.pool_label in keys

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        if _spec_type(record) not in (None, "NodePort", "LoadBalancer"):
            return record
        labels = inputs.node_labels(inputs.node_name)
        pool = labels.get(inputs.pool_label) if labels is not None else None
        if pool is None:
            return record
        obj = _load(record)
        if obj is None or _spec_type(record, obj) not in ("NodePort", "LoadBalancer"):
            return record
        value = _annotations(obj).get(NODEPORT_LISTEN_ANNOTATION)
        if not isinstance(value, str):
            return record
        return record if listens_on(listen_pools(value), pool) else None


class ForwardKubeSvcTraffic:
    """Point the `kubernetes` EndpointSlice at this proxy for kube-proxy.

    The slice's endpoints become the single ready address `host`, and its
    first port named "https" becomes `port`. A slice of the other address
    family is left alone: a dual-stack cluster has one slice per family, and
    an IPv4 slice cannot hold an IPv6 address.
    """

    name = "forwardkubesvctraffic"
    needs: frozenset[Need] = frozenset()

    def __init__(self, host: str, port: int, applies: Applies | None = None) -> None:
        self.host = host
        self.port = port
        self.address_type = "IPv6" if _is_ipv6(host) else "IPv4"
        self.applies = applies or Applies.of(("kube-proxy",), ("endpointslices",))

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        if record.namespace != "default" or record.name != "kubernetes":
            return record
        obj = _load(record)
        if obj is None or obj.get("addressType") != self.address_type:
            return record
        ports = obj.get("ports")
        if not _list_or_none(ports):
            return record
        new = {**obj, "endpoints": [{"addresses": [self.host], "conditions": {"ready": True}}]}
        if ports is not None:
            new["ports"] = _with_https_port(ports, self.port)
        if new == obj:
            return record
        return rewritten(record, new)


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False
