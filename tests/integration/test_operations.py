"""What an operator reads off a running proxy: /metrics, the admin root, /debug/cache, status.

Real processes on loopback: the simulator, a link relay in front of it (cut
by black-holing, as in test_proxy_offline.py) and `edge-proxy serve`. Checked:
the metrics the operations guide promises (build info, seconds offline,
staleness per scope, journal bytes on disk; counters named `_total` and no
`_created` series), the admin root listing its endpoints, /debug/cache for
a person (indented JSON, an HTML table) with the same content for programs,
and `edge-proxy status` with its exit codes (0 ready, 1 not, 2 unreachable).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import wait_link
from edgeproxy import __version__
from edgeproxy.link import LinkRelay
from edgeproxy.testing import ProxyProcess, SimProcess, free_port

MakeNamespace = Callable[[SimProcess], str]
SINCE_SYNC = "edgeproxy_cache_scope_seconds_since_sync"


@pytest.fixture
def link(sim: SimProcess) -> Iterator[LinkRelay]:
    relay = LinkRelay("127.0.0.1", int(sim.url.rsplit(":", 1)[1]))
    try:
        yield relay
    finally:
        relay.close()


def through(sim: SimProcess, link: LinkRelay, workdir: Path) -> Path:
    """A kubeconfig for the simulator that goes through the relay."""
    kubeconfig = workdir / "through-link.kubeconfig"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig.write_text(sim.kubeconfig.read_text().replace(sim.url, link.url("http")))
    return kubeconfig


@pytest.fixture
def proxy(sim: SimProcess, link: LinkRelay, tmp_path: Path) -> Iterator[ProxyProcess]:
    with ProxyProcess(through(sim, link, tmp_path), workdir=tmp_path / "proxy") as proc:
        yield proc


def get(url: str, accept: str = "*/*") -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def samples(proxy: ProxyProcess, name: str) -> list[tuple[dict[str, str], float]]:
    text = proxy.admin("/metrics")
    return [
        (dict(s.labels), float(s.value))
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def since_sync(proxy: ProxyProcess, ns: str, label_selector: str = "") -> float | None:
    for labels, value in samples(proxy, SINCE_SYNC):
        if labels["namespace"] == ns and labels["label_selector"] == label_selector:
            return value
    return None


def eventually(check: Callable[[], Any], within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.05)
    pytest.fail(f"timed out after {within}s waiting for {what}")


def list_configmaps(proxy: ProxyProcess, ns: str, label_selector: str = "") -> None:
    query = (
        "?" + urllib.parse.urlencode({"labelSelector": label_selector}) if label_selector else ""
    )
    status, _, _ = get(f"{proxy.url}/api/v1/namespaces/{ns}/configmaps{query}", "application/json")
    assert status == 200


def create_configmaps(sim: SimProcess, ns: str, count: int, pad: int = 0) -> None:
    for i in range(count):
        body = json.dumps({"metadata": {"name": f"cm-{i:03d}"}, "data": {"pad": "x" * pad}})
        request = urllib.request.Request(
            f"{sim.url}/api/v1/namespaces/{ns}/configmaps",
            data=body.encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 201


def status_command(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeproxy", "status", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- /metrics ------------------------------------------------------------------------


def test_metrics_have_build_info_journal_bytes_and_no_created_series(
    sim: SimProcess, proxy: ProxyProcess, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(sim)
    create_configmaps(sim, ns, 3)
    list_configmaps(proxy, ns)

    text = proxy.admin("/metrics")
    assert "_created" not in text, [line for line in text.splitlines() if "_created" in line]
    families = {f.name: f for f in text_string_to_metric_families(text)}
    build = [s for s in families["edgeproxy_build_info"].samples]
    assert len(build) == 1 and build[0].value == 1
    assert build[0].labels["version"] == __version__
    assert build[0].labels["python_version"] == "{}.{}.{}".format(*sys.version_info[:3])
    # Every counter's sample is named _total (the parser strips it from the family).
    counters = [f for f in families.values() if f.type == "counter"]
    assert {"edgeproxy_requests", "edgeproxy_cache_evictions", "edgeproxy_journal_errors"} <= {
        f.name for f in counters
    }
    for family in counters:
        assert all(s.name == family.name + "_total" for s in family.samples), family
    assert families["edgeproxy_upstream_offline_seconds"].samples[0].value == 0

    # The journal's file and WAL: the list above is committed to them.
    def on_disk() -> float:
        return samples(proxy, "edgeproxy_journal_disk_bytes")[0][1]

    eventually(lambda: on_disk() > 0, 10, "journal bytes on disk")
    files = proxy.cache_dir.glob("cache.db*")
    assert on_disk() <= sum(f.stat().st_size for f in files) + 1024 * 1024  # same files


def test_offline_and_since_sync_rise_while_the_link_is_cut(
    sim: SimProcess, link: LinkRelay, proxy: ProxyProcess, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(sim)
    create_configmaps(sim, ns, 2)
    list_configmaps(proxy, ns, "app!=none")
    # A list kept: upstream confirmed it just now.
    assert eventually(lambda: since_sync(proxy, ns, "app!=none") is not None, 10, "series")
    # A client's watch on a scope keeps its reflector streaming: current, 0 s stale.
    watch = urllib.request.urlopen(
        f"{proxy.url}/api/v1/namespaces/{ns}/configmaps?watch=1&resourceVersion=0", timeout=60
    )
    try:
        eventually(lambda: since_sync(proxy, ns) == 0, 20, "the watched scope to be live")
        wait_link(proxy, up=True)
        assert samples(proxy, "edgeproxy_upstream_offline_seconds")[0][1] == 0

        link.blackhole()
        wait_link(proxy, up=False)
        offline = eventually(
            lambda: (v := samples(proxy, "edgeproxy_upstream_offline_seconds")[0][1]) > 0.5 and v,
            20,
            "seconds offline to count",
        )
        stale = eventually(lambda: (since_sync(proxy, ns) or 0) > 0.5, 20, "staleness")
        assert stale
        first = since_sync(proxy, ns)
        time.sleep(1.2)
        assert samples(proxy, "edgeproxy_upstream_offline_seconds")[0][1] > offline
        later = since_sync(proxy, ns)
        assert first is not None and later is not None and later > first
        doc = proxy.admin("/debug/cache")
        assert doc["link"]["state"] == "down" and doc["link"]["offlineSeconds"] > 0

        # Cut off but holding a cache: ready (clients get answers), and status says so.
        result = status_command(f"--admin-addr=127.0.0.1:{proxy.admin_port}")
        assert result.returncode == 0, result
        assert "link:   down for" in result.stdout, result.stdout

        link.restore()
        wait_link(proxy, up=True)
        eventually(
            lambda: samples(proxy, "edgeproxy_upstream_offline_seconds")[0][1] == 0,
            20,
            "seconds offline back to 0",
        )
        eventually(lambda: since_sync(proxy, ns) == 0, 30, "the watch to stream again")
    finally:
        watch.close()


def test_an_evicted_scope_has_no_since_sync_series(
    sim: SimProcess, link: LinkRelay, tmp_path: Path, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(sim)
    create_configmaps(sim, ns, 120, pad=1500)  # each list ~200 KB: five fill 1 MiB
    kubeconfig = through(sim, link, tmp_path)
    args = ("--max-memory-cache-bytes=1Mi",)
    with ProxyProcess(kubeconfig, *args, workdir=tmp_path / "proxy") as proxy:
        list_configmaps(proxy, ns, "x!=first")
        assert eventually(lambda: since_sync(proxy, ns, "x!=first") is not None, 10, "series")

        def first_evicted() -> bool:
            scopes = proxy.admin("/debug/cache")["scopes"]
            return any(s["scope"].endswith("|l=x!=first|f=") and not s["resident"] for s in scopes)

        for i in range(30):
            list_configmaps(proxy, ns, f"x!=v{i}")
            if first_evicted():
                break
        eventually(first_evicted, 20, "the first scope to leave memory")
        assert since_sync(proxy, ns, "x!=first") is None
        assert since_sync(proxy, ns, f"x!=v{i}") is not None  # the resident ones remain
        series = samples(proxy, SINCE_SYNC)
        resident = [s for s in proxy.admin("/debug/cache")["scopes"] if s["resident"]]
        assert len(series) <= len(resident)


# -- the admin root and /debug/cache -------------------------------------------------------


def test_admin_root_lists_its_endpoints(proxy: ProxyProcess) -> None:
    status, content_type, body = get(proxy.admin_url + "/")
    assert status == 200 and content_type.startswith("text/plain")
    lines = body.decode().splitlines()
    paths = [line.split()[0] for line in lines]
    assert paths == ["/healthz", "/livez", "/readyz", "/metrics", "/debug/cache"]
    assert all(len(line.split(None, 1)) == 2 for line in lines), "each with a description"
    # Each one it lists answers.
    for path in paths:
        assert get(proxy.admin_url + path)[0] == 200

    status, content_type, body = get(proxy.admin_url + "/", "application/json")
    assert content_type.startswith("application/json")
    listed = json.loads(body)["endpoints"]
    assert [e["path"] for e in listed] == paths and all(e["description"] for e in listed)


def test_debug_cache_is_indented_json_or_an_html_table(
    sim: SimProcess, proxy: ProxyProcess, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(sim)
    create_configmaps(sim, ns, 2)
    list_configmaps(proxy, ns, "tier notin (a,c)")

    _, content_type, pretty = get(proxy.admin_url + "/debug/cache")
    assert content_type.startswith("application/json")
    assert pretty.startswith(b'{\n  "link": {\n'), pretty[:80]
    doc = json.loads(pretty)
    assert {"link", "upstream", "journal", "budgets", "scopes", "filteredViews"} <= set(doc)
    _, _, asked = get(proxy.admin_url + "/debug/cache", "application/json")
    assert set(json.loads(asked)) == set(doc)  # the same content, whichever way asked
    scope = next(s for s in doc["scopes"] if f"|ns={ns}|" in s["scope"])
    assert scope["secondsSinceSync"] is not None and scope["objects"] == 2

    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    _, content_type, page = get(proxy.admin_url + "/debug/cache", browser)
    assert content_type.startswith("text/html")
    text = page.decode()
    assert text.startswith("<!doctype html>") and "<table>" in text
    assert f"<td>v1/configmaps|ns={ns}|l=tier notin (a,c)|f=</td>" in text


# -- edge-proxy status ---------------------------------------------------------------------


def test_status_prints_link_scopes_and_cache_size(
    sim: SimProcess, proxy: ProxyProcess, make_namespace: MakeNamespace
) -> None:
    ns = make_namespace(sim)
    create_configmaps(sim, ns, 4)
    list_configmaps(proxy, ns, "app!=none")
    wait_link(proxy, up=True)

    result = status_command(f"--admin-addr=127.0.0.1:{proxy.admin_port}")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "ready:  yes"
    assert lines[1].startswith("link:   up")
    assert lines[2].startswith("cache:  ") and "journal" in lines[2]
    assert lines[4].split() == ["RESOURCE", "NAMESPACE", "SELECTOR", "OBJECTS", "SYNCED"]
    row = next(line.split() for line in lines[5:] if ns in line)
    assert row[:4] == ["v1/configmaps", ns, "app!=none", "4"]
    assert row[4] in ("live", "0s") or row[-1] == "ago", row

    result = status_command(f"--admin-addr=127.0.0.1:{proxy.admin_port}", "--output=json")
    assert result.returncode == 0, result
    doc = json.loads(result.stdout)
    assert doc["ready"] is True and doc["link"]["state"] == "up"
    scope = next(s for s in doc["scopes"] if s["namespace"] == ns)
    assert scope["resource"] == "v1/configmaps" and scope["labelSelector"] == "app!=none"
    assert scope["objects"] == 4 and doc["cache"]["objects"] >= 4


def test_status_exit_codes_not_ready_and_unreachable(tmp_path: Path) -> None:
    # Nothing listens on the admin port: one line, no traceback, exit code 2.
    result = status_command(f"--admin-addr=127.0.0.1:{free_port()}")
    assert result.returncode == 2, result
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("edge-proxy status: cannot reach the admin port")
    # Nor for an address that is not one.
    result = status_command("--admin-addr=not an address")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result
    assert len(result.stderr.splitlines()) == 1

    # An upstream that refuses and no cache: not ready, exit code 1.
    kubeconfig = tmp_path / "nowhere.kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{free_port()}\n"
        "users:\n- name: u\n  user: {}\n"
        "contexts:\n- name: c\n  context: {cluster: c, user: u}\ncurrent-context: c\n"
    )
    with ProxyProcess(kubeconfig, workdir=tmp_path / "proxy") as proxy:
        args = (f"--admin-addr=127.0.0.1:{proxy.admin_port}",)
        result = eventually(
            lambda: (r := status_command(*args)).returncode == 1 and r, 30, "not ready"
        )
        assert result.stdout.splitlines()[:2] == ["ready:  NO", result.stdout.splitlines()[1]]
        assert result.stdout.splitlines()[1].startswith("link:   down for")
