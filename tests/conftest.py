"""Shared fixtures: simulators as real child processes, raw API access, kubectl binaries.

Integration tests talk to `edge-proxy sim` over loopback exactly as clients
do, so the simulator runs as a separate process (`SimProcess`), one per test
module, and tests isolate themselves by namespace instead of restarting it.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import LinkRelay
from edgeproxy.testing import ProxyProcess, SimProcess


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """A plain-HTTP simulator shared by the tests of one module."""
    proc = SimProcess(workdir=tmp_path_factory.mktemp("sim"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def sim_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimProcess]:
    """An HTTPS simulator (client certificate or bearer token) shared by one module."""
    proc = SimProcess(tls=True, workdir=tmp_path_factory.mktemp("sim-tls"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def real(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The real control plane (etcd + kube-apiserver), shared by the whole session.

    Built by k8s/build.sh on first use (minutes on a cold machine, then cached);
    tests isolate themselves by namespace, as with the simulator.
    """
    proc = ControlPlane(workdir=tmp_path_factory.mktemp("real"))
    try:
        yield proc
    finally:
        proc.stop()


# -- the cloud: an upstream behind a link the test cuts ------------------------

UPSTREAMS = ["sim", "real"]


@dataclass
class Cloud:
    """An upstream, the relay in front of it, and a kubeconfig through the relay.

    `upstream` is the HTTPS simulator (`sim_tls`) or the real control plane
    (`real`): both offer `.url`, `.kubeconfig`, `.workdir/tls/...` and
    `.compact()`. A proxy under test is given `kubeconfig`, so its link runs
    through `link` and is cut there the same way for both; the test itself
    reads and writes `upstream` directly, which no cut ever reaches.
    """

    name: str
    upstream: Any  # SimProcess or ControlPlane: the same test-facing surface
    link: LinkRelay
    kubeconfig: Path

    @property
    def direct_url(self) -> str:
        return str(self.upstream.url)

    @property
    def token(self) -> str:
        return upstream_token(self.upstream)

    @property
    def ca_file(self) -> Path:
        return Path(self.upstream.workdir) / "tls" / "ca.crt"

    @property
    def ssl(self) -> ssl.SSLContext:
        """For raw clients straight to the upstream (CA and admin client certificate)."""
        ctx = ssl_context(self.upstream)
        assert ctx is not None
        return ctx


def upstream_token(upstream: Any) -> str:
    """The upstream's admin bearer token."""
    if isinstance(upstream, SimProcess):
        return (upstream.workdir / "tls" / "token").read_text().strip()
    return str(upstream.token)


@contextlib.contextmanager
def open_cloud(request: pytest.FixtureRequest, name: str, workdir: Path) -> Iterator[Cloud]:
    upstream = request.getfixturevalue("sim_tls" if name == "sim" else "real")
    port = int(str(upstream.url).rsplit(":", 1)[1])
    link = LinkRelay("127.0.0.1", port)
    kubeconfig = workdir / "through-link.kubeconfig"
    kubeconfig.write_text(upstream.kubeconfig.read_text().replace(upstream.url, link.url("https")))
    try:
        yield Cloud(name, upstream, link, kubeconfig)
    finally:
        link.close()


@pytest.fixture(params=UPSTREAMS)
def cloud(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Cloud]:
    """Each test twice: the simulator, then the real kube-apiserver, behind a fresh link.

    A test that needs a simulator feature with no real equivalent narrows it
    with `@pytest.mark.parametrize("cloud", ["sim"], indirect=True)` and says why.
    """
    with open_cloud(request, request.param, tmp_path) as c:
        yield c


@pytest.fixture(scope="module", params=UPSTREAMS)
def module_cloud(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cloud]:
    """As `cloud`, shared by a module's tests (for module-scoped proxies and data)."""
    with open_cloud(request, request.param, tmp_path_factory.mktemp("cloud")) as c:
        yield c


def readyz(proxy: ProxyProcess) -> str:
    try:
        return str(proxy.admin("/readyz?verbose"))
    except urllib.error.HTTPError as err:
        with err:
            return str(err.read().decode())


