"""The four ways in that every suite compares, started the same way on the same data.

- **direct**: straight to the upstream (the simulator, or the cluster of
  `--against KUBECONFIG`): what a node's clients get without anything between;
- **nginx**: Debian's nginx-light as a plain reverse proxy (`proxy_pass` to the
  upstream, `proxy_buffering off` so watch events are not held back, upstream
  keep-alive, one worker like the proxy's one event loop), config and logs in
  a temp dir; it caches nothing, so it shows what forwarding alone costs;
- **strict** and **cache-first**: `edge-proxy serve` in each consistency mode.

`open_static_nginx` is another nginx: it serves fixed files (and their
`.gz` twins through `gzip_static`), as the fastest a cached list could be
served (the watchcache suite).

A baseline that cannot run here raises `Skip` with a message saying how to
get it (nginx missing; nginx in front of an HTTPS cluster).
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgeproxy.bench.kubeclient import Api, BenchError
from edgeproxy.bench.procstat import ProcGroup
from edgeproxy.testing import ProxyProcess, SimProcess, free_port, stop_process

TARGETS = ("direct", "nginx", "strict", "cache-first")
PROXIES = ("strict", "cache-first")
INSTALL_NGINX = "apt-get install -y nginx-light"
INSTALL_WRK = "apt-get install -y wrk"
MODE_ARGS = {"strict": (), "cache-first": ("--consistency=cache-first",)}


class Skip(Exception):
    """This baseline cannot run here; the message says why and how to fix it."""


@dataclass(slots=True)
class Upstream:
    """The cloud: a simulator in a child process, or a real cluster."""

    url: str
    kubeconfig: Path
    sim: SimProcess | None = None
    ssl_context: ssl.SSLContext | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def faults(self) -> bool:
        """Whether the link can be cut (only the simulator can)."""
        return self.sim is not None

    def api(self, connections: int = 0) -> Api:
        return Api(
            self.url, ssl_context=self.ssl_context, headers=self.headers, connections=connections
        )

    def writer(self) -> Api:
        """Writes "in the cloud": through the sim's control port, which faults never touch."""
        if self.sim is not None:
            return Api(self.sim.control_url)
        return self.api()

    def procs(self) -> ProcGroup | None:
        return None if self.sim is None else ProcGroup(self.sim.proc.pid)


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
            proxy_pass http://cloud;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
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


class Nginx:
    """nginx in the foreground: a reverse proxy to `upstream_hostport`, or static `files`."""

    def __init__(
        self, upstream_hostport: str = "", *, files: Mapping[str, bytes] | None = None
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
            conf.write_text(
                NGINX_CONF.format(d=self.dir, port=self.port, upstream=upstream_hostport)
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
        if upstream.url.startswith("https://"):
            raise Skip("the nginx baseline needs a plain-http upstream (run against the simulator)")
        nginx = Nginx(upstream.url.removeprefix("http://"))
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
