"""Pods through the secure listener, each as itself, against kube-apiserver with RBAC.

A ServiceAccount may list and watch configmaps in its own namespace only.
Through the proxy's HTTPS listener, with its own token, it gets exactly what
upstream would give it: its namespace's configmaps (then from the cache),
and a 403 for another namespace even though the proxy holds that scope
(fetched as the proxy), online, offline, and offline after a restart.
Upstream's audit log shows the service account, never the proxy, for every
request the pod made. The proxy's own files are checked for the token.
"""

from __future__ import annotations

import json
import shutil
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.controlplane import ControlPlane
from edgeproxy.link import LinkRelay
from edgeproxy.sim.tls import TLSBundle, generate_bundle
from edgeproxy.testing import ProxyProcess, free_port, wait_until

AGENT = "identity-test/1.0"


def admin(real: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    code, data = real.request(method, path, body)
    assert code in (200, 201), (method, path, code, data[:300])
    return json.loads(data)


@dataclass
class Node:
    real: ControlPlane
    link: LinkRelay
    proxy: ProxyProcess
    bundle: TLSBundle
    secure_port: int
    own: str  # the namespace the service account may read
    other: str  # one it may not
    token: str
    username: str

    def call(
        self, path: str, *, token: str | None = None, method: str = "GET", body: Any = None
    ) -> tuple[int, Any]:
        """A request to the secure listener, as a pod would make it."""
        ctx = ssl.create_default_context(cafile=str(self.bundle.ca_cert))
        headers = {"Accept": "application/json", "User-Agent": self.agent}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            f"https://127.0.0.1:{self.secure_port}{path}", data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=ctx) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    def plain(self, path: str) -> tuple[int, Any]:
        """A credential-less request to the loopback listener: the proxy's identity."""
        try:
            with urllib.request.urlopen(self.proxy.url + path, timeout=30) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    def served(self, served_from: str, verb: str = "list") -> float:
        want = {"verb": verb, "resource": "configmaps", "code": "200", "served_from": served_from}
        total = 0.0
        for line in self.proxy.admin("/metrics").splitlines():
            if line.startswith("edgeproxy_requests_total{") and all(
                f'{k}="{v}"' in line for k, v in want.items()
            ):
                total += float(line.rpartition(" ")[2])
        return total

    @property
    def agent(self) -> str:
        """This test's User-Agent: the audit log is the whole session's."""
        return f"{AGENT} ({self.own})"

    def audited(self) -> list[dict[str, Any]]:
        """Upstream's audit events of this test's client requests."""
        events = [json.loads(line) for line in self.real.audit_log.read_text().splitlines()]
        return [e for e in events if e.get("userAgent", "").startswith(self.agent)]

    def link_down(self) -> bool:
        return any(
            line.startswith("edgeproxy_upstream_healthy{") and line.endswith(" 0.0")
            for line in self.proxy.admin("/metrics").splitlines()
        )


