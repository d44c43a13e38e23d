"""A node wired as docs/node-wiring.md says: the kubelet through the proxy, the proxy as the node.

The proxy's upstream kubeconfig is what kubeadm writes for the kubelet: the
cloud's address and CA, and the kubelet's rotating client certificate
(`kubelet-client-current.pem`, certificate and key in one file). The
kubelet (kubemark's hollow kubelet) gets the kubeconfig `edge-proxy
kubeconfig --component kubelet` writes. The real kube-apiserver, with the
Node authorizer on, must see the kubelet's traffic under the node's own
identity, and after the certificate file is rotated, under the new one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from edgeproxy.controlplane import ControlPlane
from edgeproxy.kubemark import HollowKubelet
from edgeproxy.sim.tls import issue_client_pem
from edgeproxy.testing import ProxyProcess, wait_until

NODE = "wired-edge-1"
USER = f"system:node:{NODE}"
ROTATED = "edge-proxy:rotated"  # a group only the rotated certificate carries


def node_ready(real: ControlPlane) -> bool:
    status, body = real.request("GET", f"/api/v1/nodes/{NODE}")
    if status != 200:
        return False
    conditions = json.loads(body)["status"].get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def node_requests(real: ControlPlane, since: int) -> list[dict[str, Any]]:
    """Audit events after byte `since` made as this node."""
    out = []
    with real.audit_log.open("rb") as log:
        log.seek(since)
        for line in log:
            event = json.loads(line)
            if event["stage"] == "ResponseComplete" and event["user"]["username"] == USER:
                out.append(event)
    return out


def answers(proxy: ProxyProcess) -> tuple[int, dict[str, int]]:
    """Client requests the proxy answered, and those with a 5xx or 401 by their labels.

    From its /metrics: each failed series keyed by its label set (verb,
    resource, code, served_from), so a failure says which answers they were.
    """
    with urllib.request.urlopen(f"{proxy.admin_url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    total, failed = 0, dict[str, int]()
    for line in text.splitlines():
        if line.startswith("edgeproxy_requests_total{"):
            labels, value = line.rsplit(" ", 1)
            code = labels.split('code="', 1)[1].split('"', 1)[0]
            count = int(float(value))
            total += count
            if code.startswith("5") or code == "401":
                failed[labels.removeprefix("edgeproxy_requests_total")] = count
    return total, failed


def write_private(path: Path, data: bytes) -> None:
    # As the kubelet rotates: a new file renamed over the old.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.chmod(0o600)
    os.replace(tmp, path)


def test_kubelet_through_generated_kubeconfig_as_the_node(
    real: ControlPlane, tmp_path: Path, make_namespace: Callable[[Any], str]
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    current = pki / "kubelet-client-current.pem"
    write_private(current, issue_client_pem(real.bundle, USER, ["system:nodes"]))
    upstream = tmp_path / "upstream.kubeconfig"  # the kubelet's kubeconfig, kubeadm's shape
    upstream.write_text(
        yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "cloud", "cluster": {
                "server": real.url, "certificate-authority": str(real.ca_file)}}],
            "users": [{"name": USER, "user": {
                "client-certificate": str(current), "client-key": str(current)}}],
            "contexts": [{"name": "node", "context": {"cluster": "cloud", "user": USER}}],
            "current-context": "node",
        })
    )  # fmt: skip
    proxy = ProxyProcess(upstream, workdir=tmp_path / "proxy")
    kubelet_kubeconfig = tmp_path / "kubelet.conf"
    subprocess.run(
        [sys.executable, "-m", "edgeproxy", "kubeconfig", "--component=kubelet",
         f"--listen=127.0.0.1:{proxy.port}", f"--out={kubelet_kubeconfig}"],
        check=True, timeout=30,
    )  # fmt: skip
    assert yaml.safe_load(kubelet_kubeconfig.read_text())["clusters"][0]["cluster"] == {
        "server": proxy.url
    }
    kubelet = HollowKubelet(kubelet_kubeconfig, tmp_path, NODE)
    ns = make_namespace(real)
    try:
        mark = real.audit_log.stat().st_size
        kubelet.start()
        wait_until(lambda: node_ready(real), 60, f"node Ready\n{kubelet.log()}\n{proxy.log()}")
        status, body = real.request("POST", f"/api/v1/namespaces/{ns}/pods", {
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
            "spec": {"nodeName": NODE, "containers": [{"name": "app", "image": "app:1"}]},
        })  # fmt: skip
        assert status == 201, body[:300]

        def running() -> bool:
            status, body = real.request("GET", f"/api/v1/namespaces/{ns}/pods/app")
            return status == 200 and json.loads(body)["status"].get("phase") == "Running"

        wait_until(running, 60, f"pod Running\n{kubelet.log()}")
        # The node's status and its pod's came through the proxy as the node itself.
        events = node_requests(real, mark)
        resources = {e.get("objectRef", {}).get("resource") for e in events}
        assert {"nodes", "pods"} <= resources, resources
        assert not any(ROTATED in e["user"].get("groups", []) for e in events)

        # -- the kubelet rotates its certificate ---------------------------------
        mark = real.audit_log.stat().st_size
        served, failed = answers(proxy)
        # served > 0: the metric was read (the kubelet had been answered).
        # kube-apiserver answers none of a healthy kubelet's requests with a
        # 5xx or 401, and neither may the proxy, from its first requests on.
        assert served > 0 and not failed, f"failed answers before the rotation: {failed}"
        write_private(current, issue_client_pem(real.bundle, USER, ["system:nodes", ROTATED]))
        wait_until(
            lambda: "client certificate" in proxy.log() and "new connections use" in proxy.log(),
            40,
            f"proxy reloads the certificate\n{proxy.log()}",
        )

        def rotated_in_use() -> bool:
            return any(ROTATED in e["user"].get("groups", []) for e in node_requests(real, mark))

        wait_until(rotated_in_use, 60, "the node's requests carry the rotated certificate")
        wait_until(lambda: node_ready(real), 60, "node still Ready after the rotation")
        # No request failed across the rotation: none refused upstream, none
        # answered with an error by the proxy while its connections moved over.
        assert not [e for e in node_requests(real, mark) if e["responseStatus"]["code"] == 401]
        failed = answers(proxy)[1]
        assert not failed, f"failed answers across the rotation: {failed}\n{proxy.log()}"
    finally:
        kubelet.stop()
        proxy.close()
        real.request("DELETE", f"/api/v1/nodes/{NODE}")


def test_serve_refuses_its_own_listener_as_upstream(tmp_path: Path) -> None:
    """The loop a rewritten kubelet.conf makes when handed back to the proxy as its upstream."""
    looped = tmp_path / "kubelet.conf"
    subprocess.run(
        [sys.executable, "-m", "edgeproxy", "kubeconfig", "--component=kubelet",
         "--listen=127.0.0.1:18261", f"--out={looped}"],
        check=True, timeout=30,
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "edgeproxy", "serve", f"--kubeconfig={looped}",
         "--listen=127.0.0.1:18261", "--admin-listen=127.0.0.1:0",
         f"--cache-dir={tmp_path / 'cache'}"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "this proxy's own listener" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_in_use_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "edgeproxy", "--logging-format=json", "serve",
             "--server-addr=http://127.0.0.1:9", f"--listen=127.0.0.1:{port}",
             "--admin-listen=127.0.0.1:0", f"--cache-dir={tmp_path / 'cache'}"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1] == (
        f"edge-proxy serve: --listen 127.0.0.1:{port}: cannot listen: address already in use"
    )
    # Everything before it is a log line, one JSON object each.
    assert all(json.loads(line)["msg"] for line in lines[:-1])
