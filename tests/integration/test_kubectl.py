"""Real kubectl binaries against the simulator, over plain HTTP and over TLS.

Each test runs once per kubectl (the newest on PATH and the oldest shipped
beside it, see conftest) and once per transport. Fixtures are made through the
API as JSON so that each test exercises only the kubectl command it is about;
every test works in its own namespace of a module-wide simulator.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edgeproxy.testing import SimProcess

pytestmark = pytest.mark.kubectl

# conftest's `api` fixture: api(sim, method, path, body=None, content_type=...) -> ApiResponse
Api = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Kubectl:
    """One kubectl binary bound to one simulator, namespace and cache dir."""

    label: str
    path: str
    kubeconfig: Path
    cache_dir: Path
    namespace: str

    @property
    def minor(self) -> int:
        return int(self.label.rsplit(".", 1)[1])

    def argv(self, *args: str) -> list[str]:
        return [
            self.path,
            f"--kubeconfig={self.kubeconfig}",
            f"--cache-dir={self.cache_dir}",
            "-n",
            self.namespace,
            *args,
        ]

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=60)
        if check and proc.returncode != 0:
            pytest.fail(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    def names(self, *args: str) -> list[str]:
        """`kubectl get … -o name` without the `kind/` prefixes, sorted."""
        out = self.run("get", *args, "-o", "name").stdout
        return sorted(line.split("/", 1)[1] for line in out.split())


@pytest.fixture(params=["http", "tls", "real"])
def target(request: pytest.FixtureRequest) -> SimProcess:
    """The simulator over HTTP and HTTPS, and the real kube-apiserver it imitates."""
    fixture = {"http": "sim", "tls": "sim_tls", "real": "real"}[request.param]
    sim: SimProcess = request.getfixturevalue(fixture)
    return sim


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kubectl-cache")


def _bind(label: str, path: str, sim: SimProcess, cache_root: Path, namespace: str) -> Kubectl:
    # One discovery cache per binary and simulator: kubectl re-reads it instead
    # of walking discovery again in every test.
    cache = cache_root / label / ("tls" if sim.tls else "http")
    return Kubectl(label, path, sim.kubeconfig, cache, namespace)


@pytest.fixture
def namespace(target: SimProcess, make_namespace: Callable[[SimProcess], str]) -> str:
    return make_namespace(target)


@pytest.fixture
def kubectl(
    kubectl_bin: tuple[str, str], target: SimProcess, cache_root: Path, namespace: str
) -> Kubectl:
    label, path = kubectl_bin
    return _bind(label, path, target, cache_root, namespace)


@pytest.fixture
def newest(
    kubectl_bins: list[tuple[str, str]], target: SimProcess, cache_root: Path, namespace: str
) -> Kubectl:
    """The PATH kubectl on the same sim and namespace, for `create -f` set-up."""
    label, path = kubectl_bins[0]
    return _bind(label, path, target, cache_root, namespace)


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def pod(name: str, node: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "nodeName": node,
            "containers": [
                {"name": "app", "image": "nginx:1.25", "env": [{"name": "MODE", "value": "a"}]},
                {"name": "sidecar", "image": "busybox:1.36"},
            ],
        },
    }


def post(api: Api, sim: SimProcess, namespace: str, resource: str, obj: dict[str, Any]) -> Any:
    resp = api(sim, "POST", f"/api/v1/namespaces/{namespace}/{resource}", obj)
    assert resp.status == 201, resp.body
    return resp.json()


def fetch(api: Api, sim: SimProcess, namespace: str, resource: str, name: str) -> Any:
    return api(sim, "GET", f"/api/v1/namespaces/{namespace}/{resource}/{name}")


def json_stream(text: str) -> list[Any]:
    """Concatenated (pretty-printed) JSON documents, as `kubectl -w -o json` prints them."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            return docs
        try:
            doc, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:  # a document still being written
            return docs
        docs.append(doc)


# -- create -----------------------------------------------------------------


