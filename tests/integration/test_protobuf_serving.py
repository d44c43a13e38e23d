"""Protobuf through the proxy: gets, lists and watches as kube-apiserver answers them.

client-go asks for `application/vnd.kubernetes.protobuf, application/json`
for built-in kinds. Through the proxy such a client must get protobuf that
decodes to exactly what kube-apiserver's own protobuf answer holds, from the
cache, filtered, offline too; CRDs answer JSON (or 406 to a client that
accepts only protobuf), as kube-apiserver's CRD handler does.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cloud, wait_link
from edgeproxy.clientgo import Informer
from edgeproxy.kube.protobuf import decode_object, decode_watch_frames
from edgeproxy.testing import ProxyProcess

PROTOBUF = "application/vnd.kubernetes.protobuf"
CLIENT_GO = f"{PROTOBUF}, application/json"
NS = "proto-serve"
CM = f"/api/v1/namespaces/{NS}/configmaps"

pytestmark = pytest.mark.parametrize("module_cloud", ["real"], indirect=True)


def _get(
    url: str, path: str, accept: str, token: str | None = None, **kw: Any
) -> tuple[int, str, bytes]:
    headers = {"Accept": accept, "User-Agent": "informer/v0.0.0"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url + path, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20, **kw) as resp:
            return resp.status, resp.headers["Content-Type"], bytes(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.headers["Content-Type"], bytes(err.read())


def _direct(cloud: Cloud, path: str, accept: str) -> tuple[int, str, bytes]:
    return _get(cloud.direct_url, path, accept, cloud.token, context=cloud.upstream.ssl_context())


def _items(body: bytes) -> list[dict[str, Any]]:
    return sorted(decode_object(body)["items"], key=lambda o: str(o["metadata"]["name"]))


@pytest.fixture(scope="module")
def setup(module_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    real = module_cloud.upstream
    assert real.request("POST", "/api/v1/namespaces", {"metadata": {"name": NS}})[0] == 201
    for name in ("a", "b", "hidden-c"):
        body = {"metadata": {"name": name, "labels": {"app": name[0]}}, "data": {"k": name}}
        assert real.request("POST", CM, body)[0] == 201
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    assert real.request("POST", f"/api/v1/namespaces/{NS}/pods", pod)[0] == 201
    workdir = tmp_path_factory.mktemp("proto-proxy")
    with ProxyProcess(
        module_cloud.kubeconfig, "--drop-name-prefix=hidden-", workdir=workdir
    ) as proxy:
        yield proxy


def test_get_and_list_are_upstreams_protobuf_online_and_from_the_cache(
    module_cloud: Cloud, setup: ProxyProcess
) -> None:
    proxy = setup
    for path in (f"{CM}/a", f"/api/v1/namespaces/{NS}/pods/p"):
        status, ctype, body = _get(proxy.url, path, CLIENT_GO)
        assert (status, ctype) == (200, PROTOBUF), body[:200]
        assert decode_object(body) == decode_object(_direct(module_cloud, path, PROTOBUF)[2])
    upstream = _direct(module_cloud, CM, PROTOBUF)[2]
    # Forwarded, then a second list starts a reflector, then served from the cache.
    for _ in range(3):
        status, ctype, body = _get(proxy.url, CM + "?resourceVersion=0", CLIENT_GO)
        assert (status, ctype) == (200, PROTOBUF)
        # Filtered: the drop-by-name-prefix view hides hidden-c in protobuf too.
        assert _items(body) == [o for o in _items(upstream) if o["metadata"]["name"] != "hidden-c"]
        as_json = json.loads(_get(proxy.url, CM + "?resourceVersion=0", "application/json")[2])
        assert [o["metadata"]["name"] for o in _items(body)] == sorted(
            o["metadata"]["name"] for o in as_json["items"]
        )
        assert (
            decode_object(body)["metadata"]["resourceVersion"]
            == as_json["metadata"]["resourceVersion"]
        )
        time.sleep(0.3)
    # A get of a hidden object is a 404, its Status in protobuf as kube-apiserver's.
    status, ctype, body = _get(proxy.url, f"{CM}/hidden-c", CLIENT_GO)
    assert (status, ctype) == (404, PROTOBUF)
    assert decode_object(body)["reason"] == "NotFound"
    # So is upstream's own 404, relayed.
    status, ctype, body = _get(proxy.url, f"{CM}/missing", CLIENT_GO)
    assert (status, ctype) == (404, PROTOBUF)
    assert decode_object(body) == decode_object(
        _direct(module_cloud, f"{CM}/missing", CLIENT_GO)[2]
    )


def test_json_clients_are_unchanged(setup: ProxyProcess) -> None:
    for accept in ("application/json", "application/json, " + PROTOBUF, "*/*"):
        status, ctype, body = _get(setup.url, f"{CM}/a", accept)
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body)["data"] == {"k": "a"}


def _watch(
    url: str, path: str, accept: str, token: str | None = None, **kw: Any
) -> tuple[str, list[tuple[str, dict[str, Any]]]]:
    status, ctype, body = _get(url, path, accept, token, **kw)
    assert status == 200, body[:300]
    events, tail = decode_watch_frames(body)
    assert tail == b""
    return ctype, events


def test_watch_frames_decode_to_upstreams(module_cloud: Cloud, setup: ProxyProcess) -> None:
    path = f"{CM}?watch=1&resourceVersion=0&timeoutSeconds=1"
    ctype, ours = _watch(setup.url, path, CLIENT_GO)
    assert ctype == PROTOBUF + ";stream=watch"
    _, theirs = _watch(
        module_cloud.direct_url,
        path,
        CLIENT_GO,
        module_cloud.token,
        context=module_cloud.upstream.ssl_context(),
    )
    key = lambda e: str(e[1]["metadata"]["name"])  # noqa: E731
    assert sorted(ours, key=key) == sorted((e for e in theirs if key(e) != "hidden-c"), key=key)
    # The watch's initial events reused the messages the lists encoded.
    metrics = setup.admin("/metrics")
    assert 'edgeproxy_protobuf_encoded_total{result="memoized"}' in metrics
    memoized = next(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith('edgeproxy_protobuf_encoded_total{result="memoized"}')
    )
    assert memoized > 0, metrics[-3000:]
    # A watch from an RV older than the kept history gets the 410 ERROR event.
    _, expired = _watch(setup.url, f"{CM}?watch=1&resourceVersion=1&timeoutSeconds=1", CLIENT_GO)
    assert [(t, o["code"]) for t, o in expired] == [("ERROR", 410)]


def test_informer_decodes_the_proxys_protobuf_online_and_offline(
    module_cloud: Cloud, setup: ProxyProcess, tmp_path: Path
) -> None:
    watches = [f"v1/configmaps,namespace={NS}", f"v1/pods,namespace={NS}"]
    direct = Informer(
        module_cloud.direct_url,
        watches,
        workdir=tmp_path,
        name="direct",
        token=module_cloud.token,
        ca_file=module_cloud.ca_file,
        objects=True,
    )
    through = Informer(setup.url, watches, workdir=tmp_path, name="through", objects=True)
    with direct, through:
        direct.wait_synced()
        through.wait_synced()
        want = direct.dump()
        want[watches[0]].pop(f"{NS}/hidden-c")
        assert through.dump() == want
        module_cloud.upstream.request(
            "PATCH", f"{CM}/a", {"data": {"k": "2"}}, content_type="application/merge-patch+json"
        )
        deadline = time.monotonic() + 20
        while through.dump()[watches[0]] != {
            k: v for k, v in direct.dump()[watches[0]].items() if "hidden" not in k
        }:
            assert time.monotonic() < deadline
            time.sleep(0.3)
        online = _items(_get(setup.url, CM + "?resourceVersion=0", CLIENT_GO)[2])
        module_cloud.link.blackhole()
        try:
            wait_link(setup, up=False)
            status, ctype, body = _get(setup.url, CM, CLIENT_GO)
            assert (status, ctype) == (200, PROTOBUF)
            assert _items(body) == online
            status, ctype, body = _get(setup.url, f"{CM}/a", CLIENT_GO)
            assert (status, ctype) == (200, PROTOBUF)
            assert decode_object(body)["data"] == {"k": "2"}
            assert through.dump() == {
                w: {k: v for k, v in d.items() if "hidden" not in k}
                for w, d in direct.dump().items()
            }
        finally:
            module_cloud.link.restore()
            wait_link(setup, up=True)


def test_crds_answer_json_or_406_as_kube_apiserver(
    module_cloud: Cloud, setup: ProxyProcess
) -> None:
    real = module_cloud.upstream
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.proto.example.com"},
        "spec": {
            "group": "proto.example.com",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    assert real.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[
        0
    ] in (201, 409)
    path = f"/apis/proto.example.com/v1/namespaces/{NS}/widgets"
    deadline = time.monotonic() + 30
    while real.request(
        "POST",
        path,
        {"apiVersion": "proto.example.com/v1", "kind": "Widget", "metadata": {"name": "w"}},
    )[0] not in (201, 409):
        assert time.monotonic() < deadline, "the CRD never became served"
        time.sleep(0.3)
    for target in (path, f"{path}/w"):
        want = _direct(module_cloud, target, CLIENT_GO)
        got = _get(setup.url, target, CLIENT_GO)
        assert (got[0], got[1]) == (want[0], want[1]) == (200, "application/json")
        assert json.loads(got[2])["kind"] == json.loads(want[2])["kind"]
        want = _direct(module_cloud, target, PROTOBUF)
        got = _get(setup.url, target, PROTOBUF)
        # The 406 Status itself is protobuf: Status is a built-in kind.
        assert (got[0], got[1]) == (want[0], want[1]) == (406, PROTOBUF)
        assert decode_object(got[2]) == decode_object(want[2])
