"""servicetopology as tables: (Service, nodes, endpoints) → the endpoints a node sees.

Node layout used by every row (local node n1 unless a row says otherwise):

    n1: pool p1, zone z1, rack r1      n3: pool p2, zone z1
    n2: pool p1, zone z2, rack r1      n4: not known (no Node object)
    n5: known, no labels at all        "-": an endpoint without a node name
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from edgeproxy.filters.base import Applies, Filter
from edgeproxy.filters.topology import ServiceTopology, node_label_keys, service_of
from edgeproxy.kube.objects import NO_FIELDS, ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry, ResourceType

POOL = "apps.openyurt.io/nodepool"
ZONE = "topology.kubernetes.io/zone"
HOST = "kubernetes.io/hostname"

REGISTRY = ResourceRegistry()


def _rt(group: str, resource: str) -> ResourceType:
    rt = REGISTRY.get(group, "v1", resource)
    assert rt is not None
    return rt


SLICES = _rt("discovery.k8s.io", "endpointslices")
ENDPOINTS = _rt("", "endpoints")

NODES: dict[str, dict[str, str]] = {
    "n1": {POOL: "p1", ZONE: "z1", "rack": "r1"},
    "n2": {POOL: "p1", ZONE: "z2", "rack": "r1"},
    "n3": {POOL: "p2", ZONE: "z1"},
    "n5": {},
}


@dataclass
class FakeInputs:
    """The pure input table a filter reads (FilterInputs)."""

    node_name: str = "n1"
    pool_label: str = POOL
    nodes: dict[str, dict[str, str]] = field(default_factory=lambda: dict(NODES))
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def node_labels(self, name: str) -> Mapping[str, str] | None:
        return self.nodes.get(name)

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.services.get((namespace, name))

    def all_services(self) -> list[dict[str, Any]]:
        return list(self.services.values())


def _record(rt: ResourceType, obj: dict[str, Any]) -> ObjectRecord:
    return record_from_bytes(rt, json.dumps(obj, separators=(",", ":")).encode())


def _ip(node: str) -> str:
    return {"n1": "10.0.0.1", "n2": "10.0.0.2", "n3": "10.0.0.3", "n4": "10.0.0.4"}.get(
        node, "10.0.0.9"
    )


def slice_v1(nodes: list[str], zones: dict[str, str] | None = None) -> ObjectRecord:
    """An EndpointSlice of Service ns/svc with one endpoint per node ("-": no nodeName)."""
    eps: list[dict[str, Any]] = []
    for node in nodes:
        ep: dict[str, Any] = {"addresses": [_ip(node)], "conditions": {"ready": True}}
        if node != "-":
            ep["nodeName"] = node
        if zones and node in zones:
            ep["zone"] = zones[node]
        eps.append(ep)
    return _record(
        SLICES,
        {
            "metadata": {
                "name": "svc-abcde",
                "namespace": "ns",
                "resourceVersion": "7",
                "labels": {"kubernetes.io/service-name": "svc"},
            },
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        },
    )


def slice_v1beta1(nodes: list[str], zones: dict[str, str] | None = None) -> ObjectRecord:
    """The same, in discovery.k8s.io/v1beta1 form: the node is topology[hostname]."""
    eps: list[dict[str, Any]] = []
    for node in nodes:
        topology = {HOST: node} if node != "-" else {}
        if zones and node in zones:
            topology[ZONE] = zones[node]
        eps.append({"addresses": [_ip(node)], "topology": topology})
    return _record(
        SLICES,
        {
            "metadata": {
                "name": "svc-abcde",
                "namespace": "ns",
                "labels": {"kubernetes.io/service-name": "svc"},
            },
            "addressType": "IPv4",
            "endpoints": eps,
        },
    )


def endpoints(ready: list[str], not_ready: list[str] | None = None) -> ObjectRecord:
    """Endpoints ns/svc: one subset with ready and not-ready addresses."""
    subset: dict[str, Any] = {"ports": [{"port": 80}]}
    if ready:
        subset["addresses"] = [{"ip": _ip(n), "nodeName": n} for n in ready]
    if not_ready:
        subset["notReadyAddresses"] = [{"ip": _ip(n), "nodeName": n} for n in not_ready]
    return _record(ENDPOINTS, {"metadata": {"name": "svc", "namespace": "ns"}, "subsets": [subset]})


def service(annotations: dict[str, str] | None = None, topology_keys: Any = None) -> dict[str, Any]:
    svc: dict[str, Any] = {"metadata": {"name": "svc", "namespace": "ns"}, "spec": {}}
    if annotations is not None:
        svc["metadata"]["annotations"] = annotations
    if topology_keys is not None:
        svc["spec"]["topologyKeys"] = topology_keys
    return svc


def openyurt(value: str) -> dict[str, Any]:
    return service({"openyurt.io/topologyKeys": value})


def superedge(value: str) -> dict[str, Any]:
    return service({"topologyKeys": value})


def upstream(*keys: str) -> dict[str, Any]:
    return service(topology_keys=list(keys))


def kept_nodes(record: ObjectRecord) -> list[str]:
    """The endpoints a slice shows, as node names ("-" for none), in order."""
    obj = msgspec.json.decode(record.raw)
    out = []
    for ep in obj["endpoints"]:
        node = ep.get("nodeName") or ep.get("topology", {}).get(HOST) or "-"
        out.append(node)
    return out


ALL = ["n1", "n2", "n3", "n4", "n5", "-"]
SAME = None  # the row expects the very same record back

# (service, local node, nodes known, endpoints on, zones of slice endpoints, expected)
SLICE_ROWS: list[
    tuple[str, dict[str, Any], str, dict[str, dict[str, str]], list[str], dict[str, str], Any]
] = [
    # --- flavour 1: openyurt.io/topologyKeys
    ("yurt-hostname", openyurt(HOST), "n1", NODES, ALL, {}, ["n1"]),
    ("yurt-nodepool", openyurt("openyurt.io/nodepool"), "n1", NODES, ALL, {}, ["n1", "n2"]),
    ("yurt-zone-is-pool", openyurt("kubernetes.io/zone"), "n1", NODES, ALL, {}, ["n1", "n2"]),
    ("yurt-pool-other-pool", openyurt("openyurt.io/nodepool"), "n3", NODES, ALL, {}, ["n3"]),
    # local unknown / without pool label: node scope, which needs no Node object
    ("yurt-pool-local-unknown", openyurt("openyurt.io/nodepool"), "n4", NODES, ALL, {}, ["n4"]),
    ("yurt-pool-local-no-label", openyurt("openyurt.io/nodepool"), "n5", NODES, ALL, {}, ["n5"]),
    ("yurt-pool-no-nodes-at-all", openyurt("openyurt.io/nodepool"), "n1", {}, ALL, {}, ["n1"]),
    ("yurt-hostname-no-nodes", openyurt(HOST), "n1", {}, ALL, {}, ["n1"]),
    ("yurt-unknown-value", openyurt("example.com/rack"), "n1", NODES, ALL, {}, SAME),
    ("yurt-already-local", openyurt("openyurt.io/nodepool"), "n1", NODES, ["n1", "n2"], {}, SAME),
    ("yurt-none-left", openyurt(HOST), "n1", NODES, ["n2", "n3"], {}, []),
    # --- flavour 2: SuperEdge topologyKeys (any key equal; fail-closed)
    ("se-zone", superedge(f'["{ZONE}"]'), "n1", NODES, ALL, {}, ["n1", "n3"]),
    ("se-any-key", superedge(f'["rack","{ZONE}"]'), "n1", NODES, ALL, {}, ["n1", "n2", "n3"]),
    ("se-local-unknown", superedge(f'["{ZONE}"]'), "n4", NODES, ALL, {}, []),
    ("se-local-lacks-key", superedge('["rack"]'), "n3", NODES, ALL, {}, []),
    ("se-hostname-needs-nodes", superedge(f'["{HOST}"]'), "n1", {}, ALL, {}, []),
    ("se-invalid-json", superedge("[zone"), "n1", NODES, ALL, {}, SAME),
    ("se-not-strings", superedge("[1, 2]"), "n1", NODES, ALL, {}, SAME),
    ("se-not-a-list", superedge('"zone"'), "n1", NODES, ALL, {}, SAME),
    ("se-empty-list", superedge("[]"), "n1", NODES, ALL, {}, SAME),
    # --- flavour 3: spec.topologyKeys, ordered preference
    ("up-hostname-first", upstream(HOST, ZONE, "*"), "n1", NODES, ALL, {}, ["n1"]),
    ("up-hostname-no-nodes", upstream(HOST), "n1", {}, ALL, {}, ["n1"]),
    ("up-falls-to-zone", upstream(HOST, ZONE), "n1", NODES, ["n2", "n3"], {}, ["n3"]),
    ("up-falls-to-star", upstream(HOST, ZONE, "*"), "n1", NODES, ["n2"], {}, SAME),
    ("up-star-only", upstream("*"), "n1", NODES, ALL, {}, SAME),
    ("up-nothing-matches", upstream(HOST, ZONE), "n1", NODES, ["n2", "n4"], {}, []),
    ("up-local-lacks-key", upstream("rack"), "n3", NODES, ALL, {}, []),
    ("up-local-unknown-zone", upstream(ZONE), "n4", NODES, ALL, {}, []),
    ("up-local-unknown-host", upstream(ZONE, HOST), "n4", NODES, ALL, {}, ["n4"]),
    # endpoint node unknown: a slice endpoint's own zone stands in, for zone only
    ("up-zone-field", upstream(ZONE), "n1", NODES, ALL, {"n4": "z1"}, ["n1", "n3", "n4"]),
    ("up-zone-field-differs", upstream(ZONE), "n1", NODES, ALL, {"n4": "z2"}, ["n1", "n3"]),
    ("up-zone-node-wins", upstream(ZONE), "n1", NODES, ["n2"], {"n2": "z1"}, []),
    ("up-no-node-name", upstream(ZONE), "n1", NODES, ["n2", "-"], {"-": "z1"}, []),
    ("up-rack-unknown-node", upstream("rack"), "n1", NODES, ALL, {}, ["n1", "n2"]),
    ("up-not-a-list", service(topology_keys="zone"), "n1", NODES, ALL, {}, SAME),
    ("up-not-strings", service(topology_keys=[ZONE, 3]), "n1", NODES, ALL, {}, SAME),
    ("up-empty", service(topology_keys=[]), "n1", NODES, ALL, {}, SAME),
    # --- precedence: the first flavour present wins
    (
        "yurt-over-superedge",
        service({"openyurt.io/topologyKeys": HOST, "topologyKeys": f'["{ZONE}"]'}),
        "n1",
        NODES,
        ALL,
        {},
        ["n1"],
    ),
    (
        "yurt-unknown-stops-search",
        service({"openyurt.io/topologyKeys": "x"}, topology_keys=[HOST]),
        "n1",
        NODES,
        ALL,
        {},
        SAME,
    ),
    (
        "superedge-over-upstream",
        service({"topologyKeys": f'["{ZONE}"]'}, topology_keys=[HOST]),
        "n1",
        NODES,
        ALL,
        {},
        ["n1", "n3"],
    ),
    (
        "bad-superedge-falls-to-upstream",
        service({"topologyKeys": "nope"}, topology_keys=[HOST]),
        "n1",
        NODES,
        ALL,
        {},
        ["n1"],
    ),
    ("no-topology", service({"other": "x"}), "n1", NODES, ALL, {}, SAME),
]


@pytest.mark.parametrize("make", [slice_v1, slice_v1beta1], ids=["v1", "v1beta1"])
@pytest.mark.parametrize(
    ("svc", "local", "nodes", "on", "zones", "expected"),
    [row[1:] for row in SLICE_ROWS],
    ids=[row[0] for row in SLICE_ROWS],
)
def test_slice(
    make: Any,
    svc: dict[str, Any],
    local: str,
    nodes: dict[str, dict[str, str]],
    on: list[str],
    zones: dict[str, str],
    expected: list[str] | None,
) -> None:
    record = make(on, zones)
    inputs = FakeInputs(local, nodes=dict(nodes), services={("ns", "svc"): svc})
    out = ServiceTopology().apply(record, inputs)
    assert out is not None  # the object is never hidden
    if expected is SAME:
        assert out is record
        return
    assert kept_nodes(out) == expected
    before, after = msgspec.json.decode(record.raw), msgspec.json.decode(out.raw)
    assert {k: v for k, v in after.items() if k != "endpoints"} == {
        k: v for k, v in before.items() if k != "endpoints"
    }
    assert (out.key, out.rv, out.labels) == (record.key, record.rv, record.labels)
    assert ServiceTopology().apply(record, inputs) == out  # deterministic bytes


# (service, local, ready on, not ready on, expected subsets as (ready, not ready) node lists)
ENDPOINTS_ROWS: list[tuple[str, dict[str, Any], str, list[str], list[str], Any]] = [
    ("hostname", openyurt(HOST), "n1", ["n1", "n2"], ["n1", "n3"], [(["n1"], ["n1"])]),
    ("pool", openyurt("openyurt.io/nodepool"), "n1", ["n3"], ["n2", "n4"], [([], ["n2"])]),
    ("ready-only-left", openyurt(HOST), "n1", ["n1"], ["n2"], [(["n1"], [])]),
    ("subset-dropped", openyurt(HOST), "n1", ["n2"], ["n3"], []),
    ("superedge-local-unknown", superedge(f'["{ZONE}"]'), "n4", ["n1"], ["n3"], []),
    ("superedge-node-unknown", superedge(f'["{ZONE}"]'), "n1", ["n1", "n4"], [], [(["n1"], [])]),
    ("upstream-zone-no-zone-field", upstream(ZONE), "n1", ["n2", "n4"], [], []),
    ("upstream-prefers-host", upstream(HOST, ZONE), "n1", ["n1", "n3"], [], [(["n1"], [])]),
    ("all-kept", openyurt("openyurt.io/nodepool"), "n1", ["n1", "n2"], ["n2"], SAME),
    ("no-topology", service(), "n1", ["n1", "n2"], ["n3"], SAME),
]


@pytest.mark.parametrize(
    ("svc", "local", "ready", "not_ready", "expected"),
    [row[1:] for row in ENDPOINTS_ROWS],
    ids=[row[0] for row in ENDPOINTS_ROWS],
)
def test_endpoints(
    svc: dict[str, Any],
    local: str,
    ready: list[str],
    not_ready: list[str],
    expected: list[tuple[list[str], list[str]]] | None,
) -> None:
    record = endpoints(ready, not_ready)
    inputs = FakeInputs(local, services={("ns", "svc"): svc})
    out = ServiceTopology().apply(record, inputs)
    assert out is not None
    if expected is SAME:
        assert out is record
        return
    subsets = msgspec.json.decode(out.raw)["subsets"]
    got = [
        (
            [a["nodeName"] for a in s.get("addresses", [])],
            [a["nodeName"] for a in s.get("notReadyAddresses", [])],
        )
        for s in subsets
    ]
    assert got == expected
    for s in subsets:
        assert s["ports"] == [{"port": 80}]
        assert all(s.get(k) != [] for k in ("addresses", "notReadyAddresses"))  # omitempty


def _raw_record(
    rt: ResourceType, obj: Any, labels: Mapping[str, str] | None = None
) -> ObjectRecord:
    """A record whose body need not parse: built field by field."""
    return ObjectRecord(
        key="ns/svc",
        rv=1,
        labels=labels or {},
        row=NO_FIELDS,
        raw=obj if isinstance(obj, bytes) else json.dumps(obj).encode(),
    )


LABEL = {"kubernetes.io/service-name": "svc"}
MALFORMED: list[tuple[str, ObjectRecord]] = [
    (
        "slice-endpoints-not-list",
        _raw_record(SLICES, {"addressType": "IPv4", "endpoints": {}}, LABEL),
    ),
    (
        "slice-entry-not-object",
        _raw_record(SLICES, {"endpoints": [{"nodeName": "n2"}, "x"]}, LABEL),
    ),
    ("slice-no-endpoints", _raw_record(SLICES, {"addressType": "IPv4"}, LABEL)),
    ("endpoints-subsets-not-list", _raw_record(ENDPOINTS, {"subsets": "x"})),
    ("endpoints-subset-not-object", _raw_record(ENDPOINTS, {"subsets": [1]})),
    ("endpoints-addresses-not-list", _raw_record(ENDPOINTS, {"subsets": [{"addresses": 1}]})),
    (
        "endpoints-address-not-object",
        _raw_record(ENDPOINTS, {"subsets": [{"addresses": [{"nodeName": "n2"}, None]}]}),
    ),
    ("body-not-json", _raw_record(ENDPOINTS, b"{not json")),
    ("body-not-object", _raw_record(ENDPOINTS, [1, 2])),
    ("neither-kind", _raw_record(ENDPOINTS, {"metadata": {}})),
    # a slice without the service-name label belongs to no Service
    ("slice-without-label", _raw_record(SLICES, {"addressType": "IPv4", "endpoints": [{}]})),
]


@pytest.mark.parametrize("record", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_objects_pass_through(record: ObjectRecord) -> None:
    inputs = FakeInputs(services={("ns", "svc"): openyurt(HOST)})
    assert ServiceTopology().apply(record, inputs) is record


MALFORMED_SERVICES: list[tuple[str, Any]] = [
    ("metadata-not-object", {"metadata": "x"}),
    ("annotations-not-object", {"metadata": {"annotations": ["openyurt.io/topologyKeys"]}}),
    ("annotation-not-string", {"metadata": {"annotations": {"topologyKeys": ["zone"]}}}),
    ("spec-not-object", {"spec": [HOST]}),
    ("service-not-mapping", ["x"]),
]


@pytest.mark.parametrize(
    "svc", [m[1] for m in MALFORMED_SERVICES], ids=[m[0] for m in MALFORMED_SERVICES]
)
def test_malformed_services_mean_no_topology(svc: Any) -> None:
    record = slice_v1(ALL)
    assert ServiceTopology().apply(record, FakeInputs(services={("ns", "svc"): svc})) is record


def test_unknown_service_leaves_objects_alone() -> None:
    inputs = FakeInputs(services={("ns", "other"): openyurt(HOST)})
    for record in (slice_v1(ALL), endpoints(ALL[:5])):
        assert ServiceTopology().apply(record, inputs) is record


@pytest.mark.parametrize(
    ("by_label", "by_name", "subsets"),
    [
        (service(), openyurt(HOST), []),  # the Service of the same name decides
        (openyurt(HOST), service(), SAME),  # the label does not make it a slice
    ],
    ids=["name-has-topology", "label-has-topology"],
)
def test_endpoints_carrying_the_label_use_their_own_name(
    by_label: dict[str, Any], by_name: dict[str, Any], subsets: list[Any] | None
) -> None:
    obj = {
        "metadata": {
            "name": "svc",
            "namespace": "ns",
            "labels": {"kubernetes.io/service-name": "x"},
        },
        "subsets": [{"addresses": [{"ip": "10.0.0.2", "nodeName": "n2"}]}],
    }
    record = _record(ENDPOINTS, obj)
    inputs = FakeInputs(services={("ns", "svc"): by_name, ("ns", "x"): by_label})
    out = ServiceTopology().apply(record, inputs)
    if subsets is SAME:
        assert out is record
    else:
        assert out is not None
        assert msgspec.json.decode(out.raw)["subsets"] == subsets


def test_a_slice_named_like_a_service_follows_its_label() -> None:
    record = slice_v1(ALL)  # named svc-abcde, labelled svc
    inputs = FakeInputs(services={("ns", "svc-abcde"): openyurt(HOST), ("ns", "svc"): service()})
    assert ServiceTopology().apply(record, inputs) is record


SERVICE_OF: list[tuple[str, ObjectRecord, str, tuple[str, str] | None]] = [
    ("endpoints", endpoints(["n1"]), "endpoints", ("ns", "svc")),
    ("slice", slice_v1(["n1"]), "endpointslices", ("ns", "svc")),
    ("slice-without-label", _raw_record(SLICES, {}), "endpointslices", None),
    ("other-resource", endpoints(["n1"]), "services", None),
]


@pytest.mark.parametrize(
    ("record", "resource", "expected"),
    [r[1:] for r in SERVICE_OF],
    ids=[r[0] for r in SERVICE_OF],
)
def test_service_of(record: ObjectRecord, resource: str, expected: tuple[str, str] | None) -> None:
    assert service_of(record, resource) == expected


def test_declares_what_it_applies_to_and_reads() -> None:
    f: Filter = ServiceTopology()
    assert f.name == "servicetopology"
    assert f.needs == {"local-node", "nodes", "services"}
    for component in ("kube-proxy", "coredns", "nginx-ingress-controller"):
        for resource in ("endpoints", "endpointslices"):
            assert f.applies.matches(component, resource, "watch")
    assert not f.applies.matches("kubelet", "endpointslices", "list")
    assert not f.applies.matches("kube-proxy", "services", "list")
    assert not f.applies.matches("kube-proxy", "endpoints", "update")
    custom = Applies.of(("my-lb",), ("endpointslices",))
    assert ServiceTopology(applies=custom).applies is custom


@pytest.mark.parametrize(
    ("svc", "keys"),
    [
        (openyurt("openyurt.io/nodepool"), {POOL}),
        (openyurt("kubernetes.io/zone"), {POOL}),  # a synonym of the pool
        (openyurt("kubernetes.io/hostname"), set()),  # compares node names
        (openyurt("bogus"), set()),
        (superedge('["rack", "zone-x"]'), {"rack", "zone-x"}),
        (superedge("not json"), set()),
        (upstream(HOST, ZONE, "*"), {ZONE}),
        (service(), set()),
        # The first flavour present wins, as in the rules.
        (service({"openyurt.io/topologyKeys": "kubernetes.io/hostname"}, ["rack"]), set()),
    ],
)
def test_node_label_keys_are_those_the_rule_compares(svc: dict[str, Any], keys: set[str]) -> None:
    assert node_label_keys(svc, POOL) == keys


def test_reads_node_labels_only_for_keys_a_service_compares() -> None:
    f = ServiceTopology()
    inputs = FakeInputs(services={("ns", "a"): superedge('["rack"]'), ("ns", "b"): upstream(ZONE)})
    assert f.reads_node_labels(frozenset({POOL}), inputs)  # the pool label always counts
    assert f.reads_node_labels(frozenset({"rack", "other"}), inputs)
    assert f.reads_node_labels(frozenset({ZONE}), inputs)
    assert not f.reads_node_labels(frozenset({"other", HOST}), inputs)
    assert not f.reads_node_labels(frozenset({"rack"}), FakeInputs())
