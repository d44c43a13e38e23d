"""Request classification and list options, against kube-apiserver's behaviour.

Rows follow apiserver requestinfo_test.go, the URL table of
k8s-api-semantics.md sec. 1, and the validation rules of sec. 2.1/3.1/3.8.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.kube.request import (
    ListOptions,
    RequestInfo,
    check_get_options,
    go_quote,
    list_options,
    list_semantics,
    parse_bool,
    parse_resource_version,
    request_info,
)
from edgeproxy.kube.status import StatusError

# fmt: off
# method, path, query -> verb, prefix, group, version, namespace, resource, subresource, name, parts
RESOURCE_ROWS = [
    ("GET", "/api/v1/namespaces", {}, "list", "api", "", "v1", "", "namespaces", "", "", "namespaces"),
    ("GET", "/api/v1/namespaces/other", {}, "get", "api", "", "v1", "other", "namespaces", "", "other", "namespaces/other"),
    ("PUT", "/api/v1/namespaces/other/status", {}, "update", "api", "", "v1", "other", "namespaces", "status", "other", "namespaces/other/status"),
    ("PUT", "/api/v1/namespaces/other/finalize", {}, "update", "api", "", "v1", "other", "namespaces", "finalize", "other", "namespaces/other/finalize"),
    ("DELETE", "/api/v1/namespaces/other", {}, "delete", "api", "", "v1", "other", "namespaces", "", "other", "namespaces/other"),
    ("DELETE", "/api/v1/namespaces", {}, "deletecollection", "api", "", "v1", "", "namespaces", "", "", "namespaces"),
    ("POST", "/api/v1/namespaces", {}, "create", "api", "", "v1", "", "namespaces", "", "", "namespaces"),
    ("GET", "/api/v1/pods", {}, "list", "api", "", "v1", "", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods", {}, "list", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods/", {}, "list", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods/foo", {}, "get", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", {}, "get", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("HEAD", "/api/v1/namespaces/other/pods", {}, "list", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("POST", "/api/v1/namespaces/other/pods", {}, "create", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("PUT", "/api/v1/namespaces/other/pods/foo", {}, "update", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("PATCH", "/api/v1/namespaces/other/pods/foo", {}, "patch", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", {}, "delete", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("DELETE", "/api/v1/namespaces/other/pods", {}, "deletecollection", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods/foo/status", {}, "get", "api", "", "v1", "other", "pods", "status", "foo", "pods/foo/status"),
    ("PUT", "/api/v1/namespaces/other/pods/foo/status", {}, "update", "api", "", "v1", "other", "pods", "status", "foo", "pods/foo/status"),
    ("GET", "/api/v1/namespaces/other/pods/foo/log", {"follow": "true"}, "get", "api", "", "v1", "other", "pods", "log", "foo", "pods/foo/log"),
    ("POST", "/api/v1/namespaces/other/pods/foo/exec", {}, "create", "api", "", "v1", "other", "pods", "exec", "foo", "pods/foo/exec"),
    ("GET", "/api/v1/namespaces/other/pods/foo/exec", {}, "get", "api", "", "v1", "other", "pods", "exec", "foo", "pods/foo/exec"),
    ("POST", "/api/v1/namespaces/other/pods/foo/attach", {}, "create", "api", "", "v1", "other", "pods", "attach", "foo", "pods/foo/attach"),
    ("POST", "/api/v1/namespaces/other/pods/foo/portforward", {}, "create", "api", "", "v1", "other", "pods", "portforward", "foo", "pods/foo/portforward"),
    ("POST", "/api/v1/namespaces/other/pods/foo/eviction", {}, "create", "api", "", "v1", "other", "pods", "eviction", "foo", "pods/foo/eviction"),
    ("GET", "/api/v1/namespaces/other/pods/foo/proxy/a/b", {}, "get", "api", "", "v1", "other", "pods", "proxy", "foo", "pods/foo/proxy/a/b"),
    ("GET", "/api/v1/nodes/n1/proxy/metrics", {}, "get", "api", "", "v1", "", "nodes", "proxy", "n1", "nodes/n1/proxy/metrics"),
    ("PATCH", "/api/v1/nodes/n1/status", {}, "patch", "api", "", "v1", "", "nodes", "status", "n1", "nodes/n1/status"),
    # ?watch on a collection
    ("GET", "/api/v1/namespaces/other/pods", {"watch": "true"}, "watch", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods", {"watch": "1"}, "watch", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods", {"watch": ""}, "watch", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods", {"watch": "false"}, "list", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods", {"watch": "FALSE"}, "list", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces/other/pods", {"watch": "0"}, "list", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/pods", {"watch": "yes"}, "watch", "api", "", "v1", "", "pods", "", "", "pods"),
    # the get handler ignores ?watch on a named item
    ("GET", "/api/v1/namespaces/other/pods/foo", {"watch": "true"}, "get", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    # legacy /watch/ prefix
    ("GET", "/api/v1/watch/pods", {}, "watch", "api", "", "v1", "", "pods", "", "", "pods"),
    ("GET", "/api/v1/watch/namespaces", {}, "watch", "api", "", "v1", "", "namespaces", "", "", "namespaces"),
    ("GET", "/api/v1/watch/namespaces/other", {}, "watch", "api", "", "v1", "other", "namespaces", "", "other", "namespaces/other"),
    ("GET", "/api/v1/watch/namespaces/other/pods", {}, "watch", "api", "", "v1", "other", "pods", "", "", "pods"),
    ("GET", "/api/v1/watch/namespaces/other/pods/foo", {}, "watch", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("GET", "/apis/apps/v1/watch/namespaces/other/deployments/d", {}, "watch", "apis", "apps", "v1", "other", "deployments", "", "d", "deployments/d"),
    # legacy /proxy/ prefix: no subresource, the rest is the proxied path
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo", {}, "proxy", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo/a/b", {}, "proxy", "api", "", "v1", "other", "pods", "", "foo", "pods/foo/a/b"),
    ("GET", "/api/v1/proxy/nodes/n1/stats", {}, "proxy", "api", "", "v1", "", "nodes", "", "n1", "nodes/n1/stats"),
    # named groups
    ("GET", "/apis/apps/v1/deployments", {}, "list", "apis", "apps", "v1", "", "deployments", "", "", "deployments"),
    ("GET", "/apis/apps/v1/namespaces/other/deployments", {}, "list", "apis", "apps", "v1", "other", "deployments", "", "", "deployments"),
    ("GET", "/apis/apps/v1/namespaces/other/deployments/d/scale", {}, "get", "apis", "apps", "v1", "other", "deployments", "scale", "d", "deployments/d/scale"),
    ("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", {}, "get", "apis", "coordination.k8s.io", "v1", "kube-node-lease", "leases", "", "n1", "leases/n1"),
    ("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {}, "list", "apis", "apiextensions.k8s.io", "v1", "", "customresourcedefinitions", "", "", "customresourcedefinitions"),
    # methods without a Kubernetes verb
    ("OPTIONS", "/api/v1/pods", {}, "", "api", "", "v1", "", "pods", "", "", "pods"),
    ("TRACE", "/api/v1/namespaces/other/pods/foo", {}, "", "api", "", "v1", "other", "pods", "", "foo", "pods/foo"),
    ("get", "/api/v1/namespaces/other/pods", {}, "", "api", "", "v1", "other", "pods", "", "", "pods"),
    # leading/trailing slashes are trimmed; inner empty segments are kept, as upstream
    ("GET", "//api/v1/pods//", {}, "list", "api", "", "v1", "", "pods", "", "", "pods"),
    ("GET", "/api/v1/namespaces//pods", {}, "list", "api", "", "v1", "", "pods", "", "", "pods"),
    ("GET", "/api//v1/pods", {}, "get", "api", "", "", "", "v1", "", "pods", "v1/pods"),
    ("GET", "/api/v1/namespaces/other/pods/foo/status/extra", {}, "get", "api", "", "v1", "other", "pods", "status", "foo", "pods/foo/status/extra"),
]
# fmt: on


@pytest.mark.parametrize(
    (
        "method",
        "path",
        "query",
        "verb",
        "prefix",
        "group",
        "version",
        "ns",
        "res",
        "sub",
        "name",
        "parts",
    ),
    RESOURCE_ROWS,
)
def test_resource_requests(
    method: str,
    path: str,
    query: dict[str, str],
    verb: str,
    prefix: str,
    group: str,
    version: str,
    ns: str,
    res: str,
    sub: str,
    name: str,
    parts: str,
) -> None:
    assert request_info(method, path, query) == RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=prefix,
        api_group=group,
        api_version=version,
        namespace=ns,
        resource=res,
        subresource=sub,
        name=name,
        parts=tuple(parts.split("/")),
    )


@pytest.mark.parametrize(
    ("method", "path", "verb"),
    [
        ("GET", "/", "get"),
        ("GET", "", "get"),
        ("GET", "/version", "get"),
        ("GET", "/healthz", "get"),
        ("GET", "/readyz/etcd", "get"),
        ("GET", "/api", "get"),
        ("GET", "/api/", "get"),
        ("GET", "/api/v1", "get"),
        ("GET", "/api/v1/", "get"),
        ("GET", "/apis", "get"),
        ("GET", "/apis/apps", "get"),
        ("GET", "/apis/apps/v1", "get"),
        ("GET", "/apis/apps/v1/", "get"),
        ("GET", "/openapi/v2", "get"),
        ("GET", "/openapi/v3/apis/apps/v1", "get"),
        ("GET", "/metrics", "get"),
        ("HEAD", "/healthz", "head"),
        ("POST", "/api", "post"),
        ("OPTIONS", "/apis", "options"),
        ("GET", "/other/v1/pods", "get"),
    ],
)
def test_non_resource_requests(method: str, path: str, verb: str) -> None:
    info = request_info(method, path, {"watch": "true"})
    assert info == RequestInfo(is_resource_request=False, path=path, verb=verb)


@pytest.mark.parametrize("path", ["/api/v1/watch", "/api/v1/proxy/", "/apis/apps/v1/watch"])
def test_special_verb_without_resource_fails_like_the_apiserver(path: str) -> None:
    with pytest.raises(StatusError) as err:
        request_info("GET", path, {})
    assert err.value.code == 500
    assert err.value.message == (
        "failed to create RequestInfo: unable to determine kind and namespace from url, " + path
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        ("0", False),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ("fAlSe", False),
        ("", True),
        ("1", True),
        ("true", True),
        ("no", True),
        ("00", True),
        (" false", True),
        ("falsey", True),
    ],
)
def test_parse_bool(value: str | None, expected: bool) -> None:
    assert parse_bool(value) is expected


LIST = request_info("GET", "/api/v1/namespaces/ns/pods", {})
WATCH = request_info("GET", "/api/v1/namespaces/ns/pods", {"watch": "true"})
NAMED_WATCH = request_info("GET", "/api/v1/watch/namespaces/ns/pods/foo", {})


def _opts(**overrides: object) -> ListOptions:
    base = ListOptions(
        label_selector="",
        field_selector="",
        resource_version=None,
        resource_version_match="",
        limit=0,
        continue_token="",
        watch=False,
        allow_watch_bookmarks=False,
        send_initial_events=None,
        timeout_seconds=None,
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


def test_list_options_defaults() -> None:
    assert list_options(LIST, {}) == _opts()


def test_list_options_carries_every_parameter() -> None:
    query = {
        "labelSelector": "app=web,tier!=db",
        "fieldSelector": "spec.nodeName=n1",
        "resourceVersion": "42",
        "resourceVersionMatch": "NotOlderThan",
        "limit": "500",
        "timeoutSeconds": "+30",
        "allowWatchBookmarks": "",
        "watch": "0",
    }
    assert list_options(LIST, query) == _opts(
        label_selector="app=web,tier!=db",
        field_selector="spec.nodeName=n1",
        resource_version="42",
        resource_version_match="NotOlderThan",
        limit=500,
        timeout_seconds=30,
        allow_watch_bookmarks=True,
    )


def test_watch_list_options() -> None:
    query = {
        "watch": "true",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
        "timeoutSeconds": "0",
    }
    assert list_options(WATCH, query) == _opts(
        watch=True,
        send_initial_events=True,
        resource_version_match="NotOlderThan",
        allow_watch_bookmarks=True,
        timeout_seconds=0,
    )


def test_send_initial_events_false_is_not_absent() -> None:
    query = {"watch": "1", "sendInitialEvents": "false", "resourceVersionMatch": "NotOlderThan"}
    assert list_options(WATCH, query).send_initial_events is False


def test_empty_resource_version_is_unset() -> None:
    # url.Values -> ListOptions leaves "" and absent indistinguishable.
    assert list_options(LIST, {"resourceVersion": ""}).resource_version is None


def test_watch_and_limit_continue_on_watch_are_carried_not_rejected() -> None:
    opts = list_options(
        WATCH, {"watch": "1", "limit": "5", "continue": "x", "resourceVersion": "9"}
    )
    assert (opts.watch, opts.limit, opts.continue_token) == (True, 5, "x")


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "abc"}, 'strconv.ParseInt: parsing "abc": invalid syntax'),
        ({"limit": ""}, 'strconv.ParseInt: parsing "": invalid syntax'),
        ({"limit": "1.5"}, 'strconv.ParseInt: parsing "1.5": invalid syntax'),
        ({"limit": " 1"}, 'strconv.ParseInt: parsing " 1": invalid syntax'),
        ({"limit": "1_000"}, 'strconv.ParseInt: parsing "1_000": invalid syntax'),
        ({"limit": "0x10"}, 'strconv.ParseInt: parsing "0x10": invalid syntax'),
        ({"limit": "\uff19"}, 'strconv.ParseInt: parsing "\uff19": invalid syntax'),
        ({"limit": 'a"\n'}, 'strconv.ParseInt: parsing "a\\"\\n": invalid syntax'),
        (
            {"limit": "9223372036854775808"},
            'strconv.ParseInt: parsing "9223372036854775808": value out of range',
        ),
        (
            {"limit": "-9223372036854775809"},
            'strconv.ParseInt: parsing "-9223372036854775809": value out of range',
        ),
        ({"timeoutSeconds": "soon"}, 'strconv.ParseInt: parsing "soon": invalid syntax'),
        # timeoutSeconds is decoded before limit
        ({"limit": "x", "timeoutSeconds": "y"}, 'strconv.ParseInt: parsing "y": invalid syntax'),
        # integers are decoded before validation
        (
            {"limit": "x", "resourceVersionMatch": "Exact"},
            'strconv.ParseInt: parsing "x": invalid syntax',
        ),
    ],
)
def test_malformed_integers_are_bad_requests(query: dict[str, str], message: str) -> None:
    with pytest.raises(StatusError) as err:
        list_options(LIST, query)
    assert (err.value.code, err.value.reason, err.value.message) == (400, "BadRequest", message)


def test_int64_bounds_are_accepted() -> None:
    opts = list_options(LIST, {"limit": "9223372036854775807", "timeoutSeconds": "-5"})
    assert (opts.limit, opts.timeout_seconds) == (2**63 - 1, -5)


FORBIDDEN = "FieldValueForbidden"
UNSUPPORTED = "FieldValueNotSupported"
RVM = "resourceVersionMatch"
NEEDS_RV = "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
WITH_CONTINUE = "Forbidden: resourceVersionMatch is forbidden when continue is provided"
EXACT_ZERO = 'Forbidden: resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
LIST_UNSUPPORTED = 'Unsupported value: "{}": supported values: "Exact", "NotOlderThan", ""'
SIE_LIST = "Forbidden: sendInitialEvents is forbidden for list"
SIE_NEEDS_MATCH = (
    "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
)
MATCH_NEEDS_SIE = (
    "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
)
WATCH_UNSUPPORTED = 'Unsupported value: "{}": supported values: "NotOlderThan"'

INVALID_ROWS = [
    # list
    ({"resourceVersionMatch": "NotOlderThan"}, [(FORBIDDEN, RVM, NEEDS_RV)]),
    ({"resourceVersionMatch": "Exact", "resourceVersion": ""}, [(FORBIDDEN, RVM, NEEDS_RV)]),
    (
        {"resourceVersionMatch": "Exact", "resourceVersion": "5", "continue": "tok"},
        [(FORBIDDEN, RVM, WITH_CONTINUE)],
    ),
    ({"resourceVersionMatch": "Exact", "resourceVersion": "0"}, [(FORBIDDEN, RVM, EXACT_ZERO)]),
    (
        {"resourceVersionMatch": "exact", "resourceVersion": "5"},
        [(UNSUPPORTED, RVM, LIST_UNSUPPORTED.format("exact"))],
    ),
    (
        {"resourceVersionMatch": "Foo", "continue": "tok"},
        [
            (FORBIDDEN, RVM, NEEDS_RV),
            (FORBIDDEN, RVM, WITH_CONTINUE),
            (UNSUPPORTED, RVM, LIST_UNSUPPORTED.format("Foo")),
        ],
    ),
    ({"sendInitialEvents": "true"}, [(FORBIDDEN, "sendInitialEvents", SIE_LIST)]),
    ({"sendInitialEvents": "false"}, [(FORBIDDEN, "sendInitialEvents", SIE_LIST)]),
    (
        {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"},
        [(FORBIDDEN, RVM, NEEDS_RV), (FORBIDDEN, "sendInitialEvents", SIE_LIST)],
    ),
    # watch
    ({"watch": "1", "resourceVersionMatch": "NotOlderThan"}, [(FORBIDDEN, RVM, MATCH_NEEDS_SIE)]),
    ({"watch": "1", "sendInitialEvents": "true"}, [(FORBIDDEN, RVM, SIE_NEEDS_MATCH)]),
    (
        {"watch": "1", "sendInitialEvents": "true", "resourceVersionMatch": "Exact"},
        [(FORBIDDEN, RVM, SIE_NEEDS_MATCH), (UNSUPPORTED, RVM, WATCH_UNSUPPORTED.format("Exact"))],
    ),
    (
        {"watch": "1", "resourceVersionMatch": "Exact", "resourceVersion": "5"},
        [(FORBIDDEN, RVM, MATCH_NEEDS_SIE), (UNSUPPORTED, RVM, WATCH_UNSUPPORTED.format("Exact"))],
    ),
    (
        {
            "watch": "1",
            "sendInitialEvents": "true",
            "resourceVersionMatch": "NotOlderThan",
            "continue": "tok",
        },
        [(FORBIDDEN, RVM, WITH_CONTINUE)],
    ),
]


@pytest.mark.parametrize(("query", "causes"), INVALID_ROWS)
def test_invalid_list_options(query: dict[str, str], causes: list[tuple[str, str, str]]) -> None:
    info = WATCH if "watch" in query else LIST
    with pytest.raises(StatusError) as err:
        list_options(info, query)
    rendered = [f"{field}: {msg}" for _, field, msg in causes]
    joined = rendered[0] if len(rendered) == 1 else "[" + ", ".join(rendered) + "]"
    assert err.value.to_dict() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'ListOptions.meta.k8s.io "" is invalid: {joined}',
        "reason": "Invalid",
        "details": {
            "group": "meta.k8s.io",
            "kind": "ListOptions",
            "causes": [{"reason": r, "message": m, "field": f} for r, f, m in causes],
        },
        "code": 422,
    }


def test_invalid_message_wire_form() -> None:
    with pytest.raises(StatusError) as err:
        list_options(LIST, {"resourceVersionMatch": "NotOlderThan"})
    assert json.loads(err.value.body())["message"] == (
        'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
        "resourceVersionMatch is forbidden unless resourceVersion is provided"
    )


@pytest.mark.parametrize(
    "query",
    [
        {"resourceVersion": "5", "resourceVersionMatch": "Exact"},
        {"resourceVersion": "5", "resourceVersionMatch": "NotOlderThan"},
        {"resourceVersion": "0", "resourceVersionMatch": "NotOlderThan"},
        {"resourceVersion": "0", "continue": "tok"},
        {"continue": "tok", "limit": "10"},
        {"watch": "1", "sendInitialEvents": "1", "resourceVersionMatch": "NotOlderThan"},
        {
            "watch": "1",
            "sendInitialEvents": "0",
            "resourceVersionMatch": "NotOlderThan",
            "resourceVersion": "7",
        },
        {"watch": "1", "resourceVersion": "7"},
        {"watch": "1", "resourceVersion": "7", "continue": "tok"},
    ],
)
def test_valid_list_options(query: dict[str, str]) -> None:
    list_options(WATCH if "watch" in query else LIST, query)


def test_legacy_watch_path_is_validated_as_a_list() -> None:
    # ListResource validates opts.Watch (from ?watch), not the /watch/ route.
    info = request_info("GET", "/api/v1/watch/namespaces/ns/pods", {})
    query = {"sendInitialEvents": "true", "resourceVersionMatch": "NotOlderThan"}
    with pytest.raises(StatusError) as err:
        list_options(info, query)
    assert err.value.code == 422
    assert list_options(info, {}).watch is True


@pytest.mark.parametrize("rv", ["1", "10245", "-1", "abc"])
def test_continue_with_resource_version_is_a_bad_request(rv: str) -> None:
    with pytest.raises(StatusError) as err:
        list_options(LIST, {"continue": "tok", "resourceVersion": rv})
    assert (err.value.code, err.value.message) == (
        400,
        "specifying resource version is not allowed when using continue",
    )


def test_validation_precedes_the_continue_check() -> None:
    query = {"continue": "tok", "resourceVersion": "5", "resourceVersionMatch": "Exact"}
    with pytest.raises(StatusError) as err:
        list_options(LIST, query)
    assert err.value.code == 422


@pytest.mark.parametrize(
    ("field_selector", "expected"),
    [
        ("", "metadata.name=foo"),
        (",", "metadata.name=foo"),
        ("metadata.name=foo", "metadata.name=foo"),
        ("metadata.name==foo", "metadata.name==foo"),
        ("spec.nodeName=n1,metadata.name=foo", "spec.nodeName=n1,metadata.name=foo"),
        ("metadata.name=foo,metadata.name=zzz", "metadata.name=foo,metadata.name=zzz"),
    ],
)
def test_named_watch_adds_the_name(field_selector: str, expected: str) -> None:
    query = {"fieldSelector": field_selector} if field_selector else {}
    opts = list_options(NAMED_WATCH, query)
    assert (opts.watch, opts.field_selector) == (True, expected)


@pytest.mark.parametrize(
    "field_selector",
    [
        "metadata.name=bar",
        "metadata.name!=foo",
        "spec.nodeName=n1",
        "metadata.namespace=ns",
        "metadata.name=bar,metadata.name=foo",
    ],
)
def test_named_watch_rejects_another_name(field_selector: str) -> None:
    with pytest.raises(StatusError) as err:
        list_options(NAMED_WATCH, {"fieldSelector": field_selector})
    assert (err.value.code, err.value.reason, err.value.message) == (
        400,
        "BadRequest",
        "fieldSelector metadata.name doesn't match requested name",
    )


def test_named_watch_escapes_the_name() -> None:
    info = replace(NAMED_WATCH, name="a,b=c\\")
    assert list_options(info, {}).field_selector == "metadata.name=a\\,b\\=c\\\\"
    assert list_options(info, {"fieldSelector": "metadata.name=a\\,b\\=c\\\\"}).watch


def test_get_of_a_named_item_is_not_folded() -> None:
    info = request_info("GET", "/api/v1/namespaces/ns/pods/foo", {})
    assert list_options(info, {"fieldSelector": "x=y"}).field_selector == "x=y"


# sec. 2.1 table, one row per line
SEMANTICS_ROWS = [
    ({}, "most_recent"),
    ({"limit": "10"}, "most_recent"),
    ({"resourceVersion": ""}, "most_recent"),
    ({"resourceVersion": "0"}, "any"),
    ({"resourceVersion": "0", "limit": "10"}, "any"),
    ({"resourceVersion": "0", "resourceVersionMatch": "NotOlderThan"}, "any"),
    ({"resourceVersion": "0", "resourceVersionMatch": "NotOlderThan", "limit": "10"}, "any"),
    ({"resourceVersion": "5"}, "not_older_than"),
    ({"resourceVersion": "5", "limit": "0"}, "not_older_than"),
    ({"resourceVersion": "5", "limit": "10"}, "exact"),
    ({"resourceVersion": "5", "resourceVersionMatch": "NotOlderThan"}, "not_older_than"),
    (
        {"resourceVersion": "5", "resourceVersionMatch": "NotOlderThan", "limit": "10"},
        "not_older_than",
    ),
    ({"resourceVersion": "5", "resourceVersionMatch": "Exact"}, "exact"),
    ({"resourceVersion": "5", "resourceVersionMatch": "Exact", "limit": "10"}, "exact"),
    ({"continue": "tok", "limit": "10"}, "exact"),
    ({"continue": "tok", "resourceVersion": "0"}, "exact"),
    ({"watch": "1", "continue": "tok", "resourceVersion": "5", "limit": "3"}, "not_older_than"),
    # watch-list initial state (sec. 3.8): unset = consistent, "0" = any, N = >= N
    (
        {"watch": "1", "sendInitialEvents": "1", "resourceVersionMatch": "NotOlderThan"},
        "most_recent",
    ),
    (
        {
            "watch": "1",
            "sendInitialEvents": "1",
            "resourceVersionMatch": "NotOlderThan",
            "resourceVersion": "0",
        },
        "any",
    ),
    (
        {
            "watch": "1",
            "sendInitialEvents": "1",
            "resourceVersionMatch": "NotOlderThan",
            "resourceVersion": "5",
            "limit": "3",
        },
        "not_older_than",
    ),
]


@pytest.mark.parametrize(("query", "expected"), SEMANTICS_ROWS)
def test_list_semantics(query: dict[str, str], expected: str) -> None:
    info = WATCH if "watch" in query else LIST
    assert list_semantics(list_options(info, query)) == expected


@pytest.mark.parametrize(
    ("value", "quoted"),
    [
        ("abc", '"abc"'),
        ("", '""'),
        ('a"b\\c', '"a\\"b\\\\c"'),
        ("\n\t\x00\x7f", '"\\n\\t\\x00\\x7f"'),
        ("héllo", '"héllo"'),
        ("\u00a0\u2028", '"\\u00a0\\u2028"'),
        ("\U0001f600", '"\U0001f600"'),
        ("\U000e0001", '"\\U000e0001"'),
    ],
)
def test_go_quote(value: str, quoted: str) -> None:
    assert go_quote(value) == quoted


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "limit",
                "timeoutSeconds",
                "watch",
                "continue",
                "resourceVersion",
                "resourceVersionMatch",
                "sendInitialEvents",
                "fieldSelector",
            ]
        ),
        st.text(max_size=8),
    )
)
def test_list_options_only_raises_status_errors(query: dict[str, str]) -> None:
    for info in (LIST, WATCH, NAMED_WATCH):
        try:
            opts = list_options(info, query)
        except StatusError as err:
            # 500 only for a watch's unparsable resourceVersion, as kube-apiserver.
            watch = info is not LIST or parse_bool(query.get("watch"))
            assert err.code in (400, 422) or (err.code == 500 and watch), err
        else:
            assert list_semantics(opts) in ("most_recent", "any", "not_older_than", "exact")


# -- resourceVersion: parsed as the apiserver's storage layer parses it (Finding 5) ----


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", 0), ("0", 0), ("1", 1), ("00010", 10), (str(2**64 - 1), 2**64 - 1)],
)
def test_parse_resource_version(value: str, expected: int) -> None:
    assert parse_resource_version(value) == expected


# Everything Python's int() would take but Go's strconv.ParseUint(v, 10, 64) refuses.
BAD_RVS = ["abc", "0x10", "1.5", "-1", "+5", " 5", "5 ", "1_0", "\u0663", "1e3"]


@pytest.mark.parametrize("value", BAD_RVS)
def test_unparsable_resource_version_on_a_list_is_a_bad_request(value: str) -> None:
    with pytest.raises(StatusError) as caught:
        list_options(LIST, {"resourceVersion": value})
    quoted = go_quote(value)
    assert caught.value.code == 400 and caught.value.reason == "BadRequest"
    assert caught.value.message == (
        f"invalid resource version: resourceVersion: Invalid value: {quoted}: "
        f"strconv.ParseUint: parsing {quoted}: invalid syntax"
    )


@pytest.mark.parametrize("info", [WATCH, NAMED_WATCH])
def test_unparsable_resource_version_on_a_watch_is_a_bare_500(info: RequestInfo) -> None:
    with pytest.raises(StatusError) as caught:
        list_options(info, {"resourceVersion": "-1"})
    doc = json.loads(caught.value.body())
    # kube-apiserver's answer (kubernetes issue #139485): no reason, no details.
    assert doc == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'resourceVersion: Invalid value: "-1": '
        'strconv.ParseUint: parsing "-1": invalid syntax',
        "code": 500,
    }


def test_resource_version_out_of_uint64_range() -> None:
    big = str(2**64)
    with pytest.raises(StatusError) as caught:
        list_options(LIST, {"resourceVersion": big, "resourceVersionMatch": "NotOlderThan"})
    assert caught.value.message.endswith(f'parsing "{big}": value out of range')


def test_continue_check_precedes_the_resource_version_parse() -> None:
    with pytest.raises(StatusError) as caught:
        list_options(LIST, {"continue": "x", "resourceVersion": "abc"})
    assert caught.value.message == "specifying resource version is not allowed when using continue"


def test_get_ignores_list_parameters_but_parses_its_resource_version() -> None:
    check_get_options({"limit": "abc", "resourceVersionMatch": "Bogus", "watch": "x"})
    check_get_options({"resourceVersion": "0"})
    with pytest.raises(StatusError) as caught:
        check_get_options({"resourceVersion": "1.5"})
    assert caught.value.code == 500
