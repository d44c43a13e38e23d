"""The HTTPS listener pods reach the proxy on: its certificate, and who may ask.

Pods use in-cluster config: HTTPS to the `kubernetes` Service (which the
masterservice filter points at this listener), the cluster CA, and their
service-account token. So the secure listener serves the same router as the
loopback one, with a certificate the cluster CA signed, and each request is
forwarded with the pod's own token (docs/identity.md).

The serving certificate is re-read when its files change (a renewed
certificate from cert-manager, a CSR, or an operator), without a restart:
a new pair is first loaded into a fresh context, so a half-written or
mismatched pair is refused and the old one stays in use; only a pair that
loads is then put into the listening context, which new handshakes use
while established connections keep theirs.

HTTP/1.1 only, announced by ALPN: aiohttp's server has no HTTP/2, and
client-go and the Python client fall back to HTTP/1.1 cleanly.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from edgeproxy.errors import ConfigError
from edgeproxy.kube.status import StatusError
from edgeproxy.proxy.identity import bearer_token
from edgeproxy.upstream.certreload import RELOAD_CHECK_SECONDS, CertificateReloader

log = logging.getLogger(__name__)


def _fresh_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_file, key_file)
    return ctx


class ServingCertificate:
    """The secure listener's TLS context, following its certificate files."""

    def __init__(
        self, cert_file: Path, key_file: Path, *, interval: float = RELOAD_CHECK_SECONDS
    ) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.interval = interval
        self.context = self._load_or_fail()
        self._reloader = CertificateReloader(
            self.context, cert_file, key_file, interval=interval, what="serving certificate"
        )

    def _load_or_fail(self) -> ssl.SSLContext:
        for flag, path in (
            ("--tls-cert-file", self.cert_file),
            ("--tls-private-key-file", self.key_file),
        ):
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"{flag} {path}: cannot read: {exc.strerror or exc}") from None
            if b"-----BEGIN" not in data:
                raise ConfigError(f"{flag} {path}: not a PEM file")
        try:
            return _fresh_context(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"--tls-cert-file {self.cert_file} and --tls-private-key-file {self.key_file}: "
                f"cannot be used as a serving certificate: {exc}"
            ) from None

    def check(self) -> bool:
        """Reload the pair if its files changed and it loads; True when it was swapped in."""
        return self._reloader.check()

    @property
    def reloads(self) -> int:
        return self._reloader.reloads

    async def run(self) -> None:
        await self._reloader.run()


def secure_middleware(anonymous: bool) -> Middleware:
    """Refuse the secure listener's credential-less requests unless `anonymous`.

    A pod without a token would otherwise act with the proxy's identity,
    which is why anonymous requests are refused by default.
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not anonymous and bearer_token(request.headers) is None:
            err = StatusError(
                401,
                "Unauthorized",
                "edge-proxy's secure listener needs a bearer token "
                "(anonymous requests are off: --secure-anonymous-auth=false)",
            )
            return web.Response(
                body=err.body(), status=err.code, headers={"Content-Type": "application/json"}
            )
        return await handler(request)

    return middleware
