"""The bench's view of the cloud link: targets that reach the upstream through a `Relay`.

The relay itself (src/edgeproxy/link.py) forwards TCP outside the processes
measured, counts every byte each way and cuts on request. `relayed()`
points an upstream's kubeconfig at one (the bandwidth and watchcache suites
count the cloud's bytes there); `link()` gives the suites that cut the link
(challenge, outage, restart) an upstream they can cut, whatever it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from edgeproxy.bench.cloud import Upstream
from edgeproxy.link import Relay

__all__ = ["LINK_NOTE", "Relay", "link", "relayed", "start_relay"]

LINK_NOTE = (
    "every target reaches the upstream through the TCP relay that cuts the link"
    " (in the bench's process: one more hop than on the simulator);"
    " writes in the cloud go straight to the upstream"
)


async def start_relay(upstream: Upstream) -> Relay:
    """A relay to the cloud itself (not to another relay)."""
    where = urlsplit(upstream.origin or upstream.url)
    default = 443 if where.scheme == "https" else 80
    return await Relay(where.hostname or "127.0.0.1", where.port or default).start()


def relayed(upstream: Upstream, relay: Relay, workdir: Path) -> Upstream:
    """The same upstream, reached through `relay` (a kubeconfig pointing at it).

    The scheme stays the upstream's: TLS passes through the relay, so an
    HTTPS upstream is https://127.0.0.1:<relay port> (its certificate names
    127.0.0.1 when it runs on this machine, as the sim and the ControlPlane do).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    origin = upstream.origin or upstream.url
    url = f"{urlsplit(origin).scheme}://127.0.0.1:{relay.port}"
    kubeconfig = workdir / "relayed.kubeconfig"
    kubeconfig.write_text(upstream.kubeconfig.read_text().replace(origin, url))
    return dataclasses.replace(upstream, url=url, kubeconfig=kubeconfig, relay=relay, origin=origin)


@contextlib.asynccontextmanager
async def link(upstream: Upstream, workdir: Path) -> AsyncIterator[Upstream]:
    """The upstream behind a link a suite may cut (`Upstream.cut()` / `heal()`).

    The simulator cuts its own API port, so its targets reach it as always
    (no extra hop: its figures stay comparable with earlier runs). Any other
    upstream the bench started gets a relay in front; one it does not own
    (`--against KUBECONFIG`) is returned as is, and cannot be cut.
    """
    if upstream.sim is not None or not upstream.owned:
        yield upstream
        return
    relay = await start_relay(upstream)
    try:
        yield relayed(upstream, relay, workdir)
    finally:
        await relay.stop()
