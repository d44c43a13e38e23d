"""Strict lists once a reflector keeps the scope: upstream's answer, without reading its items.

In strict mode a `resourceVersion=""` list goes upstream. When the scope's
store already holds the state upstream's list describes (its RV, read from the
body's first bytes), the proxy passes upstream's bytes on unread (no filter)
or answers with the store's filtered view (a filter applies). These tests pin
what a client sees, against the simulator and the real kube-apiserver: byte
for byte upstream's answer for JSON, gzip and protobuf; the filter's answer on
upstream's list; a list right after a write through the proxy sees the write.
`edgeproxy_forwarded_lists_total{read="head"|"probe"}` says which lists took the path.
"""

from __future__ import annotations

import gzip
import json
import re
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from conftest import Cloud
from edgeproxy.testing import ProxyProcess

# What client-go sends when it prefers protobuf (kubelet, kube-proxy).
PROTOBUF = "application/vnd.kubernetes.protobuf, application/json"


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    encoding: str
    body: bytes

    def doc(self) -> Any:
        raw = gzip.decompress(self.body) if self.encoding == "gzip" else self.body
        return json.loads(raw)


def fetch(
    url: str,
    method: str = "GET",
    *,
    accept: str = "application/json",
    encoding: str = "",
    body: Any = None,
    content_type: str = "application/json",
    token: str = "",
    ctx: ssl.SSLContext | None = None,
) -> Answer:
    headers = {"Accept": accept, "Accept-Encoding": encoding or "identity"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20, context=ctx) as resp:
            return Answer(
                resp.status,
                resp.headers.get("Content-Type", ""),
                resp.headers.get("Content-Encoding", ""),
                resp.read(),
            )
    except urllib.error.HTTPError as err:
        with err:
            return Answer(
                err.code,
                err.headers.get("Content-Type", ""),
                err.headers.get("Content-Encoding", ""),
                err.read(),
            )


def direct(cloud: Cloud) -> Callable[..., Answer]:
    def call(path: str, method: str = "GET", **kw: Any) -> Answer:
        return fetch(cloud.direct_url + path, method, token=cloud.token, ctx=cloud.ssl, **kw)

    return call


def head_reads(proxy: ProxyProcess) -> float:
    """Lists the proxy answered without reading upstream's items."""
    found = re.findall(
        r'^edgeproxy_forwarded_lists_total\{read="(?:head|probe)"\} (\S+)$',
        proxy.admin("/metrics"),
        re.MULTILINE,
    )
    return sum(map(float, found))


@pytest.fixture(scope="module")
def plain(module_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(module_cloud.kubeconfig, workdir=tmp_path_factory.mktemp("plain"))
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def filtered(
    module_cloud: Cloud, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(
        module_cloud.kubeconfig,
        "--drop-name-prefix=skip-",
        workdir=tmp_path_factory.mktemp("filtered"),
    )
    try:
        yield proc
    finally:
        proc.close()


@pytest.fixture(scope="module")
def namespace(module_cloud: Cloud) -> str:
    """120 ConfigMaps of ~1.2 KB (a list over kube-apiserver's 128 KiB gzip threshold),
    every tenth hidden by the filter."""
    up = direct(module_cloud)
    name = f"strict-lists-{module_cloud.name}"
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    assert up("/api/v1/namespaces", "POST", body=ns).status == 201
    for i in range(120):
        cm_name = f"skip-{i}" if i % 10 == 0 else f"cm-{i}"
        cm = {"metadata": {"name": cm_name}, "data": {"pad": f"{i:04d}" * 300}}
        created = up(f"/api/v1/namespaces/{name}/configmaps", "POST", body=cm)
        assert created.status == 201, created.body
    return name


def until(check: Callable[[], str], what: str, timeout: float = 30.0) -> None:
    """Poll `check` (which returns "" once satisfied, else why not)."""
    deadline = time.monotonic() + timeout
    why = check()
    while why:
        assert time.monotonic() < deadline, f"{what}: {why}"
        time.sleep(0.1)
        why = check()


@pytest.mark.parametrize(
    ("accept", "encoding"),
    [
        ("application/json", ""),
        ("application/json", "gzip"),
        (PROTOBUF, ""),
        (PROTOBUF, "gzip"),
        ("application/vnd.kubernetes.protobuf", "gzip"),
    ],
)
def test_unfiltered_list_is_upstreams_bytes(
    module_cloud: Cloud, plain: ProxyProcess, namespace: str, accept: str, encoding: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    up = direct(module_cloud)

    def same() -> str:
        before_reads = head_reads(plain)
        first = up(path, accept=accept, encoding=encoding)
        through = fetch(plain.url + path, accept=accept, encoding=encoding)
        second = up(path, accept=accept, encoding=encoding)
        if first != second:
            return "upstream changed between the lists (another writer): again"
        if head_reads(plain) <= before_reads:
            return "the proxy read the list's items (its store is not synced yet?)"
        assert first.status == 200, first.body[:300]
        assert (through.status, through.content_type, through.encoding) == (
            first.status,
            first.content_type,
            first.encoding,
        )
        assert through.body == first.body
        return ""

    until(same, f"a list through the proxy as {accept} {encoding or 'identity'}")
    if module_cloud.name == "real":  # the simulator answers JSON, never gzipped
        answer = up(path, accept=accept, encoding=encoding)
        assert answer.encoding == encoding
        assert answer.content_type.startswith(accept.split(",")[0])


@pytest.mark.parametrize("encoding", ["", "gzip"])
def test_filtered_list_is_the_filter_on_upstreams(
    module_cloud: Cloud, filtered: ProxyProcess, namespace: str, encoding: str
) -> None:
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    up = direct(module_cloud)

    def filtered_right() -> str:
        before_reads = head_reads(filtered)
        upstream = up(path).doc()
        through = fetch(filtered.url + path, encoding=encoding)
        assert through.status == 200, through.body[:300]
        doc = through.doc()
        if head_reads(filtered) <= before_reads:
            return "the proxy read the list's items (its store is not synced yet?)"
        if int(doc["metadata"]["resourceVersion"]) < int(upstream["metadata"]["resourceVersion"]):
            return (
                "older than upstream's list before it"  # would be a defect: fails at the deadline
            )
        want = [i for i in upstream["items"] if not i["metadata"]["name"].startswith("skip-")]
        assert doc["items"] == want
        assert (doc["kind"], doc["apiVersion"]) == (upstream["kind"], upstream["apiVersion"])
        return ""

    until(filtered_right, "a filtered list through the proxy")


@pytest.mark.parametrize("which", ["plain", "filtered"])
def test_list_right_after_a_write_sees_it(
    module_cloud: Cloud, namespace: str, which: str, request: pytest.FixtureRequest
) -> None:
    proxy: ProxyProcess = request.getfixturevalue(which)
    path = f"/api/v1/namespaces/{namespace}/configmaps"

    def synced() -> str:  # first, so the lists below may take the unread path
        assert fetch(proxy.url + path).status == 200
        return "" if head_reads(proxy) > 0 else "no list answered unread yet"

    until(synced, "a synced scope")
    for n in range(10):
        patched = fetch(
            f"{proxy.url}{path}/cm-1",
            "PATCH",
            body={"data": {"n": f"{which}-{n}"}},
            content_type="application/merge-patch+json",
        )
        assert patched.status == 200, patched.body
        listed = fetch(proxy.url + path, encoding="gzip").doc()
        (cm,) = [i for i in listed["items"] if i["metadata"]["name"] == "cm-1"]
        assert cm["data"]["n"] == f"{which}-{n}"