def wait_link(proxy: ProxyProcess, up: bool, timeout: float = 20) -> float:
    """Seconds until the proxy's /readyz?verbose reports the link up (down)."""
    want = "[+]upstream reachable" if up else "[-]upstream unreachable"
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if want in readyz(proxy):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(
        f"proxy did not report {want!r} within {timeout}s:\n{readyz(proxy)}\n{proxy.log()}"
    )


# -- raw API access ---------------------------------------------------------


def ssl_context(sim: SimProcess) -> ssl.SSLContext | None:
    """A client TLS context trusting the sim's CA and presenting its client cert."""
    if not sim.tls:
        return None
    tls_dir = sim.workdir / "tls"
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    ctx.load_cert_chain(str(tls_dir / "client.crt"), str(tls_dir / "client.key"))
    return ctx


@dataclass(frozen=True, slots=True)
class ApiResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def api_request(
    sim: SimProcess,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    timeout: float = 10.0,
) -> ApiResponse:
    """One request to the sim's API port; HTTP errors are returned, not raised."""
    data = None
    headers = {"Accept": "application/json"}
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers["Content-Type"] = content_type
    req = urllib.request.Request(sim.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ssl_context(sim)) as resp:
            return ApiResponse(resp.status, dict(resp.headers), resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return ApiResponse(err.code, dict(err.headers), err.read())


@pytest.fixture
def client_ssl() -> Callable[[SimProcess], ssl.SSLContext | None]:
    """`client_ssl(sim)`: the TLS context for raw clients (None for a plain sim)."""
    return ssl_context


@pytest.fixture
def api() -> Callable[..., ApiResponse]:
    """`api(sim, method, path, body=None, content_type=...)` -> ApiResponse."""
    return api_request


_ns_counter = itertools.count()


@pytest.fixture
def make_namespace(request: pytest.FixtureRequest) -> Callable[[SimProcess], str]:
    """Create a fresh, uniquely named namespace in a sim (through the API, as JSON)."""

    def make(sim: SimProcess) -> str:
        base = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())
        name = f"{base[:40].strip('-')}-{next(_ns_counter)}"
        ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        resp = api_request(sim, "POST", "/api/v1/namespaces", ns)
        assert resp.status == 201, resp.body
        return name

    return make


# -- kubectl binaries -------------------------------------------------------


@cache
def _kubectl_version(path: str) -> str:
    out = subprocess.run(
        [path, "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    # gitVersion like "v1.32.4" or "v1.32.4-dispatcher": keep "1.32".
    git_version = str(json.loads(out)["clientVersion"]["gitVersion"])
    return ".".join(git_version.lstrip("v").split(".")[:2])


@cache
def find_kubectl_bins() -> tuple[tuple[str, str], ...]:
    """(label, path) for the `kubectl` on PATH and the oldest `kubectl.1.XX` beside it.

    The PATH entry may be a version dispatcher; the versioned binaries sit in
    the directory its symlink resolves to.
    """
    found = shutil.which("kubectl")
    if found is None:
        return ()
    bins = [(f"kubectl-{_kubectl_version(found)}", found)]
    here = Path(os.path.realpath(found)).parent
    versioned = []
    for candidate in here.glob("kubectl.1.*"):
        try:
            minor = int(candidate.name.rsplit(".", 1)[1])
        except ValueError:
            continue
        if os.access(candidate, os.X_OK):
            versioned.append((minor, candidate))
    if versioned:
        _, oldest = min(versioned)
        bins.append((f"kubectl-{_kubectl_version(str(oldest))}", str(oldest)))
    return tuple(bins)


@pytest.fixture(scope="session")
def kubectl_bins() -> list[tuple[str, str]]:
    """(label, path) pairs: newest kubectl on PATH first, then the oldest beside it."""
    bins = list(find_kubectl_bins())
    if not bins:
        pytest.skip("kubectl not on PATH")
    return bins


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test taking `kubectl_bin` runs once per binary of `find_kubectl_bins()`."""
    if "kubectl_bin" in metafunc.fixturenames:
        bins = find_kubectl_bins()
        if bins:
            metafunc.parametrize("kubectl_bin", bins, ids=[label for label, _ in bins])
        else:
            metafunc.parametrize(
                "kubectl_bin", [pytest.param(None, marks=pytest.mark.skip("kubectl not on PATH"))]
            )
