"""`make demo`: the simulator as the cloud, edge-proxy in front of it, kubectl through it.

With a terminal it keeps both running, prints a kubeconfig and commands to
try, and lets the user cut and restore the cloud link and crash-restart the
proxy with single keys while link changes are printed live (democonsole.py).
Without one (stdin not a TTY) it runs a scripted tour — list online, cut,
list offline, write offline, restart the proxy offline, list, change objects
upstream, restore, watch the client catch up — printing each step, and exits
0 (non-zero if a step misbehaves). Ctrl-C in either mode stops everything the
demo started and exits 130, without a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from edgeproxy.democonsole import DOWN, UP, interactive, wait_link
from edgeproxy.testing import ProxyProcess, SimProcess


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
    objs.append(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "skip-cloud-only", "namespace": "edge-apps"},
            "data": {"hidden": "by --drop-name-prefix=skip-"},
        }
    )
    return objs


class DemoError(RuntimeError):
    pass


def _say(text: str) -> None:
    print(f"\n=== {text}", flush=True)


def _kubectl(kubeconfig: Path, *args: str, expect_ok: bool = True) -> str:
    timeout = (
        [] if any(a.startswith("--request-timeout") for a in args) else ["--request-timeout=10s"]
    )
    cmd = ["kubectl", f"--kubeconfig={kubeconfig}", *timeout, *args]
    print(f"$ kubectl {' '.join(args)}", flush=True)
    started = time.monotonic()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    out = (result.stdout + result.stderr).rstrip()
    print(out if out else "(no output)")
    print(f"  ({elapsed:.2f} s)", flush=True)
    if expect_ok and result.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed (exit {result.returncode})")
    if not expect_ok and result.returncode == 0:
        raise DemoError(f"kubectl {' '.join(args)} should have failed")
    return out


def _upstream(sim: SimProcess, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Write to the cloud directly, through the simulator's never-faulted control port."""
    data = json.dumps(body).encode() if body is not None else None
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    req = urllib.request.Request(
        sim.control_url + path, data=data, method=method, headers={"Content-Type": content_type}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def _watch_in_background(kubeconfig: Path, log_path: Path) -> subprocess.Popen[bytes]:
    out = log_path.open("wb")
    return subprocess.Popen(
        ["kubectl", f"--kubeconfig={kubeconfig}", "get", "configmaps", "-n", "edge-apps", "-w",
         "--output-watch-events", "-o", "custom-columns=EVENT:.type,NAME:.object.metadata.name,"
         "RV:.object.metadata.resourceVersion"],
        stdout=out, stderr=subprocess.STDOUT,
    )  # fmt: skip


def tour(sim: SimProcess, proxy: ProxyProcess, workdir: Path) -> None:
    kc = proxy.kubeconfig
    _say("1. Online: kubectl through edge-proxy (skip-* objects are filtered out)")
    _kubectl(kc, "get", "nodes", "-L", "apps.openyurt.io/nodepool")
    _kubectl(kc, "get", "pods", "-n", "edge-apps", "-o", "wide")
    _kubectl(kc, "get", "configmaps", "-n", "edge-apps")

    _say("2. Cut the cloud link (black-hole: packets vanish, nothing answers)")
    sim.fault(blackhole=True)
    detected = wait_link(proxy.admin_url, DOWN)
    print(f"edge-proxy noticed the cut after {detected:.1f} s")

    _say(
        "3. Offline: lists are served from the cache, selectors applied locally;\n"
        "    what was never read is not invented (services were never listed)"
    )
    _kubectl(kc, "get", "configmaps", "-n", "edge-apps", "-l", "tier=edge")
    _kubectl(kc, "get", "pods", "-n", "edge-apps", "--field-selector", "spec.nodeName=edge-node-1")
    _kubectl(kc, "get", "services", "-n", "edge-apps", expect_ok=False)

    _say(
        "4. Offline writes get a clear 503 with Retry-After: 1; client-go retries ~10 times,\n"
        "    so an outage shorter than that is masked, a longer one fails with the message"
    )
    _kubectl(
        kc,
        "create",
        "configmap",
        "offline-write",
        "-n",
        "edge-apps",
        "--from-literal=a=b",
        "--request-timeout=30s",
        expect_ok=False,
    )

    _say("5. Crash the proxy (kill -9) while offline and start it again")
    proxy.kill()
    restart = proxy.start()
    print(f"edge-proxy restarted from its on-disk cache and answers after {restart:.2f} s")
    _kubectl(kc, "get", "configmaps", "-n", "edge-apps")

    _say("6. A client starts watching while offline (served from the cache)")
    watch_log = workdir / "watch.log"
    watch = _watch_in_background(kc, watch_log)
    time.sleep(1.5)

    _say("7. Meanwhile the cloud changes: create, update and delete ConfigMaps upstream")
    _upstream(sim, "POST", "/api/v1/namespaces/edge-apps/configmaps",
              {"metadata": {"name": "made-during-outage"}, "data": {"a": "1"}})  # fmt: skip
    _upstream(
        sim,
        "PATCH",
        "/api/v1/namespaces/edge-apps/configmaps/settings-1",
        {"data": {"index": "changed"}},
    )
    _upstream(sim, "DELETE", "/api/v1/namespaces/edge-apps/configmaps/settings-4")
    print("upstream now has made-during-outage, a changed settings-1, and no settings-4")

    _say("8. Restore the link: the watch carries on with the events it missed, no relist")
    sim.heal()
    restored = wait_link(proxy.admin_url, UP)
    print(f"edge-proxy saw the link return after {restored:.1f} s")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "settings-4" not in _deleted_lines(watch_log):
        time.sleep(0.2)
    watch.terminate()
    watch.wait(timeout=10)
    print(watch_log.read_text().rstrip())
    if "made-during-outage" not in watch_log.read_text() or "settings-4" not in _deleted_lines(
        watch_log
    ):
        raise DemoError("the watch did not catch up with the changes made during the outage")
    _kubectl(kc, "get", "configmaps", "-n", "edge-apps")

    _say("9. What the proxy knows (admin listener)")
    debug = proxy.admin("/debug/cache")
    for scope in debug["scopes"]:
        print(f"  {scope['scope']}: {scope['objects']} objects at RV {scope['resourceVersion']}")


def _deleted_lines(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("DELETED"))


def _warm(proxy: ProxyProcess) -> None:
    """List once through the proxy, so it has something to answer with when the link is cut."""
    subprocess.run(
        ["kubectl", f"--kubeconfig={proxy.kubeconfig}", "--request-timeout=10s",
         "get", "nodes,pods,configmaps", "-A"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip


def _children() -> list[int]:
    """Our child processes still running, from /proc (Linux, as the proxy)."""
    me = str(os.getpid())
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the ")".
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == me and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def _stop_all(sim: SimProcess | None, proxy: ProxyProcess | None) -> None:
    """Stop what we started, even what an interrupt left half-started."""
    if proxy is not None:
        proxy.close()
    if sim is not None:
        sim.stop()
    for pid in _children():
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while _children() and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.05)


def main() -> int:
    if shutil.which("kubectl") is None:
        print("make demo needs kubectl on PATH", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="edge-proxy-demo-"))
    seed_file = workdir / "seed.yaml"
    seed_file.write_text(yaml.safe_dump_all(demo_objects()))
    sim: SimProcess | None = None
    proxy: ProxyProcess | None = None
    try:
        sim = SimProcess(f"--seed={seed_file}", workdir=workdir / "sim")
        proxy = ProxyProcess(sim.kubeconfig, "--drop-name-prefix=skip-", workdir=workdir / "proxy")
        print(f"cloud (simulated kube-apiserver): {sim.url}  (pid {sim.proc.pid})")
        print(
            f"edge-proxy: {proxy.url}  (admin {proxy.admin_url}, cache {proxy.cache_dir},"
            f" pid {proxy.proc.pid if proxy.proc else '?'})",
            flush=True,
        )
        if sys.stdin.isatty():
            _warm(proxy)
            interactive(sim, proxy)
        else:
            tour(sim, proxy, workdir)
            print("\ndemo finished")
        return 0
    except KeyboardInterrupt:
        # Ctrl-C is how people leave a demo: no traceback, everything stopped.
        print("\ninterrupted: stopping edge-proxy and the simulator", flush=True)
        return 130
    except (DemoError, RuntimeError, OSError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        if proxy is not None:
            print(proxy.log()[-3000:], file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave processes behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _stop_all(sim, proxy)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
