"""Resource types the proxy learns from discovery, against the real kube-apiserver.

The proxy's own table knows a dozen built-in kinds. Everything else (custom
resources, newer built-ins such as RuntimeClass) must be served with the
kind, scope and field selectors upstream declares, online and, from the
journal, offline after a restart. Real kubelet found both failures this
replaces: RuntimeClass lists from the cache named `RuntimeclassesList`, and
field selectors the proxy did not know were refused instead of forwarded.

Only the real apiserver: the simulator serves neither CRDs nor RuntimeClass.
"""

from __future__ import annotations

import itertools
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.clientgo import Informer
from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import LinkRelay
from edgeproxy.testing import ProxyProcess

Api = Callable[..., Any]

GROUP = "discovery.edgeproxy.test"
GV = f"/apis/{GROUP}/v1"


def _crd(plural: str, kind: str, scope: str, selectable: list[str]) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": "v1",
        "served": True,
        "storage": True,
        "schema": {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "properties": {"color": {"type": "string"}, "size": {"type": "integer"}},
                    }
                },
            }
        },
    }
    if selectable:
        version["selectableFields"] = [{"jsonPath": path} for path in selectable]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"plural": plural, "singular": kind.lower(), "kind": kind},
            "scope": scope,
            "versions": [version],
        },
    }


@pytest.fixture(scope="module")
def crds(real: ControlPlane) -> None:
    """Widgets (namespaced, `spec.color` selectable) and Gizmos (cluster-scoped)."""
    for crd in (
        _crd("widgets", "Widget", "Namespaced", [".spec.color"]),
        _crd("gizmos", "Gizmo", "Cluster", []),
    ):
        status, body = real.request(
            "POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd
        )
        assert status in (201, 409), body
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = real.request("GET", GV)
        if status == 200 and {"widgets", "gizmos"} <= {
            r["name"] for r in json.loads(body)["resources"]
        }:
            return
        time.sleep(0.1)
    raise AssertionError(f"CRDs not served: {status} {body[:300]!r}")


@pytest.fixture
def link(real: ControlPlane, tmp_path: Path) -> Iterator[tuple[LinkRelay, Path]]:
    relay = LinkRelay("127.0.0.1", int(real.url.rsplit(":", 1)[1]))
    kubeconfig = tmp_path / "through-link.kubeconfig"
    kubeconfig.write_text(real.kubeconfig.read_text().replace(real.url, relay.url("https")))
    try:
        yield relay, kubeconfig
    finally:
        relay.close()


@pytest.fixture
def proxy(link: tuple[LinkRelay, Path], tmp_path: Path) -> Iterator[ProxyProcess]:
    with ProxyProcess(link[1], workdir=tmp_path / "proxy") as proc:
        yield proc


def wait_link(proxy: ProxyProcess, up: bool, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        healthy = any(
            line.startswith("edgeproxy_upstream_healthy{") and line.endswith(" 1.0")
            for line in proxy.admin("/metrics").splitlines()
        )
        if healthy == up:
            return
        time.sleep(0.1)
    raise AssertionError(f"link not {'up' if up else 'down'} after {timeout}s:\n{proxy.log()}")


def restart_offline(relay: LinkRelay, proxy: ProxyProcess) -> None:
    """Cut the link, crash the proxy, start it again: it has only its journal."""
    relay.blackhole()
    wait_link(proxy, up=False)
    proxy.kill()
    proxy.start()
    wait_link(proxy, up=False)


def get(proxy: ProxyProcess, path: str, **query: str) -> tuple[int, Any]:
    url = proxy.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"{}")


def listed(proxy: ProxyProcess, path: str, kind: str, **query: str) -> set[str]:
    """A list's `namespace/name`s, checking it is a `kind` list."""
    status, doc = get(proxy, path, **query)
    assert status == 200, (path, query, doc, proxy.log())
    assert (doc["kind"], doc["apiVersion"]) == (kind, path.split("/")[2] + "/v1")
    return {f"{i['metadata'].get('namespace', '')}/{i['metadata']['name']}" for i in doc["items"]}


def watched(proxy: ProxyProcess, path: str, count: int, **query: str) -> list[tuple[str, str]]:
    """The first `count` events of a watch: (type, kind/name)."""
    query = {"watch": "1", "timeoutSeconds": "20", **query}
    url = proxy.url + path + "?" + urllib.parse.urlencode(query)
    events: list[tuple[str, str]] = []
    with urllib.request.urlopen(url, timeout=20) as resp:
        assert resp.status == 200
        while len(events) < count:
            line = resp.readline()
            assert line, f"watch ended after {events}"
            event = json.loads(line)
            obj = event["object"]
            events.append((event["type"], f"{obj['kind']}/{obj['metadata']['name']}"))
    return events


