"""client-go informers through edge-proxy, against the simulator and the real kube-apiserver.

Each test runs twice: once with the simulator upstream and once with a real
etcd + kube-apiserver, and each compares what a real client-go informer sees
through the proxy with what one sees straight from the upstream. The cloud
link is a relay the test controls (`edgeproxy.link`), so a cut is the same
for both upstreams: a black hole that only timeouts and probes notice.

What must hold across a cut, upstream changes, a compaction and a proxy
restart while offline: the informer through the proxy ends with the same
cache as the direct one, never relists (no second LIST or watch-list), and
gets no event twice.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Cloud, wait_link
from edgeproxy.clientgo import Informer
from edgeproxy.testing import ProxyProcess

Api = Callable[..., Any]


@pytest.fixture
def proxy(cloud: Cloud, tmp_path: Path) -> Iterator[ProxyProcess]:
    with ProxyProcess(cloud.kubeconfig, workdir=tmp_path / "proxy") as proc:
        yield proc


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


def write(api: Api, cloud: Cloud, method: str, path: str, body: Any = None) -> None:
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    resp = api(cloud.upstream, method, path, body, content_type=content_type)
    assert resp.status in (200, 201), (method, path, resp.status, resp.body[:300])


def informers(
    cloud: Cloud, proxy: ProxyProcess, tmp_path: Path, watches: list[str], **kw: Any
) -> tuple[Informer, Informer]:
    direct = Informer(
        cloud.direct_url,
        watches,
        workdir=tmp_path,
        name="direct",
        token=cloud.token,
        ca_file=cloud.ca_file,
        **kw,
    )
    through = Informer(proxy.url, watches, workdir=tmp_path, name="through", **kw)
    direct.wait_synced()
    through.wait_synced()
    return direct, through


def converge(direct: Informer, through: Informer, timeout: float = 45) -> dict[str, Any]:
    """Both caches equal (polled: the proxy may still be catching up)."""
    deadline = time.monotonic() + timeout
    while True:
        want, got = direct.dump(), through.dump()
        if want == got or time.monotonic() > deadline:
            assert got == want
            return want
        time.sleep(0.5)


def no_duplicates(informer: Informer) -> None:
    twice = [ev for ev, n in Counter(informer.events()).items() if n > 1]
    assert not twice, f"events delivered twice: {twice[:5]}"


@pytest.mark.parametrize("content_type", ["protobuf", "json"])
@pytest.mark.parametrize("watch_list", ["true", "false"])
def test_informer_across_a_cut(
    cloud: Cloud,
    proxy: ProxyProcess,
    api: Api,
    make_namespace: Callable[[Any], str],
    tmp_path: Path,
    content_type: str,
    watch_list: str,
) -> None:
    ns = make_namespace(cloud.upstream)
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(5):
        write(api, cloud, "POST", base, configmap(f"cm{i}", v="0"))
    watches = [f"v1/configmaps,namespace={ns}"]
    direct, through = informers(
        cloud, proxy, tmp_path, watches, content_type=content_type, watch_list=watch_list
    )
    with direct, through:
        converge(direct, through)
        lists_before = through.relists()

        cloud.link.blackhole()
        wait_link(proxy, up=False)
        # Changes the node cannot see while cut off.
        write(api, cloud, "POST", base, configmap("new", v="1"))
        write(api, cloud, "PATCH", f"{base}/cm1", {"data": {"v": "2"}})
        write(api, cloud, "DELETE", f"{base}/cm2")
        # Offline, the informer through the proxy still has its cache and its watch.
        assert f"{ns}/cm2" in through.dump()[watches[0]]

        cloud.link.restore()
        wait_link(proxy, up=True)
        final = converge(direct, through)
        assert set(final[watches[0]]) == {f"{ns}/cm{i}" for i in (0, 1, 3, 4)} | {f"{ns}/new"}
        # The outage cost no relist, and the proxy's client saw exactly what the direct one saw.
        assert through.relists() == lists_before == 1
        assert sorted(through.events(initial=True)) == sorted(direct.events(initial=True))
        assert through.events(initial=False) == direct.events(initial=False)
        no_duplicates(through)


def test_informer_across_a_compaction_while_cut(
    cloud: Cloud,
    proxy: ProxyProcess,
    api: Api,
    make_namespace: Callable[[Any], str],
    tmp_path: Path,
) -> None:
    ns = make_namespace(cloud.upstream)
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(3):
        write(api, cloud, "POST", base, configmap(f"cm{i}", v="0"))
    watches = [f"v1/configmaps,namespace={ns}"]
    direct, through = informers(cloud, proxy, tmp_path, watches)
    with direct, through:
        converge(direct, through)
        cloud.link.blackhole()
        wait_link(proxy, up=False)
        write(api, cloud, "POST", base, configmap("new", v="1"))
        write(api, cloud, "PATCH", f"{base}/cm0", {"data": {"v": "2"}})
        write(api, cloud, "PATCH", f"{base}/cm0", {"data": {"v": "3"}})
        write(api, cloud, "DELETE", f"{base}/cm1")
        # The history the proxy would resume from is gone: its reflector gets 410.
        cloud.upstream.compact()
        cloud.link.restore()
        wait_link(proxy, up=True)
        converge(direct, through, timeout=60)
        # The proxy relisted upstream and turned the difference into events:
        # its client neither relisted nor saw a 410.
        assert through.relists() == 1
        assert not through.records("watch_error")
        no_duplicates(through)
        last = {key: rv for _, key, rv in through.events()}
        assert last[f"{ns}/cm0"] == through.dump()[watches[0]][f"{ns}/cm0"]


def test_informer_across_a_proxy_crash_while_cut(
    cloud: Cloud,
    proxy: ProxyProcess,
    api: Api,
    make_namespace: Callable[[Any], str],
    tmp_path: Path,
) -> None:
    ns = make_namespace(cloud.upstream)
    base = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(3):
        write(api, cloud, "POST", base, configmap(f"cm{i}", v="0"))
    watches = [f"v1/configmaps,namespace={ns}"]
    direct, through = informers(cloud, proxy, tmp_path, watches)
    with direct, through:
        converge(direct, through)
        cloud.link.blackhole()
        wait_link(proxy, up=False)
        proxy.kill()
        write(api, cloud, "PATCH", f"{base}/cm0", {"data": {"v": "9"}})
        proxy.start()  # offline, from the journal
        # The informer's watch broke with the process; it re-watches from its RV
        # against the restarted proxy, which answers from the journal.
        through.wait_for(lambda recs: sum(r["type"] == "watch" for r in recs) >= 2, 45, "re-watch")
        cloud.link.restore()
        wait_link(proxy, up=True)
        converge(direct, through, timeout=60)
        assert through.relists() == 1
        no_duplicates(through)
