"""Resource types from discovery documents and CRDs (kube/discovery.py).

The documents are shaped as kube-apiserver v1.37 serves them; the guess they
replace named RuntimeClass's list `RuntimeclassesList`, which client-go
refuses to decode.
"""

from __future__ import annotations

import json

import pytest

from edgeproxy.kube.discovery import (
    DiscoveryError,
    parse_discovery,
    selectable_fields,
    with_selectable_fields,
)
from edgeproxy.kube.fields import parse_selectors
from edgeproxy.kube.objects import record_from_bytes
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.status import StatusError

NODE_V1 = {
    "kind": "APIResourceList",
    "apiVersion": "v1",
    "groupVersion": "node.k8s.io/v1",
    "resources": [
        {
            "name": "runtimeclasses",
            "singularName": "runtimeclass",
            "namespaced": False,
            "kind": "RuntimeClass",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "watch"],
            "storageVersionHash": "WQTu1GL3T2Q=",
        }
    ],
}

CORE_V1 = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "list", "watch"], "shortNames": ["po"]},
        {"name": "pods/status", "singularName": "", "namespaced": True, "kind": "Pod",
         "verbs": ["get", "patch", "update"]},
        {"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
         "version": "v1", "kind": "Eviction", "verbs": ["create"]},
    ],
}  # fmt: skip

AGGREGATED = {
    "kind": "APIGroupDiscoveryList",
    "apiVersion": "apidiscovery.k8s.io/v2",
    "items": [
        {
            "metadata": {"name": "certificates.k8s.io"},
            "versions": [
                {
                    "version": "v1beta1",
                    "resources": [
                        {
                            "resource": "podcertificaterequests",
                            "responseKind": {"group": "", "version": "", "kind": "PodCertificateRequest"},
                            "scope": "Namespaced",
                            "singularResource": "podcertificaterequest",
                            "verbs": ["create", "get", "list", "watch"],
                            "subresources": [{"subresource": "status", "verbs": ["get"]}],
                        }
                    ],
                }
            ],
        }
    ],
}  # fmt: skip

CRD = {
    "kind": "CustomResourceDefinition",
    "apiVersion": "apiextensions.k8s.io/v1",
    "metadata": {"name": "widgets.example.com"},
    "spec": {
        "group": "example.com",
        "names": {"plural": "widgets", "kind": "Widget"},
        "scope": "Namespaced",
        "versions": [
            {"name": "v1", "served": True, "storage": True,
             "selectableFields": [{"jsonPath": ".spec.color"}, {"jsonPath": ".spec.size"}]},
            {"name": "v1beta1", "served": True, "storage": False},
        ],
    },
}  # fmt: skip


def test_a_resource_list_declares_kind_scope_and_verbs() -> None:
    types = parse_discovery(json.dumps(NODE_V1).encode())
    rt = types[("node.k8s.io", "v1")]["runtimeclasses"]
    assert rt.kind == "RuntimeClass"
    assert rt.list_kind == "RuntimeClassList"
    assert not rt.namespaced
    assert "watch" in rt.verbs and "update" not in rt.verbs
    # Discovery says nothing of field selectors: upstream decides them.
    assert not rt.fields_checked


def test_subresources_stay_on_their_parent() -> None:
    types = parse_discovery(json.dumps(CORE_V1).encode())[("", "v1")]
    assert set(types) == {"pods"}
    assert types["pods"].subresources == ("status", "eviction")
    assert types["pods"].short_names == ("po",)


def test_aggregated_discovery() -> None:
    types = parse_discovery(json.dumps(AGGREGATED).encode())
    rt = types[("certificates.k8s.io", "v1beta1")]["podcertificaterequests"]
    assert (rt.kind, rt.namespaced, rt.subresources) == ("PodCertificateRequest", True, ("status",))


@pytest.mark.parametrize("body", [b"[]", b"{", b'{"kind":"Status"}', b'{"kind":"APIResourceList"}'])
def test_not_discovery(body: bytes) -> None:
    with pytest.raises(DiscoveryError):
        parse_discovery(body)


def test_crd_selectable_fields_by_version() -> None:
    assert selectable_fields(json.dumps(CRD).encode()) == {
        "v1": ["spec.color", "spec.size"],
        "v1beta1": [],
    }
    with pytest.raises(DiscoveryError):
        selectable_fields(b'{"kind":"Status","spec":{}}')


def _widget_type(labels: list[str] | None) -> ResourceType:
    base = parse_discovery(
        json.dumps(
            {
                "kind": "APIResourceList",
                "groupVersion": "example.com/v1",
                "resources": [
                    {"name": "widgets", "namespaced": True, "kind": "Widget", "verbs": ["list"]}
                ],
            }
        ).encode()
    )[("example.com", "v1")]["widgets"]
    return with_selectable_fields(base, labels)


def test_selectable_fields_are_evaluated_as_kube_apiserver_renders_them() -> None:
    rt = _widget_type(["spec.color", "spec.size"])
    raw = b'{"metadata":{"name":"w","namespace":"ns"},"spec":{"color":"red","size":3}}'
    record = record_from_bytes(rt, raw)
    assert record.fields["spec.color"] == "red"
    assert record.fields["spec.size"] == "3"
    absent = record_from_bytes(rt, b'{"metadata":{"name":"v","namespace":"ns"}}')
    assert absent.fields["spec.color"] == ""


def test_types_with_other_fields_are_decoded_apart() -> None:
    # Decoders are cached per type: a type learnt without the CRD's fields
    # must not lend its decoder (which skips spec) to one with them.
    raw = b'{"metadata":{"name":"w","namespace":"ns"},"spec":{"color":"red"}}'
    without = _widget_type(None)
    with_fields = _widget_type(["spec.color"])
    assert without != with_fields
    record_from_bytes(without, raw)
    assert record_from_bytes(with_fields, raw).fields["spec.color"] == "red"


def test_upstream_decides_field_selectors_of_discovered_types() -> None:
    rt = _widget_type(None)
    _, fields = parse_selectors(rt, "", "spec.nodeName=x")
    assert str(fields) == "spec.nodeName=x"
    # Built-ins keep the proxy's own check, with the apiserver's wording.
    from edgeproxy.kube.resources import ResourceRegistry

    configmaps = ResourceRegistry().get("", "v1", "configmaps")
    assert configmaps is not None
    with pytest.raises(StatusError, match="is not a known field selector"):
        parse_selectors(configmaps, "", "spec.nodeName=x")