def widget(name: str, color: str) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"color": color},
    }


def create(api: Api, real: ControlPlane, path: str, body: dict[str, Any]) -> None:
    resp = api(real, "POST", path, body)
    assert resp.status == 201, resp.body[:300]


_names = itertools.count()


def test_custom_resources_online_and_offline_after_a_restart(
    real: ControlPlane,
    crds: None,
    api: Api,
    make_namespace: Callable[[Any], str],
    link: tuple[LinkRelay, Path],
    proxy: ProxyProcess,
) -> None:
    ns, ns2 = make_namespace(real), make_namespace(real)
    widgets, widgets2 = f"{GV}/namespaces/{ns}/widgets", f"{GV}/namespaces/{ns2}/widgets"
    create(api, real, widgets, widget("red", "red"))
    create(api, real, widgets, widget("blue", "blue"))
    create(api, real, widgets2, widget("red", "red"))
    gizmo = f"gizmo-{next(_names)}-{ns}"
    create(api, real, f"{GV}/gizmos", {"apiVersion": f"{GROUP}/v1", "kind": "Gizmo",
                                       "metadata": {"name": gizmo}})  # fmt: skip
    everywhere = f"{GV}/widgets"

    def check() -> None:
        mine = listed(proxy, widgets, "WidgetList")
        assert mine == {f"{ns}/red", f"{ns}/blue", f"{ns}/green"}
        # A cluster-wide list of a namespaced kind is still namespaced: the
        # scope that answers it must not answer a namespace with everything.
        all_widgets = listed(proxy, everywhere, "WidgetList")
        assert mine | {f"{ns2}/red"} <= all_widgets
        assert listed(proxy, widgets2, "WidgetList", resourceVersion="0") == {f"{ns2}/red"}
        # The CRD's selectable field: upstream's answer online, the exact
        # scope offline, and local evaluation of a broader scope as well.
        red = listed(proxy, everywhere, "WidgetList", fieldSelector="spec.color=red")
        assert {f"{ns}/red", f"{ns2}/red"} <= red and f"{ns}/blue" not in red
        assert listed(
            proxy, widgets, "WidgetList", fieldSelector="spec.color=blue", resourceVersion="0"
        ) == {f"{ns}/blue"}
        assert listed(
            proxy, widgets, "WidgetList", fieldSelector="spec.color!=red", resourceVersion="0"
        ) == {f"{ns}/blue", f"{ns}/green"}
        status, doc = get(proxy, f"{widgets}/red")
        assert status == 200 and (doc["kind"], doc["spec"]["color"]) == ("Widget", "red")
        assert f"/{gizmo}" in listed(proxy, f"{GV}/gizmos", "GizmoList")
        status, doc = get(proxy, f"{GV}/gizmos/{gizmo}")
        assert status == 200 and doc["kind"] == "Gizmo", doc
        events = watched(proxy, widgets, 3, resourceVersion="0")
        assert sorted(events) == [("ADDED", f"Widget/{n}") for n in ("blue", "green", "red")]

    listed(proxy, widgets, "WidgetList")
    # A watch from the list's RV sees what is created next.
    _, doc = get(proxy, widgets)
    rv = doc["metadata"]["resourceVersion"]
    create(api, real, widgets, widget("green", "green"))
    assert watched(proxy, widgets, 1, resourceVersion=rv) == [("ADDED", "Widget/green")]
    check()

    restart_offline(link[0], proxy)
    check()
    # Selectors never asked for online: evaluated on the namespace's scope,
    # with the selectable fields the CRD declared (kept in the journal).
    green = listed(proxy, widgets, "WidgetList", fieldSelector="spec.color=green")
    assert green == {f"{ns}/green"}
    assert listed(proxy, widgets, "WidgetList", fieldSelector="spec.color!=blue") == {
        f"{ns}/red",
        f"{ns}/green",
    }
    # Offline, a selector the proxy cannot evaluate locally is not guessed at.
    status, _ = get(proxy, widgets, fieldSelector="spec.size=3")
    assert status == 503


