"""The bench's view of the cloud link: a target reached through a counting `Relay`.

The relay itself (src/edgeproxy/link.py) counts every byte each way outside
the processes measured; this module points an upstream's kubeconfig at it.
"""

from __future__ import annotations

from pathlib import Path

from edgeproxy.bench.baselines import Upstream
from edgeproxy.link import Relay

__all__ = ["Relay", "relayed"]


def relayed(upstream: Upstream, relay: Relay, workdir: Path) -> Upstream:
    """The same upstream, reached through `relay` (a kubeconfig pointing at it)."""
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "relayed.kubeconfig"
    kubeconfig.write_text(upstream.kubeconfig.read_text().replace(upstream.url, relay.url))
    return Upstream(relay.url, kubeconfig, sim=upstream.sim, headers=upstream.headers)
