"""Pointing a node's components at the proxy: `edge-proxy kubeconfig`.

Each component that should go through the proxy (the kubelet, kube-proxy,
coredns, a CNI agent, an operator) needs a kubeconfig whose server is the
proxy's client listener and which carries no credentials: the proxy talks to
the cloud with its own (docs/node-wiring.md), as YurtHub does. Writing that
file by hand is where a node setup goes wrong, so the command writes it,
named after the component, with a comment saying which flag or file of that
component reads it.

The proxy must not be pointed at itself: a kubelet kubeconfig rewritten to
the proxy and then given back to the proxy as its upstream is a loop that
only shows as timeouts. `check_not_self` refuses it at start.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from edgeproxy.errors import ConfigError

DEFAULT_LISTEN = "127.0.0.1:10261"

# Where each well-known component reads its kubeconfig, for the file's header.
# A component not listed here gets the generic advice.
WHERE: dict[str, str] = {
    "kubelet": "the kubelet's --kubeconfig (kubeadm: /etc/kubernetes/kubelet.conf); "
    "restart the kubelet after writing it",
    "kube-proxy": "kube-proxy's --kubeconfig, or clientConnection.kubeconfig in its "
    "KubeProxyConfiguration (kubeadm: the kube-system/kube-proxy ConfigMap, "
    "/var/lib/kube-proxy/kubeconfig.conf)",
    "coredns": "the kubeconfig option of CoreDNS's kubernetes plugin "
    "(kubernetes cluster.local { kubeconfig /etc/coredns/edge-proxy.kubeconfig })",
    "flannel": "flanneld's --kubeconfig-file",
    "calico-node": "calico-node's KUBECONFIG environment variable",
    "cilium-agent": "cilium-agent's --k8s-kubeconfig-path",
}

_COMPONENT = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


def proxy_url(listen: str) -> str:
    """The URL clients use for a proxy listening on `listen` (HOST:PORT).

    A wildcard listen address (0.0.0.0, ::, empty) is reached on loopback.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"--listen: {listen!r} is not HOST:PORT")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def kubeconfig_for(component: str, server: str) -> str:
    """A kubeconfig (YAML text) pointing `component` at the proxy at `server`."""
    if not _COMPONENT.match(component):
        raise ConfigError(
            f"--component: {component!r} is not a component name (lower-case letters, "
            "digits, '-' and '.', as in kubelet, kube-proxy, coredns, cilium-agent)"
        )
    where = WHERE.get(component, f"{component}'s kubeconfig flag or KUBECONFIG")
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "edge-proxy", "cluster": {"server": server}}],
        # No credentials: the proxy authenticates to the cloud itself.
        "users": [{"name": component, "user": {}}],
        "contexts": [{"name": component, "context": {"cluster": "edge-proxy", "user": component}}],
        "current-context": component,
    }
    header = (
        f"# {component} through edge-proxy at {server}: written by "
        f"`edge-proxy kubeconfig --component {component}`.\n"
        f"# Read by {where}.\n"
        "# No credentials: the proxy talks to the cloud with its own (docs/node-wiring.md).\n"
    )
    return header + yaml.safe_dump(doc, sort_keys=False)


def write_file(path: Path, text: str) -> None:
    """Replace `path` atomically (a reader never sees half a kubeconfig), mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_not_self(servers: Sequence[str], listen: str) -> None:
    """Refuse an upstream that is this proxy's own client listener."""
    own_port = listen.rpartition(":")[2]
    for server in servers:
        parts = urlsplit(server)
        host = (parts.hostname or "").lower()
        loopback = host in ("localhost", "::1") or host.startswith("127.")
        port = str(parts.port or (443 if parts.scheme == "https" else 80))
        if parts.scheme == "http" and loopback and port == own_port:
            raise ConfigError(
                f"the upstream server {server} is this proxy's own listener ({listen}): "
                "give the proxy a kubeconfig that points at the cloud apiserver, e.g. a copy "
                "of the kubelet's taken before it was pointed at the proxy"
            )
