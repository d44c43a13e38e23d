"""The four ways in that every suite compares, started the same way on the same data.

- **direct**: straight to the upstream (the simulator, the real apiserver of
  `--against real`, or the cluster of `--against KUBECONFIG`): what a node's
  clients get without anything between;
- **nginx**: Debian's nginx-light as a plain reverse proxy (`proxy_pass` to the
  upstream, `proxy_buffering off` so watch events are not held back, upstream
  keep-alive, one worker like the proxy's one event loop), config and logs in
  a temp dir; it caches nothing, so it shows what forwarding alone costs. In
  front of an HTTPS upstream it speaks TLS to it with the kubeconfig's
  credentials (`proxy_ssl_certificate`, `proxy_ssl_trusted_certificate`,
  the bearer token as a header), as the proxy does; its clients speak http;
- **strict** and **cache-first**: `edge-proxy serve` in each consistency mode.

`open_static_nginx` is another nginx: it serves fixed files (and their
`.gz` twins through `gzip_static`), as the fastest a cached list could be
served (the watchcache suite).

A baseline that cannot run here raises `Skip` with a message saying how to
get it (nginx missing).
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from edgeproxy.bench.cloud import Upstream
from edgeproxy.bench.kubeclient import Api, BenchError
from edgeproxy.bench.procstat import ProcGroup
from edgeproxy.testing import ProxyProcess, free_port, stop_process

__all__ = ["PROXIES", "TARGETS", "Skip", "Target", "Upstream", "open_static_nginx", "open_target"]

TARGETS = ("direct", "nginx", "strict", "cache-first")
PROXIES = ("strict", "cache-first")
INSTALL_NGINX = "apt-get install -y nginx-light"
INSTALL_WRK = "apt-get install -y wrk"
MODE_ARGS = {"strict": (), "cache-first": ("--consistency=cache-first",)}


class Skip(Exception):
    """This baseline cannot run here; the message says why and how to fix it."""


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    upstream cloud {{ server {upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 16m;
        location / {{
            proxy_pass {scheme}://cloud;
            proxy_http_version 1.1;
            proxy_set_header Connection "";{tls}
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


STATIC_CONF = """\
worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    default_type application/json;
    client_body_temp_path {d}/tmp-body;
    proxy_temp_path {d}/tmp-proxy;
    fastcgi_temp_path {d}/tmp-fastcgi;
    uwsgi_temp_path {d}/tmp-uwsgi;
    scgi_temp_path {d}/tmp-scgi;
    server {{
        listen 127.0.0.1:{port};
        root {d}/www;
        gzip_static on;
        location / {{ }}
    }}
}}
"""


def _tls_lines(upstream: Upstream, d: Path) -> str:
    """nginx's TLS to an HTTPS upstream: verified, with the kubeconfig's client cert or token."""
    creds = upstream.creds
    if creds is None:
        raise Skip("nginx: no credentials for the HTTPS upstream")
    lines = ["proxy_ssl_session_reuse on;"]
    if creds.ca_pem is not None and not creds.insecure_skip_verify:
        (d / "ca.pem").write_bytes(creds.ca_pem)
        # nginx matches DNS names only, not IP SANs: the apiserver's cert names localhost.
        name = creds.tls_server_name or _host(upstream.origin or upstream.url)
        name = "localhost" if name == "127.0.0.1" else name
        lines += [
            f"proxy_ssl_trusted_certificate {d}/ca.pem;",
            "proxy_ssl_verify on;",
            f"proxy_ssl_name {name};",
            "proxy_ssl_server_name on;",
        ]
    if creds.client_cert_pem is not None and creds.client_key_pem is not None:
        (d / "client.pem").write_bytes(creds.client_cert_pem)
        key = d / "client.key"
        key.write_bytes(creds.client_key_pem)
        key.chmod(0o600)
        lines += [f"proxy_ssl_certificate {d}/client.pem;", f"proxy_ssl_certificate_key {key};"]
    for header, value in upstream.headers.items():
        lines.append(f'proxy_set_header {header} "{value}";')
    return "".join(f"\n            {line}" for line in lines)


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]


def _hostport(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


class Nginx:
    """nginx in the foreground: a reverse proxy to `upstream`, or static `files`."""

    def __init__(
        self, upstream: Upstream | None = None, *, files: Mapping[str, bytes] | None = None
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="edge-proxy-bench-nginx-"))
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        probe = "/version"
        if files:
            # The worker runs as nobody when the master is root: mkdtemp's 0700 would be a 403.
            self.dir.chmod(0o755)
            (self.dir / "www").mkdir()
            for name, data in files.items():
                (self.dir / "www" / name).write_bytes(data)
            conf.write_text(STATIC_CONF.format(d=self.dir, port=self.port))
            probe = "/" + next(iter(files))
        else:
            assert upstream is not None
            https = upstream.url.startswith("https://")
            conf.write_text(
                NGINX_CONF.format(
                    d=self.dir,
                    port=self.port,
                    upstream=_hostport(upstream.url),
                    scheme="https" if https else "http",
                    tls=_tls_lines(upstream, self.dir) if https else "",
                )
            )
        self._log = (self.dir / "stderr.log").open("wb")
        args = ["nginx", "-e", str(self.dir / "error.log"), "-p", str(self.dir), "-c", str(conf)]
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise Skip(f"nginx exited at start: {(self.dir / 'error.log').read_text()[-500:]}")
            try:
                with urllib.request.urlopen(self.url + probe, timeout=1):
                    return
            except urllib.error.HTTPError:
                return  # nginx answered (the upstream's status is not ours to judge)
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise Skip("nginx did not start within 10 s")

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(slots=True)
class Target:
    """One way in, with the process in between (if any) to measure."""

    name: str
    url: str
    upstream: Upstream
    procs: ProcGroup | None = None
    proxy: ProxyProcess | None = None
    nginx: Nginx | None = None

    def api(self, connections: int = 0) -> Api:
        if self.name == "direct":
            return self.upstream.api(connections)
        return Api(self.url, connections=connections)

    def link_up(self) -> bool:
        """The proxy's view of the cloud link (`/readyz?verbose`)."""
        assert self.proxy is not None
        try:
            text = str(self.proxy.admin("/readyz?verbose"))
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
        return "[+]upstream" in text

    async def wait_link(self, up: bool, within: float = 15.0) -> float:
        """Seconds until the proxy reports the link `up` (or down)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < within:
            if self.link_up() == up:
                return time.monotonic() - t0
            await asyncio.sleep(0.02)
        raise BenchError(f"{self.name}: link not seen {'up' if up else 'down'} in {within} s")

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.close()
        if self.nginx is not None:
            self.nginx.stop()


def open_target(
    name: str, upstream: Upstream, *proxy_args: str, workdir: Path | None = None
) -> Target:
    """Start the target `name` in front of `upstream`; raises Skip when it cannot run."""
    if name == "direct":
        return Target(name, upstream.url, upstream)
    if name == "nginx":
        if shutil.which("nginx") is None:
            raise Skip(f"nginx is not installed; install it with `{INSTALL_NGINX}`")
        nginx = Nginx(upstream)
        return Target(name, nginx.url, upstream, ProcGroup(nginx.proc.pid, True), nginx=nginx)
    if name in MODE_ARGS:
        proxy = ProxyProcess(upstream.kubeconfig, *MODE_ARGS[name], *proxy_args, workdir=workdir)
        assert proxy.proc is not None
        return Target(name, proxy.url, upstream, ProcGroup(proxy.proc.pid), proxy=proxy)
    raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}")


def open_static_nginx(upstream: Upstream, files: Mapping[str, bytes]) -> Target:
    """nginx serving `files` (name -> bytes; `x.gz` beside `x` for gzip) as the `nginx` target."""
    if shutil.which("nginx") is None:
        raise Skip(f"nginx is not installed; install it with `{INSTALL_NGINX}`")
    nginx = Nginx(files=files)
    return Target("nginx", nginx.url, upstream, ProcGroup(nginx.proc.pid, True), nginx=nginx)
