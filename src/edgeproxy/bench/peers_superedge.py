"""SuperEdge's lite-apiserver as a child process: the other node-side proxy with a disk cache.

lite-apiserver (github.com/superedge/superedge v0.9.0, the newest release
the Go module proxy serves; built by `k8s/build-peers.sh lite-apiserver`)
is a reverse proxy that writes every successful GET/LIST answer to a file
cache and answers from it when kube-apiserver cannot be reached. It serves
HTTPS only, and picks its upstream identity by the client's certificate:
a client certificate whose CN is in its `--tls-config-file` gets that
certificate's transport; any other client goes through a transport with no
certificate, its own Authorization header passed on. Here the one pair in
the file is the target's identity (`bench:superedge`, see peers_way): the
hollow kubelet presents it, the informers (which take a token only) send
the token of the same user. Everything runs from certificates issued by
the control plane's CA; nothing needs root. By default it rewrites every
client's Accept to JSON (`--modify-request-accept`), so the protobuf
clients get JSON from it, as they would on a SuperEdge node.

It has no readiness endpoint (every path is proxied): `healthy` means its
TLS port accepts a handshake.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

from edgeproxy.bench import peers
from edgeproxy.controlplane import ControlPlane
from edgeproxy.testing import free_port, stop_process


def _split(pem: bytes, cert: Path, key: Path) -> None:
    cut = pem.index(b"-----BEGIN EC PRIVATE KEY-----")
    for path, part in ((cert, pem[:cut]), (key, pem[cut:])):
        path.write_bytes(part)
        path.chmod(0o600)


class LiteApiserver:
    """`lite-apiserver` for one node, its cloud at `host:port` (e.g. a relay), as `user`."""

    def __init__(
        self, control: ControlPlane, host: str, port: int, workdir: Path, user: str
    ) -> None:
        self.bin = peers.binary("superedge")
        self.control = control
        self.host, self.upstream_port = host, port
        self.root = workdir / "lite-apiserver"
        self.port = free_port()
        self.log_path = workdir / "lite-apiserver.log"
        self.proc: subprocess.Popen[bytes] | None = None
        pki = self.root / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        self.ca_file = control.bundle.ca_cert
        self.serving = (pki / "serving.crt", pki / "serving.key")
        _split(
            peers.issue(control, "lite-apiserver", (), server=True, ips=("127.0.0.1",)),
            *self.serving,
        )
        self.client = (pki / "client.crt", pki / "client.key")
        _split(peers.issue(control, user, ("system:masters",), server=False), *self.client)
        self.tls_config = pki / "tls.json"
        self.tls_config.write_text(
            json.dumps([{"cert": str(self.client[0]), "key": str(self.client[1])}])
        )
        self.spawn()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def spawn(self) -> None:
        """Start the process (from what its root dir holds: certificates, file cache)."""
        args = [
            str(self.bin),
            f"--ca-file={self.ca_file}",
            f"--apiserver-ca-file={self.ca_file}",
            f"--tls-cert-file={self.serving[0]}",
            f"--tls-private-key-file={self.serving[1]}",
            f"--tls-config-file={self.tls_config}",
            f"--kube-apiserver-url={self.host}",
            f"--kube-apiserver-port={self.upstream_port}",
            "--address=127.0.0.1",
            f"--port={self.port}",
            "--cache-type=file",
            f"--file-cache-path={self.root / 'cache'}",
            "--v=2",
        ]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float) -> float | None:
        """Seconds until its port takes a TLS handshake, or None after `timeout`; raises if it exits."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"lite-apiserver exited with {code}:\n{self.log()}")
            if self.healthy():
                return time.monotonic() - t0
            time.sleep(0.2)
        return None

    def healthy(self) -> bool:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        try:
            with (
                socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock,
                context.wrap_socket(sock, server_hostname="127.0.0.1"),
            ):
                return True
        except (OSError, ssl.SSLError):
            return False

    def errors(self, most: int = 4) -> list[str]:
        """Its errors, one line per place in its source: the cache's stream failures first
        (they are what stalls clients), then the rest (klog `E…` lines)."""
        first: dict[str, str] = {}
        rest: dict[str, str] = {}
        for line in self.log_path.read_text(errors="replace").splitlines():
            fields = line.split()
            where = fields[3] if len(fields) > 3 else line
            if "decode end" in line or "Write cache error" in line:
                first.setdefault(where, line)
            elif line.startswith("E"):
                rest.setdefault(where, line)
        return [*first.values(), *rest.values()][:most]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None