@pytest.fixture
def node(
    real: ControlPlane, tmp_path: Path, make_namespace: Callable[[Any], str]
) -> Iterator[Node]:
    own, other = make_namespace(real), make_namespace(real)
    for ns in (own, other):
        admin(
            real,
            "POST",
            f"/api/v1/namespaces/{ns}/configmaps",
            {"metadata": {"name": f"cm-{ns[-6:]}"}, "data": {"in": ns}},
        )
    admin(real, "POST", f"/api/v1/namespaces/{own}/serviceaccounts", {"metadata": {"name": "pod"}})
    rule = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
    admin(
        real,
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{own}/roles",
        {"metadata": {"name": "read-configmaps"}, "rules": [rule]},
    )
    admin(
        real,
        "POST",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{own}/rolebindings",
        {
            "metadata": {"name": "pod-reads-configmaps"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "read-configmaps",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "pod", "namespace": own}],
        },
    )
    issued = admin(
        real,
        "POST",
        f"/api/v1/namespaces/{own}/serviceaccounts/pod/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    link = LinkRelay("127.0.0.1", real.port)
    kubeconfig = tmp_path / "through-link.kubeconfig"
    kubeconfig.write_text(real.kubeconfig.read_text().replace(real.url, link.url("https")))
    bundle = generate_bundle(tmp_path / "serving", ["127.0.0.1"])
    secure_port = free_port()
    proxy = ProxyProcess(
        kubeconfig,
        f"--secure-listen=127.0.0.1:{secure_port}",
        f"--tls-cert-file={bundle.server_cert}",
        f"--tls-private-key-file={bundle.server_key}",
        workdir=tmp_path / "proxy",
    )
    try:
        yield Node(
            real,
            link,
            proxy,
            bundle,
            secure_port,
            own,
            other,
            issued["status"]["token"],
            f"system:serviceaccount:{own}:pod",
        )
    finally:
        proxy.close()
        link.close()


def names(doc: dict[str, Any]) -> list[str]:
    return [item["metadata"]["name"] for item in doc["items"]]


def test_each_pod_as_itself_online_and_offline(node: Node) -> None:
    own, other, token = node.own, node.other, node.token
    own_list = f"/api/v1/namespaces/{own}/configmaps"
    other_list = f"/api/v1/namespaces/{other}/configmaps"

    # The proxy caches the other namespace, as itself (the loopback listener).
    code, doc = node.plain(other_list)
    assert code == 200 and names(doc) == [f"cm-{other[-6:]}"]
    code, _ = node.plain(other_list + "?resourceVersion=0")
    assert code == 200

    # No token on the secure listener: refused, not served as the proxy.
    code, doc = node.call(own_list)
    assert code == 401 and doc["kind"] == "Status" and doc["reason"] == "Unauthorized"

    # The pod's own namespace: upstream says yes, then the cache answers.
    code, doc = node.call(own_list, token=token)
    assert code == 200, doc
    assert names(doc) == [f"cm-{own[-6:]}"]
    cached_before = node.served("cache")
    code, doc = node.call(own_list + "?resourceVersion=0", token=token)
    assert code == 200 and names(doc) == [f"cm-{own[-6:]}"]
    assert node.served("cache") == cached_before + 1

    # Another namespace: 403, though the proxy holds that scope and would
    # answer a resourceVersion=0 list from it.
    for path in (other_list, other_list + "?resourceVersion=0", other_list + "?watch=1"):
        code, doc = node.call(path, token=token)
        assert code == 403, (path, doc)
        assert doc["kind"] == "Status" and doc["reason"] == "Forbidden"
    code, doc = node.call(f"{other_list}/cm-{other[-6:]}", token=token)
    assert code == 403, doc

    # Upstream saw the pod, never the proxy, for every request the pod made.
    # The forwarded list and the access reviews for both namespaces, at least.
    wait_until(lambda: len(node.audited()) >= 3, 30, "the pod's requests in the audit log")
    users = {e["user"]["username"] for e in node.audited()}
    assert users == {node.username}, users
    assert any(own_list in e["requestURI"] for e in node.audited())

    # -- cut off ------------------------------------------------------------
    node.link.blackhole()
    wait_until(node.link_down, 30, "the proxy sees the link down")
    offline_before = node.served("offline")
    code, doc = node.call(own_list, token=token)
    assert code == 200, doc
    assert names(doc) == [f"cm-{own[-6:]}"]
    assert node.served("offline") == offline_before + 1
    for path in (other_list, other_list + "?resourceVersion=0"):
        code, doc = node.call(path, token=token)
        assert code == 403, (path, doc)
    # A read upstream never decided on for this pod: refused, not served.
    code, doc = node.call(f"/api/v1/namespaces/{own}/secrets", token=token)
    assert code == 503, doc
    assert "authorization" in doc["message"] or "unreachable" in doc["message"]
    # Tokens and reviews are upstream's to make: 503, nothing faked.
    code, doc = node.call(
        f"/api/v1/namespaces/{own}/serviceaccounts/pod/token",
        token=token,
        method="POST",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert code == 503 and doc["reason"] == "ServiceUnavailable", doc
    for review in (
        "authentication.k8s.io/v1/tokenreviews",
        "authorization.k8s.io/v1/subjectaccessreviews",
    ):
        code, doc = node.call(f"/apis/{review}", token=token, method="POST", body={"spec": {}})
        assert code == 503 and doc["reason"] == "ServiceUnavailable", (review, doc)

    # Restarted while cut off: the decisions come back from disk.
    node.proxy.stop()
    node.proxy.start()
    code, doc = node.call(own_list, token=token)
    assert code == 200, doc
    assert names(doc) == [f"cm-{own[-6:]}"]
    code, doc = node.call(other_list + "?resourceVersion=0", token=token)
    assert code == 403, doc

    # The token itself is nowhere on disk: only its hash.
    for path in node.proxy.cache_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path


def test_an_in_cluster_client_through_the_secure_listener(
    node: Node, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official client with in-cluster config: the service's address, a token file, the CA."""
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    mounted = tmp_path / "serviceaccount"
    mounted.mkdir()
    (mounted / "token").write_text(node.token)
    shutil.copyfile(node.bundle.ca_cert, mounted / "ca.crt")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(node.secure_port))
    loader = config.incluster_config.InClusterConfigLoader(
        token_filename=str(mounted / "token"), cert_filename=str(mounted / "ca.crt")
    )
    configuration = client.Configuration()
    loader.load_and_set(configuration)
    with client.ApiClient(configuration) as api_client:
        core = client.CoreV1Api(api_client)
        listed = core.list_namespaced_config_map(node.own)
        assert [cm.metadata.name for cm in listed.items] == [f"cm-{node.own[-6:]}"]
        for call in (
            lambda: core.list_namespaced_config_map(node.other),
            lambda: core.list_namespaced_secret(node.own),
            lambda: core.read_namespaced_config_map(f"cm-{node.other[-6:]}", node.other),
        ):
            with pytest.raises(ApiException) as err:
                call()
            assert err.value.status == 403


def test_a_client_go_informer_with_a_token_survives_a_cut_and_a_restart(
    node: Node, tmp_path: Path
) -> None:
    from edgeproxy.clientgo import Informer

    watch = f"v1/configmaps,namespace={node.own}"
    first = f"{node.own}/cm-{node.own[-6:]}"
    with Informer(
        f"https://127.0.0.1:{node.secure_port}",
        [watch],
        workdir=tmp_path,
        token=node.token,
        ca_file=node.bundle.ca_cert,
        user_agent=node.agent,
    ) as informer:
        informer.wait_synced()
        assert set(informer.dump()[watch]) == {first}

        node.link.blackhole()
        wait_until(node.link_down, 30, "the proxy sees the link down")
        node.proxy.stop()  # the informer's watch breaks; it re-watches once the proxy is back
        node.proxy.start()
        wait_until(node.link_down, 30, "the restarted proxy sees the link down")
        admin(
            node.real,
            "POST",
            f"/api/v1/namespaces/{node.own}/configmaps",
            {"metadata": {"name": "while-cut"}},
        )
        assert set(informer.dump()[watch]) == {first}

        node.link.restore()
        informer.wait_for(
            lambda recs: any(
                r["type"] == "event" and r["key"] == f"{node.own}/while-cut" for r in recs
            ),
            60,
            "the configmap made while cut off",
        )
        assert informer.relists() == 1
    # Its lists (resourceVersion=0) and watches were served from the cache;
    # what went upstream for it (the access reviews) went as the pod.
    audited = node.audited()
    assert audited, "no request of the informer's reached upstream"
    assert {e["user"]["username"] for e in audited} == {node.username}
