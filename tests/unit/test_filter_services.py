"""masterservice, discardcloudservice, nodeportisolation, forwardkubesvctraffic as tables."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from edgeproxy.filters.base import Applies, Filter
from edgeproxy.filters.services import (
    DiscardCloudService,
    ForwardKubeSvcTraffic,
    MasterService,
    NodePortIsolation,
    listen_pools,
    listens_on,
)
from edgeproxy.kube.objects import NO_FIELDS, FieldRow, ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType

POOL = "apps.openyurt.io/nodepool"
REGISTRY = ResourceRegistry()


def _rt(group: str, resource: str) -> ResourceType:
    rt = REGISTRY.get(group, "v1", resource)
    assert rt is not None
    return rt


SERVICES = _rt("", "services")
SLICES = _rt("discovery.k8s.io", "endpointslices")


@dataclass
class FakeInputs:
    """The pure input table a filter reads (FilterInputs)."""

    node_name: str = "n1"
    pool_label: str = POOL
    nodes: dict[str, dict[str, str]] = field(default_factory=lambda: {"n1": {POOL: "p1"}})
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def node_labels(self, name: str) -> Mapping[str, str] | None:
        return self.nodes.get(name)

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.services.get((namespace, name))


def _record(rt: ResourceType, obj: dict[str, Any]) -> ObjectRecord:
    return record_from_bytes(rt, json.dumps(obj, separators=(",", ":")).encode())


def _bare(namespace: str, name: str, body: Any) -> ObjectRecord:
    """A record built field by field: no field-selector values, body need not parse."""
    return ObjectRecord(
        key=f"{namespace}/{name}",
        rv=1,
        labels={},
        row=NO_FIELDS,
        raw=body if isinstance(body, bytes) else json.dumps(body).encode(),
    )


def svc(
    spec: Any,
    *,
    ns: str = "default",
    name: str = "kubernetes",
    annotations: dict[str, Any] | None = None,
) -> ObjectRecord:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "resourceVersion": "5"}
    if annotations is not None:
        meta["annotations"] = annotations
    return _record(SERVICES, {"metadata": meta, "spec": spec})


def decoded(record: ObjectRecord) -> Any:
    return msgspec.json.decode(record.raw)


# --- masterservice --------------------------------------------------------------------

HOST, PORT = "169.254.2.1", 10268
HTTPS = {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}


def kube_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "clusterIP": "10.96.0.1",
        "clusterIPs": ["10.96.0.1"],
        "ports": [HTTPS],
        "type": "ClusterIP",
    }
    spec.update(overrides)
    return {k: v for k, v in spec.items() if v is not None}


SAME = None  # the row expects the very same record back

MASTER_ROWS: list[tuple[str, ObjectRecord, Any]] = [
    (
        "rewrites",
        svc(kube_spec()),
        kube_spec(clusterIP=HOST, clusterIPs=[HOST], ports=[{**HTTPS, "port": PORT}]),
    ),
    (
        "no-clusterIPs-not-added",
        svc(kube_spec(clusterIPs=None)),
        kube_spec(clusterIP=HOST, clusterIPs=None, ports=[{**HTTPS, "port": PORT}]),
    ),
    (
        "empty-clusterIPs-kept",
        svc(kube_spec(clusterIPs=[])),
        kube_spec(clusterIP=HOST, clusterIPs=[], ports=[{**HTTPS, "port": PORT}]),
    ),
    (
        "first-https-only",
        svc(kube_spec(ports=[{"name": "HTTPS", "port": 1}, HTTPS, {**HTTPS, "port": 444}])),
        kube_spec(
            clusterIP=HOST,
            clusterIPs=[HOST],
            ports=[{"name": "HTTPS", "port": 1}, {**HTTPS, "port": PORT}, {**HTTPS, "port": 444}],
        ),
    ),
    (
        "no-https-port",
        svc(kube_spec(ports=[{"name": "web", "port": 443}])),
        kube_spec(clusterIP=HOST, clusterIPs=[HOST], ports=[{"name": "web", "port": 443}]),
    ),
    (
        "no-ports",
        svc(kube_spec(ports=None)),
        kube_spec(clusterIP=HOST, clusterIPs=[HOST], ports=None),
    ),
    (
        "already-rewritten",
        svc(kube_spec(clusterIP=HOST, clusterIPs=[HOST], ports=[{**HTTPS, "port": PORT}])),
        SAME,
    ),
    ("other-name", svc(kube_spec(), name="kube-dns"), SAME),
    ("other-namespace", svc(kube_spec(), ns="kube-system"), SAME),
    ("spec-not-object", _bare("default", "kubernetes", {"spec": "x"}), SAME),
    ("ports-not-list", svc(kube_spec(ports={"https": 443})), SAME),
    ("clusterIPs-not-list", svc(kube_spec(clusterIPs="10.96.0.1")), SAME),
    ("body-not-json", _bare("default", "kubernetes", b"{"), SAME),
    ("body-not-object", _bare("default", "kubernetes", [1]), SAME),
]


@pytest.mark.parametrize(
    ("record", "spec"), [r[1:] for r in MASTER_ROWS], ids=[r[0] for r in MASTER_ROWS]
)
def test_masterservice(record: ObjectRecord, spec: dict[str, Any] | None) -> None:
    out = MasterService(HOST, PORT).apply(record, FakeInputs())
    if spec is SAME:
        assert out is record
        return
    assert out is not None
    before = decoded(record)
    assert decoded(out) == {**before, "spec": spec}
    # Deterministic bytes: keys keep their order, nothing else is re-spelled.
    assert out.raw == msgspec.json.encode({**before, "spec": {**before["spec"], **spec}})
    assert (out.key, out.rv, out.labels) == (record.key, record.rv, record.labels)


# --- discardcloudservice ----------------------------------------------------------------

DISCARD = {"svc.openyurt.io/discard": "true"}
LB = {"type": "LoadBalancer"}

DISCARD_ROWS: list[tuple[str, ObjectRecord, bool]] = [
    ("lb-discard", svc(LB, ns="a", name="s", annotations=DISCARD), False),
    ("lb-no-annotation", svc(LB, ns="a", name="s"), True),
    ("lb-other-annotations", svc(LB, ns="a", name="s", annotations={"x": "true"}), True),
    ("lb-True", svc(LB, ns="a", name="s", annotations={"svc.openyurt.io/discard": "True"}), True),
    ("lb-false", svc(LB, ns="a", name="s", annotations={"svc.openyurt.io/discard": "false"}), True),
    ("lb-bool", svc(LB, ns="a", name="s", annotations={"svc.openyurt.io/discard": True}), True),
    ("nodeport-discard", svc({"type": "NodePort"}, ns="a", name="s", annotations=DISCARD), True),
    ("clusterip-discard", svc({}, ns="a", name="s", annotations=DISCARD), True),
    ("tunnel-svc", svc({}, ns="kube-system", name="x-tunnel-server-internal-svc"), False),
    ("tunnel-svc-elsewhere", svc({}, ns="default", name="x-tunnel-server-internal-svc"), True),
    # no field-selector values on the record: the body decides
    (
        "no-field-index",
        _bare("a", "s", {"metadata": {"annotations": DISCARD}, "spec": LB}),
        False,
    ),
    ("annotations-not-object", _bare("a", "s", {"metadata": {"annotations": 1}, "spec": LB}), True),
    ("spec-not-object", _bare("a", "s", {"metadata": {"annotations": DISCARD}, "spec": 1}), True),
    ("body-not-json", _bare("a", "s", b"nope"), True),
]


@pytest.mark.parametrize(
    ("record", "kept"), [r[1:] for r in DISCARD_ROWS], ids=[r[0] for r in DISCARD_ROWS]
)
def test_discardcloudservice(record: ObjectRecord, kept: bool) -> None:
    out = DiscardCloudService().apply(record, FakeInputs())
    assert out is (record if kept else None)


def test_discardcloudservice_rules_out_by_field_index_first() -> None:
    """A record whose spec.type field value is not LoadBalancer is never decoded."""
    record = svc(LB, ns="a", name="s", annotations=DISCARD)
    record = dataclasses.replace(record, row=FieldRow.of({"spec.type": "ClusterIP"}))
    assert DiscardCloudService().apply(record, FakeInputs()) is record


# --- nodeportisolation ------------------------------------------------------------------

PARSE_ROWS: list[tuple[str, set[str]]] = [
    ("foo,-foo", {"foo"}),
    ("-foo,foo", {"-foo"}),
    ("*,-p1", {"*", "-p1"}),
    (" p1 , p2 ", {"p1", "p2"}),
    ("", set()),
    (",,p1,", {"p1"}),
    ("-,p1", {"p1"}),
    ("p1,p1,-p1", {"p1"}),
    ("\tp1\n", {"p1"}),
]


# (tokens, pool, listens): the decision order is P, then -P, then *
DECISION_ROWS: list[tuple[set[str], str, bool]] = [
    ({"p1", "-p1"}, "p1", True),
    ({"-p1", "*"}, "p1", False),
    ({"*"}, "p1", True),
    ({"p2"}, "p1", False),
    (set(), "p1", False),
]


@pytest.mark.parametrize(("tokens", "pool", "listens"), DECISION_ROWS)
def test_listens_on(tokens: set[str], pool: str, listens: bool) -> None:
    assert listens_on(frozenset(tokens), pool) is listens


@pytest.mark.parametrize(("value", "tokens"), PARSE_ROWS, ids=[r[0] or "empty" for r in PARSE_ROWS])
def test_listen_pools(value: str, tokens: set[str]) -> None:
    assert listen_pools(value) == tokens


LISTEN = "nodeport.openyurt.io/listen"

# (annotation value or None for absent, service type, local pool or None, kept)
ISOLATION_ROWS: list[tuple[str | None, str, str | None, bool]] = [
    ("foo,-foo", "NodePort", "foo", True),
    ("-foo,foo", "NodePort", "foo", False),
    ("*,-p1", "NodePort", "p1", False),
    ("*,-p1", "NodePort", "p2", True),
    (" p1 , p2 ", "NodePort", "p2", True),
    (" p1 , p2 ", "NodePort", "p3", False),
    ("", "NodePort", "p1", False),  # present but empty: listens nowhere
    (None, "NodePort", "p1", True),  # absent: not isolated
    ("*", "LoadBalancer", "p1", True),
    ("-p2", "LoadBalancer", "p1", False),  # no "*": only named pools listen
    ("p1", "LoadBalancer", "p1", True),
    ("-p1", "ClusterIP", "p1", True),  # no node ports to isolate
    ("-p1", "ExternalName", "p1", True),
    ("-p1", "NodePort", None, True),  # local node in no pool: plain Kubernetes
]


@pytest.mark.parametrize(
    ("value", "type_", "pool", "kept"),
    ISOLATION_ROWS,
    ids=[f"{r[0]!r}-{r[1]}-{r[2]}" for r in ISOLATION_ROWS],
)
def test_nodeportisolation(value: str | None, type_: str, pool: str | None, kept: bool) -> None:
    annotations = {LISTEN: value} if value is not None else {}
    record = svc({"type": type_}, ns="a", name="s", annotations=annotations)
    labels = {POOL: pool} if pool is not None else {"other": "x"}
    out = NodePortIsolation().apply(record, FakeInputs(nodes={"n1": labels}))
    assert out is (record if kept else None)


@pytest.mark.parametrize(
    "record",
    [
        svc({"type": "NodePort"}, ns="a", name="s", annotations={LISTEN: ["p2"]}),
        _bare("a", "s", {"metadata": {"annotations": {LISTEN: "-p1"}}, "spec": "NodePort"}),
        _bare("a", "s", b"[["),
    ],
    ids=["annotation-not-string", "spec-not-object", "body-not-json"],
)
def test_nodeportisolation_malformed_pass_through(record: ObjectRecord) -> None:
    assert NodePortIsolation().apply(record, FakeInputs()) is record


def test_nodeportisolation_unknown_local_node_sees_everything() -> None:
    record = svc({"type": "NodePort"}, ns="a", name="s", annotations={LISTEN: ""})
    assert NodePortIsolation().apply(record, FakeInputs(nodes={})) is record


def test_nodeportisolation_decides_without_field_index() -> None:
    record = _bare("a", "s", {"metadata": {"annotations": {LISTEN: "-p1"}}, "spec": LB})
    assert NodePortIsolation().apply(record, FakeInputs()) is None


# --- forwardkubesvctraffic --------------------------------------------------------------

OLD_EPS = [{"addresses": ["10.0.0.10"], "conditions": {"ready": True}}]


def kube_slice(
    address_type: str = "IPv4", *, name: str = "kubernetes", **extra: Any
) -> ObjectRecord:
    obj: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "kubernetes"},
        },
        "addressType": address_type,
        "endpoints": OLD_EPS,
        "ports": [HTTPS_SLICE_PORT],
    }
    obj.update(extra)
    return _record(SLICES, {k: v for k, v in obj.items() if v is not None})


HTTPS_SLICE_PORT = {"name": "https", "port": 6443, "protocol": "TCP"}


def proxied(host: str, ports: Any = ...) -> dict[str, Any]:
    out: dict[str, Any] = {"endpoints": [{"addresses": [host], "conditions": {"ready": True}}]}
    if ports is not ...:
        out["ports"] = ports
    return out


# (host, slice, changed fields or SAME)
FORWARD_ROWS: list[tuple[str, str, ObjectRecord, dict[str, Any] | None]] = [
    ("ipv4", HOST, kube_slice(), proxied(HOST, [{**HTTPS_SLICE_PORT, "port": PORT}])),
    (
        "ipv6",
        "fd00::1",
        kube_slice("IPv6"),
        proxied("fd00::1", [{**HTTPS_SLICE_PORT, "port": PORT}]),
    ),
    ("ipv6-host-ipv4-slice", "fd00::1", kube_slice(), SAME),
    ("ipv4-host-ipv6-slice", HOST, kube_slice("IPv6"), SAME),
    (
        "hostname-is-ipv4",
        "proxy.local",
        kube_slice(),
        proxied("proxy.local", [{**HTTPS_SLICE_PORT, "port": PORT}]),
    ),
    ("fqdn-slice", HOST, kube_slice("FQDN"), SAME),
    (
        "second-port-https",
        HOST,
        kube_slice(ports=[{"name": "x", "port": 1}, HTTPS_SLICE_PORT]),
        proxied(HOST, [{"name": "x", "port": 1}, {**HTTPS_SLICE_PORT, "port": PORT}]),
    ),
    ("no-ports", HOST, kube_slice(ports=None), proxied(HOST)),
    (
        "no-endpoints-yet",
        HOST,
        kube_slice(endpoints=None),
        proxied(HOST, [{**HTTPS_SLICE_PORT, "port": PORT}]),
    ),
    (
        "already-rewritten",
        HOST,
        kube_slice(
            endpoints=proxied(HOST)["endpoints"], ports=[{**HTTPS_SLICE_PORT, "port": PORT}]
        ),
        SAME,
    ),
    ("other-slice", HOST, kube_slice(name="kubernetes-x1"), SAME),
    ("ports-not-list", HOST, kube_slice(ports="https"), SAME),
    ("body-not-json", HOST, _bare("default", "kubernetes", b"\x00"), SAME),
]


@pytest.mark.parametrize(
    ("host", "record", "changed"), [r[1:] for r in FORWARD_ROWS], ids=[r[0] for r in FORWARD_ROWS]
)
def test_forwardkubesvctraffic(
    host: str, record: ObjectRecord, changed: dict[str, Any] | None
) -> None:
    out = ForwardKubeSvcTraffic(host, PORT).apply(record, FakeInputs())
    if changed is SAME:
        assert out is record
        return
    assert out is not None
    before = decoded(record)
    assert decoded(out) == {**before, **changed}
    assert out.raw == msgspec.json.encode({**before, **changed})


def test_forwardkubesvctraffic_other_namespace() -> None:
    obj = decoded(kube_slice())
    obj["metadata"]["namespace"] = "kube-system"
    record = _record(SLICES, obj)
    assert ForwardKubeSvcTraffic(HOST, PORT).apply(record, FakeInputs()) is record


# --- declarations -----------------------------------------------------------------------

DECLARATIONS: list[tuple[Filter, str, frozenset[str], str, str]] = [
    (MasterService(HOST, PORT), "masterservice", frozenset(), "kubelet", "services"),
    (DiscardCloudService(), "discardcloudservice", frozenset(), "kube-proxy", "services"),
    (NodePortIsolation(), "nodeportisolation", frozenset({"local-node"}), "kube-proxy", "services"),
    (
        ForwardKubeSvcTraffic(HOST, PORT),
        "forwardkubesvctraffic",
        frozenset(),
        "kube-proxy",
        "endpointslices",
    ),
]


@pytest.mark.parametrize(
    ("f", "name", "needs", "component", "resource"), DECLARATIONS, ids=[d[1] for d in DECLARATIONS]
)
def test_declarations(
    f: Filter, name: str, needs: frozenset[str], component: str, resource: str
) -> None:
    assert f.name == name
    assert f.needs == needs
    for verb in ("get", "list", "watch"):
        assert f.applies.matches(component, resource, verb)
    assert not f.applies.matches("other", resource, "list")
    assert not f.applies.matches(component, "pods", "list")
    assert not f.applies.matches(component, resource, "create")


def test_applies_is_overridable() -> None:
    custom = Applies.of(("edge-agent",), ("services",))
    filters: list[Filter] = [
        MasterService(HOST, PORT, applies=custom),
        DiscardCloudService(applies=custom),
        NodePortIsolation(applies=custom),
        ForwardKubeSvcTraffic(HOST, PORT, applies=custom),
    ]
    assert all(f.applies is custom for f in filters)
