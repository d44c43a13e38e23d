"""Following a rotating client certificate: the kubelet's, when the proxy borrows it.

On a kubeadm node the kubelet renews its client certificate before it
expires and points `/var/lib/kubelet/pki/kubelet-client-current.pem` (cert
and key in one file) at the new one. A proxy that talks to the cloud as
this node, with a copy of the kubelet's kubeconfig, as YurtHub's
kubelet-certificate mode does, must follow, or it starts getting 401s the
day the old certificate expires.

So the files a kubeconfig or `--client-cert`/`--client-key` name are
watched (their inode, size and mtime, every `interval` seconds) and, when
they change and load cleanly, put into the same TLS context. As the kubelet
does on rotation, open upstream connections are then closed, so every
request from then on is made with the new certificate (reflectors resume
their watches from their resourceVersion). A half-written or mismatched
pair is logged and the old certificate kept (it is tried on a scratch
context first: a failed load leaves the context it was tried on without a
usable certificate); the next change is tried again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

# The kubelet rotates at 70-90% of a certificate's lifetime (days to a year):
# a few seconds' delay is nothing, and a stat of two files costs nothing.
RELOAD_CHECK_SECONDS = 10.0

Signature = tuple[tuple[int, int, int], ...]


def file_signature(paths: tuple[Path, ...]) -> Signature:
    out = []
    for path in paths:
        try:
            st = os.stat(path)  # follows the kubelet's symlink to the current file
        except OSError:
            out.append((0, 0, 0))
        else:
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


class CertificateReloader:
    """Reload `cert_file`/`key_file` into `ctx` when they change.

    Used for the proxy's client certificate upstream and for the secure
    listener's serving certificate (`what` names which in the log).
    """

    def __init__(
        self,
        ctx: ssl.SSLContext,
        cert_file: Path,
        key_file: Path,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
        interval: float = RELOAD_CHECK_SECONDS,
        what: str = "client certificate",
    ) -> None:
        self.ctx = ctx
        self.what = what
        self.cert_file = cert_file
        self.key_file = key_file
        self.on_change = on_change
        self.interval = interval
        self.reloads = 0
        self._seen = file_signature((cert_file, key_file))

    def check(self) -> bool:
        """Load the files if they changed since last seen; True when a new pair is in use."""
        now = file_signature((self.cert_file, self.key_file))
        if now == self._seen:
            return False
        self._seen = now
        try:
            # Tried on a scratch context first: a failed load_cert_chain leaves
            # the context it was called on without a usable certificate.
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(self.cert_file, self.key_file)
            self.ctx.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            # Mid-rotation (a new cert with the old key) or a partial write:
            # keep the old pair, which is still valid, and look again later.
            log.warning(
                "%s %s changed but does not load (%s); keeping the previous one",
                self.what,
                self.cert_file,
                exc,
            )
            return False
        self.reloads += 1
        log.info("%s %s changed: new connections use the new one", self.what, self.cert_file)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self.check() and self.on_change is not None:
                await self.on_change()
