"""PATCH semantics of the simulator: RFC 6902, RFC 7386, strategic merge, apply."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeproxy.kube.status import StatusError
from edgeproxy.sim.patch import (
    APPLY_PATCH,
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    apply_patch,
)

MEDIA_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH]


def patched(content_type: str, original: dict[str, Any], patch: Any, kind: str = "Pod") -> Any:
    body = patch if isinstance(patch, bytes) else json.dumps(patch).encode()
    before = copy.deepcopy(original)
    result = apply_patch(content_type, original, body, kind)
    assert original == before, "the original object was mutated"
    return result


def status_of(content_type: str, original: dict[str, Any], patch: Any, kind: str = "Pod") -> Any:
    with pytest.raises(StatusError) as info:
        patched(content_type, original, patch, kind)
    return info.value


# --- RFC 6902 appendix A ----------------------------------------------------------

RFC6902_OK = [
    ({"foo": "bar"}, [{"op": "add", "path": "/baz", "value": "qux"}], {"baz": "qux", "foo": "bar"}),
    (
        {"foo": ["bar", "baz"]},
        [{"op": "add", "path": "/foo/1", "value": "qux"}],
        {"foo": ["bar", "qux", "baz"]},
    ),
    ({"baz": "qux", "foo": "bar"}, [{"op": "remove", "path": "/baz"}], {"foo": "bar"}),
    ({"foo": ["bar", "qux", "baz"]}, [{"op": "remove", "path": "/foo/1"}], {"foo": ["bar", "baz"]}),
    (
        {"baz": "qux", "foo": "bar"},
        [{"op": "replace", "path": "/baz", "value": "boo"}],
        {"baz": "boo", "foo": "bar"},
    ),
    (
        {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
        [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
        {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
    ),
    (
        {"foo": ["all", "grass", "cows", "eat"]},
        [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
        {"foo": ["all", "cows", "eat", "grass"]},
    ),
    (
        {"baz": "qux", "foo": ["a", 2, "c"]},
        [
            {"op": "test", "path": "/baz", "value": "qux"},
            {"op": "test", "path": "/foo/1", "value": 2},
        ],
        {"baz": "qux", "foo": ["a", 2, "c"]},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
        {"foo": "bar", "child": {"grandchild": {}}},
    ),
    (
        {"foo": "bar"},
        [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
        {"foo": "bar", "baz": "qux"},
    ),
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": 10}], {"/": 9, "~1": 10}),
    (
        {"foo": ["bar"]},
        [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
        {"foo": ["bar", ["abc", "def"]]},
    ),
    (
        {"a": {"b": 1}},
        [{"op": "copy", "from": "/a", "path": "/c"}, {"op": "replace", "path": "/c/b", "value": 2}],
        {"a": {"b": 1}, "c": {"b": 2}},
    ),
    ({"a": 1}, [{"op": "add", "path": "/m~1n", "value": 2}], {"a": 1, "m/n": 2}),
    ({"a": 1}, [{"op": "test", "path": "/missing", "value": None}], {"a": 1}),
    ({"a": 1}, None, {"a": 1}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC6902_OK)
def test_json_patch_rfc6902_examples(original: Any, patch: Any, expected: Any) -> None:
    assert patched(JSON_PATCH, original, patch) == expected


RFC6902_FAIL = [
    ({"baz": "qux"}, [{"op": "test", "path": "/baz", "value": "bar"}]),  # A.9
    ({"foo": "bar"}, [{"op": "add", "path": "/baz/bat", "value": "qux"}]),  # A.12
    ({"/": 9, "~1": 10}, [{"op": "test", "path": "/~01", "value": "10"}]),  # A.15
    ({"a": True}, [{"op": "test", "path": "/a", "value": 1}]),
    ({"a": 1}, [{"op": "remove", "path": "/b"}]),
    ({"a": 1}, [{"op": "replace", "path": "/b", "value": 1}]),
    ({"a": [1]}, [{"op": "add", "path": "/a/2", "value": 1}]),
    ({"a": [1]}, [{"op": "remove", "path": "/a/01"}]),
    ({"a": {}}, [{"op": "move", "from": "/a", "path": "/a/b"}]),
    ({"a": 1}, [{"op": "frobnicate", "path": "/a"}]),
    ({"a": 1}, [{"op": "add", "value": 1}]),
    ({"a": 1}, [{"op": "add", "path": "/b"}]),
    ({"a": 1}, [{"op": "add", "path": "a", "value": 1}]),
    ({"a": 1}, [{"op": "add", "path": "/~2", "value": 1}]),
]


@pytest.mark.parametrize(("original", "patch"), RFC6902_FAIL)
def test_json_patch_failed_operation_is_422_like_kube_apiserver(original: Any, patch: Any) -> None:
    err = status_of(JSON_PATCH, original, patch)
    assert (err.code, err.reason) == (422, "Invalid")
    assert err.message == "the server rejected our request due to an error in our request"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", None),
        (b"", None),
        (b'{"op": "add"}', "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
        (b'["x"]', "json: cannot unmarshal string into Go value of type jsonpatch.Operation"),
    ],
)
def test_json_patch_undecodable_is_400(body: bytes, message: str | None) -> None:
    err = status_of(JSON_PATCH, {"a": 1}, body)
    assert (err.code, err.reason) == (400, "BadRequest")
    if message is not None:
        assert err.message == message


def test_json_patch_too_many_operations_is_413() -> None:
    ops = [{"op": "test", "path": "/a", "value": 1}] * 10001
    err = status_of(JSON_PATCH, {"a": 1}, ops)
    assert err.code == 413
    assert err.message == "The allowed maximum operations in a JSON patch is 10000, got 10001"


def test_json_patch_leaving_a_non_object_is_invalid() -> None:
    err = status_of(JSON_PATCH, {"a": 1}, [{"op": "replace", "path": "", "value": [1]}])
    assert (err.code, err.reason) == (422, "Invalid")
    assert "cannot unmarshal array" in err.message


# --- RFC 7386 appendix A -------------------------------------------------------------

RFC7386 = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    # merge patch never merges lists, even containers of a Pod
    ({"c": [{"name": "a"}, {"name": "b"}]}, {"c": [{"name": "b"}]}, {"c": [{"name": "b"}]}),
]


@pytest.mark.parametrize(("original", "patch", "expected"), RFC7386)
def test_merge_patch_rfc7386_examples(original: Any, patch: Any, expected: Any) -> None:
    assert patched(MERGE_PATCH, original, patch) == expected


@pytest.mark.parametrize("body", [b"{", b"", b"null", b'"bar"', b"1"])
def test_merge_patch_undecodable_is_400_invalid_json_patch(body: bytes) -> None:
    err = status_of(MERGE_PATCH, {"a": "foo"}, body)
    assert (err.code, err.message) == (400, "Invalid JSON Patch")


def test_merge_patch_array_is_invalid_object() -> None:
    assert status_of(MERGE_PATCH, {"a": "b"}, ["c"]).code == 422


POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-0", "labels": {"app": "web", "tier": "fe"}},
    "spec": {
        "containers": [
            {
                "name": "app",
                "image": "app:1",
                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                "ports": [{"containerPort": 80, "protocol": "TCP"}],
            },
            {"name": "sidecar", "image": "side:1"},
        ],
        "tolerations": [{"key": "a", "operator": "Exists"}],
    },
}


@pytest.mark.parametrize(
    ("patch", "labels"),
    [
        # exactly what `kubectl label pod web-0 env=prod` / `env-` send
        ({"metadata": {"labels": {"env": "prod"}}}, {"app": "web", "tier": "fe", "env": "prod"}),
        ({"metadata": {"labels": {"app": "api"}}}, {"app": "api", "tier": "fe"}),
        ({"metadata": {"labels": {"tier": None}}}, {"app": "web"}),
        ({"metadata": {"labels": None}}, None),
    ],
)
@pytest.mark.parametrize("content_type", [MERGE_PATCH, STRATEGIC_MERGE_PATCH])
def test_kubectl_label(content_type: str, patch: Any, labels: Any) -> None:
    result = patched(content_type, POD, patch)
    assert result["metadata"].get("labels") == labels
    assert result["spec"] == POD["spec"]


# --- strategic merge ------------------------------------------------------------------


def containers(result: dict[str, Any]) -> list[Any]:
    return [(c["name"], c.get("image")) for c in result["spec"]["containers"]]


SMP_CONTAINERS = [
    (
        {"spec": {"containers": [{"name": "sidecar", "image": "side:2"}]}},
        [("app", "app:1"), ("sidecar", "side:2")],
    ),
    (
        {"spec": {"containers": [{"name": "new", "image": "new:1"}]}},
        [("new", "new:1"), ("app", "app:1"), ("sidecar", "side:1")],  # new items first
    ),
    ({"spec": {"containers": [{"name": "app", "$patch": "delete"}]}}, [("sidecar", "side:1")]),
    (
        {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}},
        [("only", "o:1")],
    ),
    (
        {
            "spec": {
                "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                "containers": [{"name": "app", "image": "app:2"}],
            }
        },
        [("sidecar", "side:1"), ("app", "app:2")],
    ),
]


@pytest.mark.parametrize(("patch", "expected"), SMP_CONTAINERS)
def test_strategic_merge_containers_by_name(patch: Any, expected: Any) -> None:
    assert containers(patched(STRATEGIC_MERGE_PATCH, POD, patch)) == expected


def test_strategic_merge_nested_env_and_ports_by_key() -> None:
    patch = {
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "env": [{"name": "B", "value": "3"}, {"name": "A", "$patch": "delete"}],
                    "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
                }
            ]
        }
    }
    app = patched(STRATEGIC_MERGE_PATCH, POD, patch)["spec"]["containers"][0]
    assert app["image"] == "app:1"
    assert app["env"] == [{"name": "B", "value": "3"}]
    assert app["ports"] == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"},
        {"containerPort": 443},
    ]


def test_strategic_merge_lists_without_merge_key_are_replaced() -> None:
    patch = {"spec": {"tolerations": [{"key": "b", "operator": "Exists"}]}}
    result = patched(STRATEGIC_MERGE_PATCH, POD, patch)
    assert result["spec"]["tolerations"] == [{"key": "b", "operator": "Exists"}]


def test_strategic_merge_service_ports_by_port() -> None:
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    patch = {"spec": {"ports": [{"port": 80, "targetPort": 9090}]}}
    result = patched(STRATEGIC_MERGE_PATCH, svc, patch, kind="Service")
    assert result["spec"]["ports"] == [{"port": 80, "targetPort": 9090}, {"port": 443}]


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"metadata": {"finalizers": ["b", "c"]}}, ["a", "b", "c"]),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}, ["b"]),
        ({"metadata": {"finalizers": None}}, None),
        (
            {"metadata": {"$setElementOrder/finalizers": ["b", "a"]}},
            ["b", "a"],
        ),
    ],
)
def test_strategic_merge_finalizers_union(patch: Any, expected: Any) -> None:
    obj = {"metadata": {"name": "x", "finalizers": ["a", "b"]}}
    assert patched(STRATEGIC_MERGE_PATCH, obj, patch)["metadata"].get("finalizers") == expected


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"metadata": {"labels": {"$patch": "replace", "x": "y"}}}, {"x": "y"}),
        ({"metadata": {"labels": {"$patch": "delete"}}}, {}),
    ],
)
def test_strategic_merge_map_directives(patch: Any, expected: Any) -> None:
    assert patched(STRATEGIC_MERGE_PATCH, POD, patch)["metadata"]["labels"] == expected


def test_strategic_merge_retain_keys() -> None:
    deploy = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    result = patched(STRATEGIC_MERGE_PATCH, deploy, patch, kind="Deployment")
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_strategic_merge_conditions_by_type_and_no_directive_stored() -> None:
    pod = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
    patch = {
        "status": {
            "$setElementOrder/conditions": [{"type": "PodScheduled"}, {"type": "Ready"}],
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "PodScheduled"}],
        },
        "spec": {"volumes": [{"name": "v", "emptyDir": {"$patch": "replace"}}]},
    }
    result = patched(STRATEGIC_MERGE_PATCH, pod, patch)
    assert result["status"]["conditions"] == [
        {"type": "PodScheduled"},
        {"type": "Ready", "status": "True"},
    ]
    assert "$" not in json.dumps(result)


@pytest.mark.parametrize(
    ("patch", "code"),
    [
        (b"{nope", 400),
        (b"[1]", 400),
        ({"metadata": {"labels": {"$patch": "bogus"}}}, 500),
        ({"spec": {"containers": [{"image": "no-name"}]}}, 500),
        ({"spec": {"containers": [{"$patch": "merge"}]}}, 500),
        ({"spec": {"strategy": {"$retainKeys": "type"}}}, 400),
        ({"spec": {"strategy": {"$retainKeys": ["type"], "other": 1}}}, 400),
        ({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}, 400),
        ({"metadata": {"$setElementOrder/finalizers": "a"}}, 400),
    ],
)
def test_strategic_merge_errors(patch: Any, code: int) -> None:
    assert status_of(STRATEGIC_MERGE_PATCH, POD, patch).code == code


def test_strategic_merge_on_custom_resource_is_415() -> None:
    err = status_of(STRATEGIC_MERGE_PATCH, {"spec": {}}, {"spec": {"a": 1}}, kind="Widget")
    assert (err.code, err.reason) == (415, "UnsupportedMediaType")
    assert err.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    )


# --- server-side apply, media types ----------------------------------------------------


def test_apply_yaml_merges_config_into_object() -> None:
    body = b"""
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  labels: {env: prod}
  annotations: {at: 2024-01-01T00:00:00Z}
