"""Server-side printing: Table shape, printer columns, ages, partial metadata."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from edgeproxy.kube.printers import human_duration
from edgeproxy.kube.resources import BUILTIN, ResourceType
from edgeproxy.kube.status import StatusError
from edgeproxy.kube.table import (
    include_object_option,
    partial_object_metadata,
    partial_object_metadata_list,
    table,
)

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
BY_RESOURCE = {rt.resource: rt for rt in BUILTIN}
WIDGETS = ResourceType("example.com", "v1", "widgets", "Widget", True)


def ts(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, ago: timedelta = timedelta(minutes=5), **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "resourceVersion": "42",
        "creationTimestamp": ts(ago),
        **extra,
    }


def running_pod() -> dict[str, Any]:
    return {
        "metadata": meta("web-0", labels={"app": "web"}),
        "spec": {"nodeName": "node-a", "containers": [{"name": "a"}, {"name": "b"}]},
        "status": {
            "phase": "Running",
            "podIPs": [{"ip": "10.0.0.7"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "a", "ready": True, "restartCount": 0, "state": {"running": {}}},
                {
                    "name": "b",
                    "ready": False,
                    "restartCount": 3,
                    "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                    "lastState": {"terminated": {"finishedAt": ts(timedelta(seconds=40))}},
                },
            ],
        },
    }


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (5, "5s"),
        (119, "119s"),
        (200, "3m20s"),
        (300, "5m"),
        (3000, "50m"),
        (3 * 3600 + 60, "3h1m"),
        (30 * 3600, "30h"),
        (2 * 86400, "2d"),
        (3 * 86400 + 5 * 3600, "3d5h"),
        (100 * 86400, "100d"),
        (3 * 365 * 86400 + 86400, "3y1d"),
        (10 * 365 * 86400, "10y"),
    ],
)
def test_human_duration(seconds: float, expected: str) -> None:
    assert human_duration(seconds) == expected


def test_pod_list_table() -> None:
    out = table(
        BY_RESOURCE["pods"],
        [running_pod()],
        list_meta={"resourceVersion": "100", "continue": "abc", "remainingItemCount": 3},
        now=NOW,
    )
    assert list(out) == ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    assert out["kind"] == "Table"
    assert out["apiVersion"] == "meta.k8s.io/v1"
    assert out["metadata"] == {"resourceVersion": "100", "continue": "abc", "remainingItemCount": 3}
    names = [(c["name"], c["priority"]) for c in out["columnDefinitions"]]
    assert names == [
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),
        ("Node", 1),
        ("Nominated Node", 1),
        ("Readiness Gates", 1),
    ]
    first = out["columnDefinitions"][0]
    assert list(first) == ["name", "type", "format", "description", "priority"]
    assert first["format"] == "name"
    assert first["description"].startswith("Name must be unique within a namespace.")
    assert out["columnDefinitions"][4]["description"].endswith("api-conventions.md#metadata")
    (row,) = out["rows"]
    assert row["cells"] == [
        "web-0",
        "1/2",
        "CrashLoopBackOff",
        "3 (40s ago)",
        "5m",
        "10.0.0.7",
        "node-a",
        "<none>",
        "<none>",
    ]
    assert row["object"] == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": running_pod()["metadata"],
    }


def test_pod_status_variants() -> None:
    pods = BY_RESOURCE["pods"]
    pending = {"metadata": meta("p"), "spec": {"containers": [{"name": "a"}]}, "status": {}}
    pending["status"] = {"phase": "Pending"}
    deleting = running_pod()
    deleting["metadata"]["deletionTimestamp"] = ts(timedelta(seconds=1))
    done = {
        "metadata": meta("job"),
        "spec": {"containers": [{"name": "a"}]},
        "status": {
            "phase": "Succeeded",
            "containerStatuses": [
                {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
            ],
        },
    }
    init = {
        "metadata": meta("i"),
        "spec": {"initContainers": [{"name": "i"}], "containers": [{"name": "a"}]},
        "status": {"phase": "Pending", "initContainerStatuses": [{"name": "i", "state": {}}]},
    }
    rows = table(pods, [pending, deleting, done, init], list_meta={}, now=NOW)["rows"]
    assert [r["cells"][2] for r in rows] == ["Pending", "Terminating", "Completed", "Init:0/1"]
    assert rows[2]["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]
    assert "conditions" not in rows[0]


def test_configmap_table_and_single_object_metadata() -> None:
    cm = {"metadata": meta("cfg", timedelta(days=2)), "data": {"a": "1", "b": "2"}}
    cm["binaryData"] = {"c": "AA=="}
    out = table(BY_RESOURCE["configmaps"], [cm], list_meta=None, now=NOW)
    assert out["metadata"] == {"resourceVersion": "42"}
    assert [c["name"] for c in out["columnDefinitions"]] == ["Name", "Data", "Age"]
    assert out["rows"][0]["cells"] == ["cfg", 3, "2d"]


def test_node_table() -> None:
    node = {
        "metadata": meta(
            "node-a",
            timedelta(hours=5, minutes=3),
            labels={"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "edge"},
        ),
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [{"type": "Ready", "status": "False"}],
            "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}],
            "nodeInfo": {"kubeletVersion": "v1.34.1", "osImage": "Ubuntu"},
        },
    }
    out = table(BY_RESOURCE["nodes"], [node], list_meta={"resourceVersion": "7"}, now=NOW)
    assert [c["name"] for c in out["columnDefinitions"]][5:] == [
        "Internal-IP",
        "External-IP",
        "OS-Image",
        "Kernel-Version",
        "Container-Runtime",
    ]
    assert out["rows"][0]["cells"] == [
        "node-a",
        "NotReady,SchedulingDisabled",
        "control-plane,edge",
        "5h3m",
        "v1.34.1",
        "192.168.1.10",
        "<none>",
        "Ubuntu",
        "<unknown>",
        "<unknown>",
    ]


def test_service_and_event_cells() -> None:
    svc = {
        "metadata": meta("api"),
        "spec": {
            "type": "NodePort",
            "clusterIPs": ["10.96.0.10"],
            "ports": [{"port": 443, "nodePort": 30443, "protocol": "TCP"}],
            "selector": {"b": "2", "a": "1"},
        },
    }
    (row,) = table(BY_RESOURCE["services"], [svc], list_meta={}, now=NOW)["rows"]
    assert row["cells"] == [
        "api",
        "NodePort",
        "10.96.0.10",
        "<none>",
        "443:30443/TCP",
        "5m",
        "a=1,b=2",
    ]
    event = {
        "metadata": meta("web-0.17a"),
        "type": "Warning",
        "reason": "BackOff",
        "involvedObject": {"kind": "Pod", "name": "web-0", "fieldPath": "spec.containers{b}"},
        "source": {"component": "kubelet", "host": "node-a"},
        "message": " Back-off restarting \n",
        "firstTimestamp": ts(timedelta(minutes=10)),
        "lastTimestamp": ts(timedelta(seconds=30)),
        "count": 7,
    }
    (row,) = table(BY_RESOURCE["events"], [event], list_meta={}, now=NOW)["rows"]
    assert row["cells"] == [
        "30s",
        "Warning",
        "BackOff",
        "pod/web-0",
        "spec.containers{b}",
        "kubelet, node-a",
        "Back-off restarting",
        "10m",
        7,
        "web-0.17a",
    ]


def test_default_columns_for_kinds_without_printer() -> None:
    widget = {"metadata": meta("w1")}
    out = table(WIDGETS, [widget], list_meta={"resourceVersion": "9"}, now=NOW)
    defs = out["columnDefinitions"]
    assert [(c["name"], c["type"], c["format"]) for c in defs] == [
        ("Name", "string", "name"),
        ("Created At", "date", ""),
    ]
    assert out["rows"][0]["cells"] == ["w1", "2024-05-01T11:55:00Z"]
    empty = table(WIDGETS, [], list_meta={"resourceVersion": "9"}, now=NOW)
    assert empty["rows"] is None
    assert table(BY_RESOURCE["pods"], [], list_meta={}, now=NOW)["rows"] == []


def test_include_object_variants() -> None:
    cm = {"metadata": meta("cfg"), "data": {}}
    cms = BY_RESOURCE["configmaps"]
    full = table(cms, [cm], list_meta={}, include_object="Object", now=NOW)["rows"][0]
    assert full["object"] == {"kind": "ConfigMap", "apiVersion": "v1", **cm}
    assert list(full["object"])[:2] == ["kind", "apiVersion"]
    none = table(cms, [cm], list_meta={}, include_object="None", now=NOW)["rows"][0]
    assert none["object"] is None
    beta = table(cms, [cm], list_meta={}, api_version="meta.k8s.io/v1beta1", now=NOW)
    assert beta["apiVersion"] == beta["rows"][0]["object"]["apiVersion"] == "meta.k8s.io/v1beta1"


def test_watch_event_after_first_has_null_column_definitions() -> None:
    cm = {"metadata": meta("cfg"), "data": {}}
    out = table(BY_RESOURCE["configmaps"], [cm], list_meta=None, with_columns=False, now=NOW)
    assert out["columnDefinitions"] is None
    assert len(out["rows"]) == 1


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "Metadata"),
        ("", "Metadata"),
        ("Metadata", "Metadata"),
        ("None", "None"),
        ("Object", "Object"),
    ],
)
def test_include_object_option(raw: str | None, expected: str) -> None:
    assert include_object_option(raw) == expected


def test_include_object_option_rejects_unknown() -> None:
    with pytest.raises(StatusError) as err:
        include_object_option("unrecognized")
    assert err.value.code == 400
    assert err.value.message == (
        'Unable to convert to Table as requested: includeObject: Invalid value: "unrecognized": '
        "must be 'Metadata', 'Object', 'None', or empty"
    )


def test_partial_object_metadata_shapes() -> None:
    obj = {"metadata": meta("a"), "spec": {"x": 1}}
    assert partial_object_metadata(obj) == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }
    out = partial_object_metadata_list([obj], {"resourceVersion": "5", "continue": ""})
    assert out == {
        "kind": "PartialObjectMetadataList",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": "5"},
        "items": [partial_object_metadata(obj)],
    }
    empty = partial_object_metadata_list([], {"resourceVersion": "5"}, "meta.k8s.io/v1beta1")
    assert empty["items"] is None
    assert empty["apiVersion"] == "meta.k8s.io/v1beta1"