def test_create_from_file(kubectl: Kubectl, target: SimProcess, api: Api, tmp_path: Path) -> None:
    # kubectl < 1.29 validates against /openapi/v2, which it reads only as
    # gnostic protobuf; 1.29+ read /openapi/v3 JSON. Both must work.
    manifest = tmp_path / "cm.json"
    manifest.write_text(json.dumps(configmap("from-file", {"app": "web"}, a="1", b="2")))
    out = kubectl.run("create", "-f", str(manifest)).stdout
    assert out.strip() == "configmap/from-file created"
    stored = fetch(api, target, kubectl.namespace, "configmaps", "from-file").json()
    assert stored["data"] == {"a": "1", "b": "2"}
    assert stored["metadata"]["labels"] == {"app": "web"}
    assert stored["metadata"]["namespace"] == kubectl.namespace


def test_create_configmap_from_literal(
    kubectl: Kubectl, target: SimProcess, api: Api, request: pytest.FixtureRequest
) -> None:
    # kubectl >= 1.31 sends this body as protobuf; older ones as JSON. Both must work.
    out = kubectl.run("create", "configmap", "literal", "--from-literal=x=1", "--from-literal=y=2")
    assert out.stdout.strip() == "configmap/literal created"
    stored = fetch(api, target, kubectl.namespace, "configmaps", "literal").json()
    assert stored["data"] == {"x": "1", "y": "2"}


# -- get --------------------------------------------------------------------


