"""What a local process can do to the proxy's listeners, and what the proxy does about it.

- a slowloris connection (a request head trickling in, or none at all) is
  closed after the header timeout (server/connections.py, 10 s);
- started under an open-file limit of 256 with more idle connections than
  its cap, the proxy still answers a list and /healthz: a new connection
  closes an idle one instead of waiting for a descriptor that never comes;
- a request as long as kube-apiserver accepts (a 10,000-value selector)
  gets the same answer as from the simulator, and a malformed or oversized
  one gets a Status and one log line, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

# Shorter than the 10 s default, through the flag, so the slowloris test is quick.
HEADER_TIMEOUT = 3.0
OVER_LIMIT = (1 << 20) + 8192


@pytest.fixture(scope="module")
def proxy(sim: SimProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(
        sim.kubeconfig,
        f"--request-header-timeout={HEADER_TIMEOUT:g}",
        workdir=tmp_path_factory.mktemp("proxy"),
    )
    try:
        yield proc
    finally:
        proc.close()


def get(url: str, timeout: float = 20.0) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            code, raw = err.code, err.read()
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw


def raw_exchange(port: int, request: bytes, timeout: float = 20.0) -> tuple[int, dict[str, Any]]:
    """Send raw bytes; the status code and JSON body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        with contextlib.suppress(OSError):  # the proxy may answer and close mid-send
            sock.sendall(request)
        data = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1."), data[:200]
    return int(head.split()[1]), json.loads(body)


def closed_by_peer(sock: socket.socket) -> bool:
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


def poll(condition: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"not within {within:.0f}s: {what}"
        time.sleep(0.2)


def create_configmap(sim: SimProcess, api: Any, ns: str, name: str, value: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"x": value}},
    }
    resp = api(sim, "POST", f"/api/v1/namespaces/{ns}/configmaps", body)
    assert resp.status == 201, resp.body


# -- header timeout ------------------------------------------------------------------


def test_slowloris_connections_are_closed_after_the_header_timeout(proxy: ProxyProcess) -> None:
    trickling = []
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.05)
        sock.sendall(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        trickling.append(sock)
    silent = [socket.create_connection(("127.0.0.1", proxy.port), timeout=0.05) for _ in range(5)]
    started = time.monotonic()
    try:

        def all_closed() -> bool:
            for sock in trickling:  # one more header line a second, never the end
                with contextlib.suppress(OSError):
                    sock.sendall(b"X-Slow: 1\r\n")
            return all(closed_by_peer(s) for s in trickling + silent)

        poll(all_closed, within=HEADER_TIMEOUT + 30, what="slowloris connections closed")
        assert time.monotonic() - started >= HEADER_TIMEOUT - 1
        # Meanwhile, and after, a complete request is answered at once.
        assert get(proxy.url + "/api")[0] == 200
    finally:
        for sock in trickling + silent:
            sock.close()
    assert "sent no complete request head within 3s" in proxy.log()


# -- open-file limit and connection cap ----------------------------------------------


def _low_open_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_idle_connections_beyond_the_cap_do_not_lock_clients_out(
    sim: SimProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with ProxyProcess(
        sim.kubeconfig,
        "--max-connections=1000",  # more than 256 descriptors can hold: lowered
        workdir=tmp_path_factory.mktemp("proxy-low-fd"),
        preexec_fn=_low_open_file_limit,
    ) as proxy:
        assert "client connections capped at 32, not 1000" in proxy.log()
        idle = []
        try:
            for _ in range(300):  # more than the cap, and more than the fd limit
                idle.append(socket.create_connection(("127.0.0.1", proxy.port), timeout=5))
            # Answered long before the header timeout would free anything.
            code, doc = get(proxy.url + "/api/v1/namespaces", timeout=8)
            assert code == 200, doc
            assert get(proxy.admin_url + "/healthz", timeout=8) == (200, b"ok")
            # Again, with the admin listener flooded too.
            for _ in range(100):
                idle.append(socket.create_connection(("127.0.0.1", proxy.admin_port), timeout=5))
            assert get(proxy.admin_url + "/healthz", timeout=8) == (200, b"ok")
            assert get(proxy.url + "/api/v1/namespaces", timeout=8)[0] == 200
        finally:
            for sock in idle:
                sock.close()
        log = proxy.log()
    assert "client listener: at its cap of 32 connections" in log
    assert "admin listener: at its cap of 64 connections" in log
    assert "Traceback" not in log


# -- long and malformed requests -----------------------------------------------------


def test_a_10000_value_selector_lists_like_the_simulator(
    sim: SimProcess,
    proxy: ProxyProcess,
    api: Any,
    make_namespace: Callable[[SimProcess], str],
) -> None:
    ns = make_namespace(sim)
    for name, value in (("first", "v5"), ("last", "v9999"), ("other", "nope")):
        create_configmap(sim, api, ns, name, value)
    values = ",".join(f"v{i}" for i in range(10_000))
    path = f"/api/v1/namespaces/{ns}/configmaps?labelSelector=x+in+({values})"
    assert len(path) > 50_000  # six times aiohttp's default line limit
    code, direct = get(sim.url + path)
    assert code == 200, direct
    names = sorted(item["metadata"]["name"] for item in direct["items"])
    assert names == ["first", "last"]
    for query in ("", "&resourceVersion=0"):  # upstream, then from the cache
        code, doc = get(proxy.url + path + query)
        assert code == 200, doc
        assert sorted(item["metadata"]["name"] for item in doc["items"]) == names


def test_malformed_and_oversized_requests_get_a_status(proxy: ProxyProcess) -> None:
    cases = [
        (b"GET /api HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),
        # Go reads 4 KiB past its 1 MiB MaxHeaderBytes before refusing.
        (b"GET /" + b"a" * OVER_LIMIT + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /api HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * OVER_LIMIT + b"\r\n\r\n", 431),
        (
            b"GET /api HTTP/1.1\r\nHost: x\r\n"
            + b"".join(b"X-H%d: %s\r\n" % (i, b"c" * 60_000) for i in range(20))
            + b"\r\n",
            431,
        ),
    ]
    for request, expected in cases:
        code, doc = raw_exchange(proxy.port, request)
        assert code == expected, doc
        assert (doc["kind"], doc["code"], doc["status"]) == ("Status", expected, "Failure")
    log = proxy.log()
    assert "Traceback" not in log
    assert "Error handling request" not in log
    assert "answered a malformed request from 127.0.0.1 with 400" in log