spec:
  containers:
  - name: app
    image: app:2
"""
    result = patched(APPLY_PATCH, POD, body)
    assert result["metadata"]["labels"] == {"app": "web", "tier": "fe", "env": "prod"}
    assert result["metadata"]["annotations"] == {"at": "2024-01-01T00:00:00Z"}
    assert containers(result) == [("app", "app:2"), ("sidecar", "side:1")]


@pytest.mark.parametrize("body", [b"- a\n- b\n", b"a: [", b"x: !!timestamp 2020-02-30", b"\xff"])
def test_apply_yaml_undecodable_is_400(body: bytes) -> None:
    assert status_of(APPLY_PATCH, POD, body).code == 400


def test_media_type_parameters_are_ignored() -> None:
    result = patched(MERGE_PATCH + "; charset=utf-8", POD, {"metadata": {"labels": None}})
    assert "labels" not in result["metadata"]


@pytest.mark.parametrize("content_type", ["application/json", "", "text/plain", "application/yaml"])
def test_unknown_media_type_is_415(content_type: str) -> None:
    err = status_of(content_type, POD, {})
    assert (err.code, err.reason) == (415, "UnsupportedMediaType")
    # Not a patch type: go-restful refuses it before the patch handler runs.
    assert err.message == "415: Unsupported Media Type"
    assert err.to_dict()["details"] == {}


# --- fuzz: only StatusError ever escapes -----------------------------------------------

PLAIN_KEYS = st.sampled_from(["a", "b", "name", "containers", "finalizers", "metadata", "spec"])
DIRECTIVES = st.sampled_from(
    ["$patch", "$retainKeys", "$setElementOrder/containers", "$deleteFromPrimitiveList/finalizers"]
)
KEYS = PLAIN_KEYS | st.sampled_from(["ports", "env"]) | DIRECTIVES
SCALARS = (
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["a", "delete", "replace"])
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=20,
)
ORIGINALS = st.dictionaries(
    PLAIN_KEYS,
    st.recursive(
        SCALARS,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(PLAIN_KEYS, inner, max_size=4),
        max_leaves=20,
    ),
    max_size=5,
)
POINTERS = st.lists(st.sampled_from(["a", "b", "0", "1", "-", "~0", "~1", "~", "name"]), max_size=3)
OPS = st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "x"])},
    optional={
        "path": POINTERS.map(lambda p: "".join("/" + t for t in p)) | SCALARS,
        "from": POINTERS.map(lambda p: "".join("/" + t for t in p)),
        "value": JSON_VALUES,
    },
)
BODIES = (
    st.binary(max_size=64)
    | JSON_VALUES.map(lambda v: json.dumps(v).encode())
    | st.lists(OPS, max_size=5).map(lambda v: json.dumps(v).encode())
)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    content_type=st.sampled_from([*MEDIA_TYPES, "application/json"]),
    original=ORIGINALS,
    body=BODIES,
    kind=st.sampled_from(["Pod", "Service", "Widget"]),
)
def test_fuzz_only_status_errors_escape(
    content_type: str, original: dict[str, Any], body: bytes, kind: str
) -> None:
    before = copy.deepcopy(original)
    try:
        result = apply_patch(content_type, original, body, kind)
    except StatusError:
        pass
    else:
        assert isinstance(result, dict)
        if content_type == STRATEGIC_MERGE_PATCH:
            assert not _directive_keys(result)
    assert original == before


def _directive_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [k for k in value if k == "$patch" or k == "$retainKeys" or k.startswith("$")]
        return found + [k for v in value.values() for k in _directive_keys(v)]
    if isinstance(value, list):
        return [k for v in value for k in _directive_keys(v)]
    return []
