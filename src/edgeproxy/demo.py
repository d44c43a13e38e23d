"""`make demo`: the simulator with seeded data, and kubectl pointed at it.

With a terminal it keeps the simulator running and prints how to use it;
without one (stdin not a TTY) it runs a short scripted tour of kubectl
commands against it, prints their output and exits 0, so it can be checked
unattended.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml


def demo_objects() -> list[dict[str, Any]]:
    """A small edge cluster: two pools of nodes, pods on them, some ConfigMaps."""
    objs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "edge-apps"}},
    ]
    for i in range(1, 4):
        pool = "hangzhou" if i < 3 else "beijing"
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": f"edge-node-{i}",
                    "labels": {
                        "kubernetes.io/hostname": f"edge-node-{i}",
                        "apps.openyurt.io/nodepool": pool,
                    },
                },
                "status": {
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "nodeInfo": {"kubeletVersion": "v1.34.0"},
                    "addresses": [{"type": "InternalIP", "address": f"192.168.0.{10 + i}"}],
                },
            }
        )
        for j in range(2):
            objs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {
                        "name": f"web-{i}-{j}",
                        "namespace": "edge-apps",
                        "labels": {"app": "web", "pool": pool},
                    },
                    "spec": {
                        "nodeName": f"edge-node-{i}",
                        "containers": [{"name": "web", "image": "nginx:1.27"}],
                    },
                    "status": {
                        "phase": "Running",
                        "podIP": f"10.244.{i}.{j + 2}",
                        "containerStatuses": [{"name": "web", "ready": True, "restartCount": 0}],
                    },
                }
            )
    for k in range(5):
        objs.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": f"settings-{k}",
                    "namespace": "edge-apps",
                    "labels": {"tier": "edge" if k % 2 else "cloud"},
                },
                "data": {"index": str(k)},
            }
        )
    return objs


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"simulator at {url} did not become ready")


def _kubectl(kubeconfig: Path, *args: str) -> None:
    cmd = ["kubectl", f"--kubeconfig={kubeconfig}", *args]
    print(f"\n$ kubectl {' '.join(args)}", flush=True)
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    out = (result.stdout + result.stderr).rstrip()
    print(out if out else "(no output)", flush=True)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed with exit code {result.returncode}")


def tour(kubeconfig: Path) -> None:
    _kubectl(kubeconfig, "get", "nodes", "-L", "apps.openyurt.io/nodepool")
    _kubectl(kubeconfig, "get", "pods", "-n", "edge-apps", "-o", "wide")
    _kubectl(kubeconfig, "get", "pods", "-A", "--field-selector", "spec.nodeName=edge-node-3")
    _kubectl(kubeconfig, "get", "configmaps", "-n", "edge-apps", "-l", "tier=edge")
    _kubectl(
        kubeconfig, "create", "configmap", "hello", "-n", "edge-apps", "--from-literal=greeting=hi"
    )
    _kubectl(kubeconfig, "label", "configmap", "hello", "-n", "edge-apps", "tier=edge")
    _kubectl(
        kubeconfig,
        "patch",
        "configmap",
        "hello",
        "-n",
        "edge-apps",
        "--type=merge",
        "-p",
        '{"data":{"greeting":"hello"}}',
    )
    _kubectl(
        kubeconfig,
        "get",
        "configmap",
        "hello",
        "-n",
        "edge-apps",
        "-o",
        "jsonpath={.metadata.resourceVersion} {.data.greeting} {.metadata.labels}",
    )
    _kubectl(kubeconfig, "get", "configmaps", "-n", "edge-apps", "-w", "--request-timeout=2s")
    _kubectl(kubeconfig, "delete", "configmap", "hello", "-n", "edge-apps")


def main() -> int:
    if shutil.which("kubectl") is None:
        print("make demo needs kubectl on PATH", file=sys.stderr)
        return 1
    interactive = sys.stdin.isatty()
    workdir = Path(tempfile.mkdtemp(prefix="edge-proxy-demo-"))
    seed_file = workdir / "seed.yaml"
    seed_file.write_text(yaml.safe_dump_all(demo_objects()))
    kubeconfig = workdir / "kubeconfig"
    port = 6443 if interactive else _free_port()
    cmd = [
        sys.executable,
        "-m",
        "edgeproxy",
        "sim",
        f"--listen=127.0.0.1:{port}",
        f"--seed={seed_file}",
        f"--kubeconfig-out={kubeconfig}",
    ]
    log_path = workdir / "sim.log"
    log_file = None if interactive else log_path.open("wb")
    sim = subprocess.Popen(cmd, stdout=log_file, stderr=log_file)
    try:
        _wait_ready(f"http://127.0.0.1:{port}")
        print(f"Kubernetes API simulator running on http://127.0.0.1:{port}")
        print(f"kubeconfig: {kubeconfig}")
        if interactive:
            print("\nTry, in another terminal:")
            print(f"  export KUBECONFIG={kubeconfig}")
            print("  kubectl get nodes,pods -A")
            print("  kubectl get configmaps -n edge-apps -w")
            print("\nPress Ctrl-C to stop.")
            sim.wait()
        else:
            tour(kubeconfig)
            print("\ndemo finished")
    except KeyboardInterrupt:
        pass
    except RuntimeError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        if log_path.exists():
            print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
        return 1
    finally:
        sim.terminate()
        try:
            sim.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sim.kill()
        if log_file is not None:
            log_file.close()
        shutil.rmtree(workdir, ignore_errors=True)
    os.environ.pop("KUBECONFIG", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