def test_get_table(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    post(api, target, kubectl.namespace, "configmaps", configmap("two", a="1", b="2"))
    post(api, target, kubectl.namespace, "configmaps", configmap("empty"))
    lines = kubectl.run("get", "configmaps").stdout.splitlines()
    assert lines[0].split() == ["NAME", "DATA", "AGE"]
    rows = sorted(line.split() for line in lines[1:])
    assert [row[:2] for row in rows] == [["empty", "0"], ["two", "2"]]
    assert all(len(row) == 3 and row[2].endswith("s") for row in rows), rows


def test_get_table_empty_namespace(kubectl: Kubectl) -> None:
    proc = kubectl.run("get", "configmaps")
    assert proc.stdout == ""
    assert f"No resources found in {kubectl.namespace} namespace." in proc.stderr


def test_get_json(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    created = {
        name: post(api, target, kubectl.namespace, "configmaps", configmap(name, labels))
        for name, labels in [("a", {"app": "web", "tier": "front"}), ("b", {"app": "db"})]
    }
    doc = json.loads(kubectl.run("get", "configmaps", "-o", "json").stdout)
    assert doc["kind"] == "List"
    items = {item["metadata"]["name"]: item for item in doc["items"]}
    assert set(items) == {"a", "b"}
    for name, item in items.items():
        meta = item["metadata"]
        assert item["kind"] == "ConfigMap" and item["apiVersion"] == "v1"
        assert meta["namespace"] == kubectl.namespace
        assert meta["labels"] == created[name]["metadata"]["labels"]
        assert meta["resourceVersion"] == created[name]["metadata"]["resourceVersion"]
        assert meta["uid"] == created[name]["metadata"]["uid"]
    assert int(items["a"]["metadata"]["resourceVersion"]) < int(
        items["b"]["metadata"]["resourceVersion"]
    )


def test_get_label_selectors(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    for name, labels in [
        ("web-front", {"app": "web", "tier": "front"}),
        ("web-back", {"app": "web", "tier": "back"}),
        ("db", {"app": "db", "tier": "back"}),
        ("cache", {"app": "cache"}),
        ("bare", {}),
    ]:
        post(api, target, kubectl.namespace, "configmaps", configmap(name, labels))
    cm = "configmaps"
    assert kubectl.names(cm, "-l", "app=web") == ["web-back", "web-front"]
    assert kubectl.names(cm, "-l", "app in (web,db)") == ["db", "web-back", "web-front"]
    assert kubectl.names(cm, "-l", "app!=web") == ["bare", "cache", "db"]
    assert kubectl.names(cm, "-l", "app notin (web,cache)") == ["bare", "db"]
    assert kubectl.names(cm, "-l", "!tier") == ["bare", "cache"]
    assert kubectl.names(cm, "-l", "tier") == ["db", "web-back", "web-front"]
    assert kubectl.names(cm, "-l", "app in (web,db),tier!=front") == ["db", "web-back"]
    proc = kubectl.run("get", cm, "-l", "app=nothing")
    assert proc.stdout == "" and "No resources found" in proc.stderr


def test_get_invalid_label_selector(kubectl: Kubectl) -> None:
    proc = kubectl.run("get", "configmaps", "-l", "app in (web", check=False)
    assert proc.returncode != 0
    assert "Error from server (BadRequest)" in proc.stderr
    assert "unable to parse requirement" in proc.stderr


def test_get_field_selector_name(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    for name in ("one", "two", "three"):
        post(api, target, kubectl.namespace, "configmaps", configmap(name))
    cm = "configmaps"
    assert kubectl.names(cm, "--field-selector", "metadata.name=two") == ["two"]
    assert kubectl.names(cm, "--field-selector", "metadata.name!=two") == ["one", "three"]
    selector = f"metadata.namespace={kubectl.namespace},metadata.name=one"
    assert kubectl.names(cm, "--field-selector", selector) == ["one"]
    proc = kubectl.run("get", cm, "--field-selector", "spec.nodeName=x", check=False)
    assert proc.returncode != 0
    # ConfigMaps have no field-label conversion: the generic apiserver wording.
    assert "Error from server (BadRequest)" in proc.stderr
    assert '"spec.nodeName" is not a known field selector' in proc.stderr


def test_get_pods_by_node(kubectl: Kubectl, newest: Kubectl, tmp_path: Path) -> None:
    manifest = tmp_path / "pods.json"
    pods = [pod("a1", "node-a"), pod("a2", "node-a"), pod("b1", "node-b")]
    manifest.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": pods}))
    newest.run("create", "-f", str(manifest))
    assert kubectl.names("pods", "--field-selector", "spec.nodeName=node-a") == ["a1", "a2"]
    assert kubectl.names("pods", "--field-selector", "spec.nodeName!=node-a") == ["b1"]
    assert kubectl.names("pods", "--field-selector", "spec.nodeName=node-c") == []
    wide = kubectl.run("get", "pods", "-o", "wide", "--field-selector", "spec.nodeName=node-b")
    header, *rows = wide.stdout.splitlines()
    assert header.split()[:3] == ["NAME", "READY", "STATUS"]
    assert "NODE" in header.split()
    assert len(rows) == 1 and rows[0].split()[0] == "b1" and "node-b" in rows[0].split()
    proc = kubectl.run("get", "pods", "--field-selector", "spec.foo=x", check=False)
    assert proc.returncode != 0
    assert "field label not supported: spec.foo" in proc.stderr


# -- watch ------------------------------------------------------------------


def _wait_for(
    output: Path, done: Callable[[str], bool], proc: subprocess.Popen[str], timeout: float = 15
) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = output.read_text()
        if done(text):
            return text
        if proc.poll() is not None:
            pytest.fail(f"kubectl exited early ({proc.returncode}):\n{text}")
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for watch output:\n{output.read_text()}")


def _start_watch(kubectl: Kubectl, out_path: Path, *args: str) -> subprocess.Popen[str]:
    with out_path.open("w") as out:
        return subprocess.Popen(
            kubectl.argv("get", "configmaps", "--watch", "--request-timeout=30s", *args),
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    proc.stderr.close()


def test_watch_json_events(kubectl: Kubectl, target: SimProcess, api: Api, tmp_path: Path) -> None:
    ns = kubectl.namespace
    post(api, target, ns, "configmaps", configmap("before", a="1"))
    out_path = tmp_path / "watch.out"
    proc = _start_watch(kubectl, out_path, "-o", "json", "--output-watch-events")
    try:
        # The initial ADDED means the list is done; the watch resumes from the
        # list's resourceVersion, so nothing made from here on can be missed.
        _wait_for(out_path, lambda text: len(json_stream(text)) >= 1, proc)
        added = post(api, target, ns, "configmaps", configmap("after", b="2"))
        patched = api(
            target,
            "PATCH",
            f"/api/v1/namespaces/{ns}/configmaps/before",
            {"data": {"a": "changed"}},
            content_type="application/merge-patch+json",
        )
        assert patched.status == 200, patched.body
        deleted = api(target, "DELETE", f"/api/v1/namespaces/{ns}/configmaps/after")
        assert deleted.status == 200, deleted.body
        text = _wait_for(out_path, lambda text: len(json_stream(text)) >= 4, proc)
    finally:
        _stop(proc)
    events = [
        (e["type"], e["object"]["metadata"]["name"], e["object"]["metadata"]["resourceVersion"])
        for e in json_stream(text)
    ]
    modified_rv = patched.json()["metadata"]["resourceVersion"]
    assert events[0][:2] == ("ADDED", "before")
    assert events[1:] == [
        ("ADDED", "after", added["metadata"]["resourceVersion"]),
        ("MODIFIED", "before", modified_rv),
        ("DELETED", "after", events[3][2]),
    ]
    assert int(events[3][2]) > int(modified_rv)
    assert json_stream(text)[2]["object"]["data"] == {"a": "changed"}


def test_watch_table(kubectl: Kubectl, target: SimProcess, api: Api, tmp_path: Path) -> None:
    ns = kubectl.namespace
    post(api, target, ns, "configmaps", configmap("first", a="1"))
    out_path = tmp_path / "watch.out"
    proc = _start_watch(kubectl, out_path)
    try:
        _wait_for(out_path, lambda text: "first" in text, proc)
        post(api, target, ns, "configmaps", configmap("second", a="1", b="2", c="3"))
        text = _wait_for(out_path, lambda text: "second" in text, proc)
    finally:
        _stop(proc)
    lines = [line.split() for line in text.splitlines()]
    assert lines[0] == ["NAME", "DATA", "AGE"]
    assert [line[:2] for line in lines[1:]] == [["first", "1"], ["second", "3"]]


# -- writes -----------------------------------------------------------------


def test_label_add_and_remove(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    ns = kubectl.namespace
    post(api, target, ns, "configmaps", configmap("lab", {"app": "web"}))
    assert kubectl.run("label", "configmap", "lab", "env=prod").stdout.strip() == (
        "configmap/lab labeled"
    )
    labels = fetch(api, target, ns, "configmaps", "lab").json()["metadata"]["labels"]
    assert labels == {"app": "web", "env": "prod"}
    assert kubectl.names("configmaps", "-l", "env=prod") == ["lab"]
    proc = kubectl.run("label", "configmap", "lab", "env=dev", check=False)
    assert proc.returncode != 0 and "already has a value (prod)" in proc.stderr
    assert kubectl.run("label", "configmap", "lab", "env-").stdout.strip() == (
        "configmap/lab unlabeled"
    )
    labels = fetch(api, target, ns, "configmaps", "lab").json()["metadata"]["labels"]
    assert labels == {"app": "web"}


def test_patch_merge_and_json(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    ns = kubectl.namespace
    rv0 = post(api, target, ns, "configmaps", configmap("p", a="1", b="2"))["metadata"][
        "resourceVersion"
    ]
    kubectl.run("patch", "configmap", "p", "--type=merge", "-p", '{"data":{"a":null,"c":"3"}}')
    stored = fetch(api, target, ns, "configmaps", "p").json()
    assert stored["data"] == {"b": "2", "c": "3"}
    rv1 = stored["metadata"]["resourceVersion"]
    assert int(rv1) > int(rv0)
    ops = [
        {"op": "replace", "path": "/data/b", "value": "two"},
        {"op": "add", "path": "/metadata/labels", "value": {"patched": "yes"}},
    ]
    kubectl.run("patch", "configmap", "p", "--type=json", "-p", json.dumps(ops))
    stored = fetch(api, target, ns, "configmaps", "p").json()
    assert stored["data"] == {"b": "two", "c": "3"}
    assert stored["metadata"]["labels"] == {"patched": "yes"}
    assert int(stored["metadata"]["resourceVersion"]) > int(rv1)
    bad = [{"op": "test", "path": "/data/b", "value": "nope"}]
    proc = kubectl.run("patch", "configmap", "p", "--type=json", "-p", json.dumps(bad), check=False)
    assert proc.returncode != 0
    assert fetch(api, target, ns, "configmaps", "p").json()["data"]["b"] == "two"


def test_patch_strategic(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    ns = kubectl.namespace
    post(api, target, ns, "pods", pod("sp", "node-a", {"app": "web"}))
    # Strategic merge merges `containers` by name: the sidecar and the env stay.
    patch = {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}}
    out = kubectl.run("patch", "pod", "sp", "-p", json.dumps(patch)).stdout
    assert out.strip() == "pod/sp patched"
    containers = _declared(fetch(api, target, ns, "pods", "sp").json()["spec"]["containers"])
    assert containers == [
        {"name": "app", "image": "nginx:1.27", "env": [{"name": "MODE", "value": "a"}]},
        {"name": "sidecar", "image": "busybox:1.36"},
    ]
    # The same patch as a JSON merge patch replaces the whole list, which would
    # drop the sidecar: kube-apiserver refuses to add or remove pod containers.
    proc = kubectl.run("patch", "pod", "sp", "--type=merge", "-p", json.dumps(patch), check=False)
    assert proc.returncode != 0
    assert (
        'The Pod "sp" is invalid: spec.containers: Forbidden: '
        "pod updates may not add or remove containers"
    ) in proc.stderr
    # On a list both may change: strategic merge adds to `finalizers` (a set),
    # a JSON merge patch replaces it.
    fin = {"metadata": {"finalizers": ["example.com/a"]}}
    kubectl.run("patch", "pod", "sp", "-p", json.dumps(fin))
    fin["metadata"]["finalizers"] = ["example.com/b"]
    kubectl.run("patch", "pod", "sp", "-p", json.dumps(fin))
    meta = fetch(api, target, ns, "pods", "sp").json()["metadata"]
    assert meta["finalizers"] == ["example.com/b", "example.com/a"]  # new items first
    kubectl.run("patch", "pod", "sp", "--type=merge", "-p", json.dumps(fin))
    assert fetch(api, target, ns, "pods", "sp").json()["metadata"]["finalizers"] == [
        "example.com/b"
    ]
    kubectl.run("patch", "pod", "sp", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


def _declared(containers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Containers without the fields kube-apiserver defaults (the simulator does not)."""
    keep = ("name", "image", "env")
    return [{k: c[k] for k in keep if k in c} for c in containers]


def test_delete(kubectl: Kubectl, target: SimProcess, api: Api) -> None:
    ns = kubectl.namespace
    for name, labels in [
        ("gone", {}),
        ("x1", {"batch": "x"}),
        ("x2", {"batch": "x"}),
        ("kept", {}),
    ]:
        post(api, target, ns, "configmaps", configmap(name, labels))
    out = kubectl.run("delete", "configmap", "gone").stdout
    assert out.strip() == 'configmap "gone" deleted'
    assert fetch(api, target, ns, "configmaps", "gone").status == 404
    out = kubectl.run("delete", "configmaps", "-l", "batch=x").stdout
    assert sorted(out.splitlines()) == ['configmap "x1" deleted', 'configmap "x2" deleted']
    assert kubectl.names("configmaps") == ["kept"]
    proc = kubectl.run("delete", "configmap", "gone", check=False)
    assert proc.returncode != 0
    assert 'Error from server (NotFound): configmaps "gone" not found' in proc.stderr


def test_get_missing_object(kubectl: Kubectl) -> None:
    proc = kubectl.run("get", "configmap", "nope", check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == 'Error from server (NotFound): configmaps "nope" not found'


def test_unknown_resource_type(kubectl: Kubectl) -> None:
    proc = kubectl.run("get", "nosuchresource", check=False)
    assert proc.returncode == 1
    assert 'the server doesn\'t have a resource type "nosuchresource"' in proc.stderr
    assert "panic" not in proc.stderr and "goroutine" not in proc.stderr
