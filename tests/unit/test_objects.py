"""ObjectRecord views: shared label sets and field values read like plain mappings."""

from __future__ import annotations

import gc
import json
from typing import Any

import pytest

from edgeproxy.kube import objects
from edgeproxy.kube.objects import (
    NO_FIELDS,
    NO_LABELS,
    FieldRow,
    FieldValues,
    Labels,
    ObjectRecord,
    record_from_bytes,
)
from edgeproxy.kube.resources import ResourceRegistry, ResourceType

_pods = ResourceRegistry().get("", "v1", "pods")
assert _pods is not None
PODS: ResourceType = _pods


def pod(name: str, labels: dict[str, str] | None = None, node: str = "n1", **status: Any) -> bytes:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "resourceVersion": "7"}
    if labels is not None:
        meta["labels"] = labels
    obj = {"metadata": meta, "spec": {"nodeName": node}, "status": status}
    return json.dumps(obj, separators=(",", ":")).encode()


def record(raw: bytes, rt: ResourceType = PODS) -> Any:
    return record_from_bytes(rt, raw)


def test_equal_label_sets_are_one_object() -> None:
    a = record(pod("a", {"app": "web", "tier": "fe"}))
    b = record(pod("b", {"app": "web", "tier": "fe"}))
    c = record(pod("c", {"app": "web", "tier": "be"}))
    assert a.labels is b.labels
    assert a.labels is not c.labels
    assert a.labels == {"app": "web", "tier": "fe"}
    assert dict(c.labels) == {"app": "web", "tier": "be"}


def test_shared_labels_are_read_only() -> None:
    labels = record(pod("a", {"app": "web"})).labels
    assert isinstance(labels, Labels)
    with pytest.raises(TypeError):
        labels["app"] = "other"
    with pytest.raises(TypeError):
        labels.update(x="y")
    with pytest.raises(TypeError):
        labels.pop("app")
    assert labels == {"app": "web"}
    assert labels | {"x": "y"} == {"app": "web", "x": "y"}  # a new, ordinary dict


def test_no_labels() -> None:
    assert record(pod("a")).labels is NO_LABELS
    assert record(pod("b", {})).labels is NO_LABELS
    assert dict(NO_LABELS) == {}


def test_label_sets_are_dropped_with_their_last_object() -> None:
    table = objects._LABEL_SETS._sets
    a = record(pod("a", {"only": "in-this-test"}))
    assert table.get(("only", "in-this-test")) is a.labels
    del a
    gc.collect()
    assert table.get(("only", "in-this-test")) is None


def test_field_values_read_like_a_dict() -> None:
    r = record(pod("a", node="n7", phase="Running", podIP="10.0.0.1"))
    assert isinstance(r.fields, FieldValues)
    assert r.fields["metadata.name"] == "a"
    assert r.fields["metadata.namespace"] == "ns"
    assert r.fields["spec.nodeName"] == r.fields["spec.host"] == "n7"
    assert r.fields["status.phase"] == "Running"
    assert r.fields["spec.hostNetwork"] == "false"
    assert r.fields.get("status.podIP") == "10.0.0.1"
    assert r.fields.get("no.such.field", "x") == "x"
    with pytest.raises(KeyError):
        r.fields["no.such.field"]
    assert set(r.fields) == {"metadata.name", "metadata.namespace", *PODS.extra_fields}
    assert len(r.fields) == 2 + len(PODS.extra_fields)
    assert dict(r.fields)["metadata.name"] == "a"


@pytest.mark.parametrize(
    ("namespace", "name", "key"),
    [("ns", "a", "ns/a"), ("", "node-1", "node-1"), ("kube-system", "x.y-z", "kube-system/x.y-z")],
)
def test_namespace_and_name_are_read_off_the_key(namespace: str, name: str, key: str) -> None:
    body = {"metadata": {"name": name, **({"namespace": namespace} if namespace else {})}}
    r = record(json.dumps(body).encode())
    assert (r.key, r.namespace, r.name) == (key, namespace, name)
    assert (r.fields["metadata.namespace"], r.fields["metadata.name"]) == (namespace, name)


def test_a_row_built_by_hand_answers_its_fields() -> None:
    row = FieldRow.of({"spec.type": "ClusterIP"})
    r = ObjectRecord("a/s", 1, NO_LABELS, row, b"{}")
    assert dict(r.fields) == {
        "metadata.name": "s",
        "metadata.namespace": "a",
        "spec.type": "ClusterIP",
    }
    assert NO_FIELDS.values == ()


def test_field_values_beyond_name_are_shared() -> None:
    a = record(pod("a", node="n1", phase="Running"))
    b = record(pod("b", node="n1", phase="Running"))
    c = record(pod("c", node="n2", phase="Running"))
    assert a.row is b.row
    assert a.row is not c.row
    assert (a.fields["metadata.name"], b.fields["metadata.name"]) == ("a", "b")


def test_an_object_as_deep_as_kube_apiserver_reads_is_recorded() -> None:
    # kube-apiserver stores objects up to 10,000 levels deep; msgspec alone
    # gives up near Python's recursion limit (1,000) with a RecursionError,
    # which broke the list, the reflector and read-your-writes for such objects.
    rt = ResourceRegistry().get("", "v1", "configmaps")
    assert rt is not None
    levels = 9_990
    raw = (
        b'{"metadata":{"name":"deep","namespace":"d","resourceVersion":"7"},"data":{"a":'
        + b"[" * levels
        + b"]" * levels
        + b"}}"
    )
    record = record_from_bytes(rt, raw)
    assert (record.key, record.rv) == ("d/deep", 7)
