"""The official `kubernetes` Python client against the simulator, plain and TLS.

The client is configured only from the kubeconfig the simulator writes, as a
user would. Covers list, chunked list (limit/continue on one snapshot),
watch resumed from a resourceVersion, 410 after compaction for both a watch
and a continue token, selectors, and error mapping.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp
import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from edgeproxy.testing import SimProcess

# conftest's `api` fixture: api(sim, method, path, body=None, content_type=...) -> ApiResponse
Api = Callable[..., Any]
SslFor = Callable[[SimProcess], ssl.SSLContext | None]


@pytest.fixture(params=["http", "tls", "real"])
def target(request: pytest.FixtureRequest) -> SimProcess:
    """The simulator over HTTP and HTTPS, and the real kube-apiserver it imitates."""
    fixture = {"http": "sim", "tls": "sim_tls", "real": "real"}[request.param]
    sim: SimProcess = request.getfixturevalue(fixture)
    return sim


@pytest.fixture
def core(target: SimProcess) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=str(target.kubeconfig))
    try:
        yield client.CoreV1Api(api_client)
    finally:
        api_client.close()


@pytest.fixture
def namespace(target: SimProcess, make_namespace: Callable[[SimProcess], str]) -> str:
    return make_namespace(target)


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels or {}},
        "data": data,
    }


def bulk_create(sim: SimProcess, ssl_for: SslFor, namespace: str, names: list[str]) -> None:
    """POST many ConfigMaps concurrently over a few keep-alive connections."""

    async def run() -> None:
        url = f"{sim.url}/api/v1/namespaces/{namespace}/configmaps"
        connector = aiohttp.TCPConnector(limit=16, ssl=ssl_for(sim) or False)
        async with aiohttp.ClientSession(connector=connector) as session:
            todo = iter(names)

            async def worker() -> None:
                for name in todo:
                    async with session.post(url, json=configmap(name, {"bulk": "yes"})) as r:
                        assert r.status == 201, await r.text()

            async with asyncio.TaskGroup() as group:
                for i in range(16):
                    group.create_task(worker(), name=f"bulk-create-{i}")

    asyncio.run(run())


def error_status(exc: ApiException) -> Any:
    """The metav1.Status the server sent with an error."""
    return json.loads(exc.body)


# -- list -------------------------------------------------------------------


def test_list_namespaces_and_configmaps(
    core: client.CoreV1Api, namespace: str, target: SimProcess, api: Api
) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system", "kube-public", "kube-node-lease", namespace} <= names
    assert core.list_namespaced_config_map(namespace).items == []
    created = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="one"), data={"k": "v"})
    )
    assert created.metadata.uid and created.metadata.resource_version
    listed = core.list_namespaced_config_map(namespace)
    assert [cm.metadata.name for cm in listed.items] == ["one"]
    assert listed.items[0].data == {"k": "v"}
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    everywhere = core.list_config_map_for_all_namespaces()
    assert (namespace, "one") in {
        (cm.metadata.namespace, cm.metadata.name) for cm in everywhere.items
    }
    ns = core.read_namespace(namespace)
    assert ns.metadata.name == namespace and ns.status.phase == "Active"


def test_paginate_2500(
    core: client.CoreV1Api, namespace: str, target: SimProcess, client_ssl: SslFor, api: Api
) -> None:
    names = [f"cm-{i:04d}" for i in range(2500)]
    bulk_create(target, client_ssl, namespace, names)
    pages = []
    token = None
    while True:
        page = core.list_namespaced_config_map(namespace, limit=500, _continue=token)
        pages.append(page)
        if len(pages) == 1:
            # Changes after the first page must not show on later pages: every
            # page is read from the first page's snapshot.
            post = api(
                target,
                "POST",
                f"/api/v1/namespaces/{namespace}/configmaps",
                configmap("cm-9999"),
            )
            assert post.status == 201
            gone = api(target, "DELETE", f"/api/v1/namespaces/{namespace}/configmaps/cm-2000")
            assert gone.status == 200
        token = page.metadata._continue
        if not token:
            break
        assert len(pages) < 10, "pagination does not end"
    assert [len(p.items) for p in pages] == [500] * 5
    assert {p.metadata.resource_version for p in pages} == {pages[0].metadata.resource_version}
    assert [p.metadata.remaining_item_count for p in pages] == [2000, 1500, 1000, 500, None]
    assert all(p.metadata._continue for p in pages[:-1])
    seen = [cm.metadata.name for p in pages for cm in p.items]
    assert seen == names  # each exactly once, in key order, cm-2000 still there
    # The live state has moved on.
    live = core.list_namespaced_config_map(namespace, limit=1, _continue=None)
    assert int(live.metadata.resource_version) > int(pages[0].metadata.resource_version)
    assert live.metadata.remaining_item_count == 2499


# -- watch ------------------------------------------------------------------


def test_watch_from_resource_version(
    core: client.CoreV1Api, namespace: str, target: SimProcess, api: Api, make_namespace: Any
) -> None:
    base = f"/api/v1/namespaces/{namespace}/configmaps"
    core.create_namespaced_config_map(namespace, configmap("old"))
    rv = core.list_namespaced_config_map(namespace).metadata.resource_version

    def write(method: str, path: str, body: Any = None, ct: str = "application/json") -> str:
        resp = api(target, method, path, body, content_type=ct)
        assert resp.status in (200, 201), resp.body
        return str(resp.json()["metadata"].get("resourceVersion", ""))

    other = make_namespace(target)
    expected = [
        ("ADDED", "a", write("POST", base, configmap("a", x="1"))),
        ("MODIFIED", "old", write("PATCH", f"{base}/old", {"data": {"y": "2"}}, MERGE)),
    ]
    write("POST", f"/api/v1/namespaces/{other}/configmaps", configmap("elsewhere"))
    # An immediate delete answers with a Success Status, which carries no
    # resourceVersion: the deletion's RV is the one its DELETED event carries.
    expected.append(("DELETED", "a", write("DELETE", f"{base}/a")))
    expected.append(("ADDED", "b", write("POST", base, configmap("b"))))

    events = []
    stream = watch.Watch().stream(
        core.list_namespaced_config_map, namespace, resource_version=rv, timeout_seconds=1
    )
    for event in stream:
        obj = event["object"]
        events.append((event["type"], obj.metadata.name, obj.metadata.resource_version))
        if len(events) == 1:
            # A change made while the stream is open arrives after the replay.
            expected.append(
                ("MODIFIED", "b", write("PATCH", f"{base}/b", {"data": {"z": "3"}}, MERGE))
            )
    deleted = [i for i, e in enumerate(expected) if e[0] == "DELETED"]
    assert expected[deleted[0]][2] == ""
    # The DELETED event's RV lies between the writes before and after it.
    expected[deleted[0]] = (*expected[deleted[0]][:2], events[deleted[0]][2])
    assert events == expected
    rvs = [int(e[2]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == len(rvs) and rvs[0] > int(rv)


MERGE = "application/merge-patch+json"


@pytest.mark.parametrize("with_timeout", [True, False], ids=["timeout", "client-retry"])
def test_watch_after_compaction_is_gone(
    core: client.CoreV1Api, namespace: str, target: SimProcess, with_timeout: bool
) -> None:
    rv = core.create_namespaced_config_map(namespace, configmap("c1")).metadata.resource_version
    core.create_namespaced_config_map(namespace, configmap("c2"))
    target.compact()
    core.create_namespaced_config_map(namespace, configmap("c3"))
    kwargs: dict[str, Any] = {"resource_version": rv, "_request_timeout": 10}
    if with_timeout:
        kwargs["timeout_seconds"] = 5
    # The server answers 200 with one ERROR event (Status 410 Expired) and EOF.
    # The client raises it as an ApiException; without timeout_seconds it first
    # retries once from the same RV, gets the same ERROR and then raises.
    with pytest.raises(ApiException) as info:
        for event in watch.Watch().stream(core.list_namespaced_config_map, namespace, **kwargs):
            pytest.fail(f"unexpected event {event['type']}")
    assert info.value.status == 410
    assert str(info.value.reason).startswith("Expired: too old resource version: ")
    assert rv in str(info.value.reason)


def test_continue_token_after_compaction_is_gone(
    core: client.CoreV1Api, namespace: str, target: SimProcess
) -> None:
    for name in ("p1", "p2", "p3"):
        core.create_namespaced_config_map(namespace, configmap(name))
    first = core.list_namespaced_config_map(namespace, limit=1)
    assert [cm.metadata.name for cm in first.items] == ["p1"]
    core.create_namespaced_config_map(namespace, configmap("p4"))
    target.compact()
    with pytest.raises(ApiException) as info:
        core.list_namespaced_config_map(namespace, limit=1, _continue=first.metadata._continue)
    assert info.value.status == 410
    body = error_status(info.value)
    assert body["kind"] == "Status" and body["reason"] == "Expired" and body["code"] == 410
    # The Status offers an inconsistent continuation from the latest state.
    fresh = body["metadata"]["continue"]
    rest = core.list_namespaced_config_map(namespace, limit=10, _continue=fresh)
    assert [cm.metadata.name for cm in rest.items] == ["p2", "p3", "p4"]
    assert not rest.metadata._continue


# -- selectors ----------------------------------------------------------------


def test_label_and_field_selectors(core: client.CoreV1Api, namespace: str) -> None:
    for name, labels in [
        ("web-front", {"app": "web", "tier": "front"}),
        ("web-back", {"app": "web", "tier": "back"}),
        ("db", {"app": "db", "tier": "back"}),
        ("bare", {}),
    ]:
        core.create_namespaced_config_map(namespace, configmap(name, labels))

    def names(**kwargs: Any) -> list[str]:
        items = core.list_namespaced_config_map(namespace, **kwargs).items
        return sorted(cm.metadata.name for cm in items)

    assert names(label_selector="app=web") == ["web-back", "web-front"]
    assert names(label_selector="app in (web,db),tier!=front") == ["db", "web-back"]
    assert names(label_selector="!tier") == ["bare"]
    assert names(label_selector="tier notin (back)") == ["bare", "web-front"]
    assert names(field_selector="metadata.name=db") == ["db"]
    assert names(field_selector="metadata.name!=db", label_selector="app") == [
        "web-back",
        "web-front",
    ]
    # Selectors give no remainingItemCount, but paging still works.
    page = core.list_namespaced_config_map(namespace, label_selector="tier", limit=2)
    assert len(page.items) == 2 and page.metadata._continue
    assert page.metadata.remaining_item_count is None

    with pytest.raises(ApiException) as info:
        core.list_namespaced_config_map(namespace, label_selector="app in (web")
    assert info.value.status == 400
    assert error_status(info.value)["reason"] == "BadRequest"


def test_pod_field_selectors(core: client.CoreV1Api, namespace: str) -> None:
    # Node names of this test's own: the real apiserver is shared by the session.
    node_a, node_b = f"{namespace}-a", f"{namespace}-b"
    for name, node in [("a1", node_a), ("a2", node_a), ("b1", node_b)]:
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "nginx"}]},
        }
        core.create_namespaced_pod(namespace, body)
    pods = core.list_namespaced_pod(namespace, field_selector=f"spec.nodeName={node_a}").items
    assert sorted(p.metadata.name for p in pods) == ["a1", "a2"]
    # kubelet's view: its pods in every namespace.
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node_b}").items
    assert [(p.metadata.namespace, p.metadata.name) for p in pods] == [(namespace, "b1")]
    with pytest.raises(ApiException) as info:
        core.list_namespaced_pod(namespace, field_selector="spec.foo=bar")
    assert info.value.status == 400
    assert error_status(info.value)["message"] == "field label not supported: spec.foo"


# -- errors -------------------------------------------------------------------


def test_missing_object_is_not_found(core: client.CoreV1Api, namespace: str) -> None:
    with pytest.raises(ApiException) as info:
        core.read_namespaced_config_map("nope", namespace)
    assert info.value.status == 404
    body = error_status(info.value)
    assert body["reason"] == "NotFound"
    assert body["message"] == 'configmaps "nope" not found'
    # StatusDetails fields are omitempty: the core group's "" is left out.
    assert body["details"] == {"name": "nope", "kind": "configmaps"}
    with pytest.raises(ApiException) as info:
        core.read_namespace(f"{namespace}-missing")
    assert info.value.status == 404
    assert error_status(info.value)["reason"] == "NotFound"