def test_runtimeclass_lists_name_their_kind(
    real: ControlPlane, api: Api, link: tuple[LinkRelay, Path], proxy: ProxyProcess
) -> None:
    name = f"rc-{next(_names)}-{time.time_ns()}"
    body = {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": name}, "handler": "runc"}  # fmt: skip
    create(api, real, "/apis/node.k8s.io/v1/runtimeclasses", body)
    path = "/apis/node.k8s.io/v1/runtimeclasses"
    assert f"/{name}" in listed(proxy, path, "RuntimeClassList")
    # Twice: the second list starts a reflector, which keeps the scope current.
    assert f"/{name}" in listed(proxy, path, "RuntimeClassList")
    assert f"/{name}" in listed(proxy, path, "RuntimeClassList", resourceVersion="0")
    restart_offline(link[0], proxy)
    assert f"/{name}" in listed(proxy, path, "RuntimeClassList")
    assert f"/{name}" in listed(proxy, path, "RuntimeClassList", resourceVersion="0")


def test_field_selectors_upstream_knows(
    real: ControlPlane, link: tuple[LinkRelay, Path], proxy: ProxyProcess
) -> None:
    """Field selectors on built-ins outside the proxy's table are upstream's to judge."""
    csrs = "/apis/certificates.k8s.io/v1/certificatesigningrequests"
    assert listed(proxy, csrs, "CertificateSigningRequestList") is not None
    assert (
        listed(proxy, csrs, "CertificateSigningRequestList", fieldSelector="spec.signerName=x")
        == set()
    )
    status, doc = get(proxy, csrs, fieldSelector="spec.nope=x")
    assert (status, doc["message"]) == (400, "field label not supported: spec.nope")
    # kubelet v1.37's PodCertificateRequest informer (certificates.k8s.io/v1,
    # served by default since the API went GA): the proxy's table has no
    # spec.nodeName for it, so upstream judges the selector and the proxy
    # never answers its own 400.
    pcrs = "/apis/certificates.k8s.io/v1/podcertificaterequests"
    direct, body = real.request("GET", pcrs + "?fieldSelector=spec.nodeName%3Dx")
    assert direct == 200, body[:300]
    pcr_list = "PodCertificateRequestList"
    assert listed(proxy, pcrs, pcr_list, fieldSelector="spec.nodeName=x") == set()
    restart_offline(link[0], proxy)
    # Offline the kubelet's own scope is answered from the journal, as listed.
    assert listed(proxy, pcrs, pcr_list, fieldSelector="spec.nodeName=x") == set()
    # The scope listed with the selector answers it exactly ...
    assert (
        listed(proxy, csrs, "CertificateSigningRequestList", fieldSelector="spec.signerName=x")
        == set()
    )
    # ... but the proxy holds no signerName to evaluate a broader scope with.
    status, _ = get(proxy, csrs, fieldSelector="spec.signerName=y")
    assert status == 503


def test_dynamic_informer_across_a_restart_offline(
    real: ControlPlane,
    crds: None,
    api: Api,
    make_namespace: Callable[[Any], str],
    link: tuple[LinkRelay, Path],
    proxy: ProxyProcess,
    tmp_path: Path,
) -> None:
    ns = make_namespace(real)
    widgets = f"{GV}/namespaces/{ns}/widgets"
    for i in range(3):
        create(api, real, widgets, widget(f"w{i}", "red"))
    watches = [f"{GROUP}/v1/widgets,namespace={ns}"]
    direct = Informer(real.url, watches, workdir=tmp_path, name="direct", token=real.token,
                      ca_file=real.ca_file, content_type="json")  # fmt: skip
    through = Informer(proxy.url, watches, workdir=tmp_path, name="through", content_type="json")
    with direct, through:
        direct.wait_synced()
        through.wait_synced()
        converge(direct, through)
        restart_offline(link[0], proxy)
        resp = api(real, "PATCH", f"{widgets}/w0", {"spec": {"color": "blue"}},
                   content_type="application/merge-patch+json")  # fmt: skip
        assert resp.status == 200, resp.body[:300]
        through.wait_for(lambda recs: sum(r["type"] == "watch" for r in recs) >= 2, 45, "re-watch")
        assert set(through.dump()[watches[0]]) == {f"{ns}/w{i}" for i in range(3)}
        link[0].restore()
        wait_link(proxy, up=True)
        converge(direct, through, timeout=60)
        assert through.relists() == 1
        assert not through.records("watch_error")


def converge(direct: Informer, through: Informer, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while True:
        want, got = direct.dump(), through.dump()
        if want == got or time.monotonic() > deadline:
            assert got == want
            return
        time.sleep(0.5)
