"""A client cannot choose who the proxy is upstream: identity headers stop at the proxy.

The HTTPS simulator decides each request's user as kube-apiserver does,
impersonation and front-proxy headers included, and says whom it decided on
in a SelfSubjectReview (sim/identity.py). Straight to the simulator, the
headers work; through the proxy, whatever a client sends, upstream sees the
proxy's own identity, the certificate user `sim-admin`, on every kind of
forwarding: pass-through writes, upgrades, reads, lists and watches.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.testing import ProxyProcess, SimProcess

REVIEW = "/apis/authentication.k8s.io/v1/selfsubjectreviews"
REVIEW_BODY = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
PROXY_USER = {"username": "sim-admin", "groups": ["system:masters", "system:authenticated"]}
IMPERSONATE = {
    "Impersonate-User": "alice",
    "Impersonate-Group": "developers",
    "Impersonate-Uid": "alice-uid",
    "Impersonate-Extra-Scopes": "view",
}
FRONT_PROXY = {"X-Remote-User": "bob", "X-Remote-Group": "ops", "X-Remote-Extra-Team": "blue"}
# Groups without a user: kube-apiserver refuses any request carrying it with a 500.
GROUP_ONLY = {"Impersonate-Group": "system:masters"}


@pytest.fixture(scope="module")
def proxy(sim_tls: SimProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    proc = ProxyProcess(sim_tls.kubeconfig, workdir=tmp_path_factory.mktemp("proxy"))
    try:
        yield proc
    finally:
        proc.close()


def ssl_context(sim: SimProcess) -> ssl.SSLContext:
    """The simulator's CA and its admin client certificate, as kubectl would use them."""
    tls_dir = sim.workdir / "tls"
    ctx = ssl.create_default_context(cafile=str(tls_dir / "ca.crt"))
    ctx.load_cert_chain(str(tls_dir / "client.crt"), str(tls_dir / "client.key"))
    return ctx


def call(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str],
    body: Any = None,
    sim: SimProcess | None = None,
) -> tuple[int, Any]:
    """One request; the JSON answer (or the raw bytes) and its status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method)
    for name, value in {"Accept": "application/json", **headers}.items():
        req.add_header(name, value)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    ctx = ssl_context(sim) if sim is not None else None
    try:
        with urllib.request.urlopen(req, timeout=20, context=ctx) as resp:
            code, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        with err:
            code, raw = err.code, err.read()
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw


def whoami(base: str, headers: dict[str, str], sim: SimProcess | None = None) -> dict[str, Any]:
    code, doc = call(base, "POST", REVIEW, headers, REVIEW_BODY, sim)
    assert code == 201, doc
    user: dict[str, Any] = doc["status"]["userInfo"]
    return user


# -- the simulator honours the headers, as kube-apiserver does --------------------


def test_sim_answers_with_the_authenticated_user(sim_tls: SimProcess) -> None:
    assert whoami(sim_tls.url, {}, sim_tls) == PROXY_USER


def test_sim_applies_impersonation(sim_tls: SimProcess) -> None:
    assert whoami(sim_tls.url, IMPERSONATE, sim_tls) == {
        "username": "alice",
        "uid": "alice-uid",
        "groups": ["developers", "system:authenticated"],
        "extra": {"scopes": ["view"]},
    }
    sa = whoami(sim_tls.url, {"Impersonate-User": "system:serviceaccount:kube-system:x"}, sim_tls)
    assert sa["groups"] == [
        "system:serviceaccounts",
        "system:serviceaccounts:kube-system",
        "system:authenticated",
    ]
    code, doc = call(sim_tls.url, "GET", "/api/v1/namespaces", GROUP_ONLY, sim=sim_tls)
    assert (code, doc["kind"], doc["reason"]) == (500, "Status", "InternalError")


def test_sim_trusts_front_proxy_headers_from_a_client_certificate(sim_tls: SimProcess) -> None:
    assert whoami(sim_tls.url, FRONT_PROXY, sim_tls) == {
        "username": "bob",
        "groups": ["ops"],
        "extra": {"team": ["blue"]},
    }
    # bob is not in system:masters: he may not impersonate.
    code, doc = call(
        sim_tls.url,
        "GET",
        "/api/v1/namespaces",
        {**FRONT_PROXY, "Impersonate-User": "x"},
        sim=sim_tls,
    )
    assert (code, doc["reason"]) == (403, "Forbidden")


# -- through the proxy the headers are gone ---------------------------------------


@pytest.mark.parametrize(
    "headers",
    [IMPERSONATE, FRONT_PROXY, {**IMPERSONATE, **FRONT_PROXY}],
    ids=["impersonate", "front-proxy", "both"],
)
def test_pass_through_carries_the_proxy_identity(
    proxy: ProxyProcess, headers: dict[str, str]
) -> None:
    assert whoami(proxy.url, headers) == PROXY_USER


def test_upgrade_carries_the_proxy_identity(proxy: ProxyProcess) -> None:
    """An upgrade request (exec, attach, port-forward) goes upstream on its own connection."""
    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=20)
    try:
        body = json.dumps(REVIEW_BODY).encode()
        conn.request(
            "POST",
            REVIEW,
            body=body,
            headers={
                "Connection": "Upgrade",
                "Upgrade": "SPDY/3.1",
                "Content-Type": "application/json",
                "Accept": "application/json",
                **IMPERSONATE,
                **FRONT_PROXY,
            },
        )
        resp = conn.getresponse()
        doc = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 201, doc
    assert doc["status"]["userInfo"] == PROXY_USER


@pytest.mark.parametrize(
    "path",
    [
        "/api",  # discovery, remembered for offline use
        "/version",
        "/api/v1/namespaces",  # a list
        "/api/v1/namespaces/default",  # a get
        "/api/v1/namespaces?watch=1&timeoutSeconds=1",  # a watch
    ],
)
def test_reads_carry_the_proxy_identity(
    sim_tls: SimProcess, proxy: ProxyProcess, path: str
) -> None:
    direct, _ = call(sim_tls.url, "GET", path, GROUP_ONLY, sim=sim_tls)
    assert direct == 500
    code, doc = call(proxy.url, "GET", path, GROUP_ONLY)
    assert code == 200, doc


def test_each_removal_is_logged_once_with_the_user_agent(proxy: ProxyProcess) -> None:
    agent = "sneaky/1.0 (identity-test)"
    for _ in range(3):
        assert whoami(proxy.url, {"User-Agent": agent, "Impersonate-User": "mallory"}) == PROXY_USER
    lines = [line for line in Path(proxy.log_path).read_text().splitlines() if agent in line]
    assert len(lines) == 1, lines
    assert "WARNING" in lines[0] and "Impersonate-User" in lines[0]
    assert "Traceback" not in proxy.log()
