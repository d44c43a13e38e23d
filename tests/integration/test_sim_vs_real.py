"""Differential tests: the simulator answers exactly as a real kube-apiserver does.

Each case is a short script of requests, sent in turn to the simulator (over
TLS, as clusters serve it) and to a real kube-apiserver + etcd, each in a
fresh namespace. Every response is normalised (uids, timestamps,
resourceVersions, managedFields, generated names, the namespace's name) and
the two transcripts must be equal step by step: status code, media type and
body. A divergence is a simulator bug unless the case says otherwise.
"""

from __future__ import annotations

import base64
import difflib
import json
import re
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import yaml

from edgeproxy.testing import SimProcess

SslFor = Callable[[SimProcess], ssl.SSLContext | None]

JSON = "application/json"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
APPLY = "application/apply-patch+yaml"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io"
PARTIAL_LIST = "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
PARTIAL = "application/json;as=PartialObjectMetadata;v=v1;g=meta.k8s.io"
CM = "/api/v1/namespaces/{ns}/configmaps"
PODS = "/api/v1/namespaces/{ns}/pods"
SVC = "/api/v1/namespaces/{ns}/services"


@dataclass(frozen=True, slots=True)
class Req:
    """One request; `{ns}` and `{<label>}` (a saved resourceVersion) are substituted."""

    method: str
    path: str
    body: Any = None
    content_type: str = JSON
    accept: str = JSON
    # Remember the response's metadata.resourceVersion under this label.
    save: str = ""
    # The real server lists more resources and groups: compare only the sim's.
    subset: bool = False


@dataclass(frozen=True, slots=True)
class Watch:
    """A watch read to its end (the path must set a short timeoutSeconds)."""

    path: str
    accept: str = JSON


@dataclass(frozen=True, slots=True)
class Compact:
    """Compact history up to now: older resourceVersions answer 410."""


Step = Req | Watch | Compact


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    steps: tuple[Step, ...]
    # Steps whose outcome is not compared (setup whose answer another case checks).
    quiet: frozenset[int] = field(default_factory=frozenset)


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def pod(name: str, **spec: Any) -> dict[str, Any]:
    containers = [{"name": "app", "image": "nginx:1.25"}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": containers, **spec},
    }


def post_cm(name: str, labels: dict[str, str] | None = None, save: str = "", **data: str) -> Req:
    return Req("POST", CM, cm(name, labels, **data), save=save)


# -- outcomes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Outcome:
    step: str
    status: int
    media_type: str
    body: Any
    subset: bool = False


def _send(target: SimProcess, ssl_for: SslFor, step: Req | Watch, path: str, body: Any) -> Any:
    data = None
    headers = {"Accept": step.accept}
    if body is not None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        headers["Content-Type"] = step.content_type if isinstance(step, Req) else JSON
    method = step.method if isinstance(step, Req) else "GET"
    req = urllib.request.Request(target.url + path, data=data, method=method, headers=headers)
    try:
        resp = urllib.request.urlopen(req, timeout=30, context=ssl_for(target))
    except urllib.error.HTTPError as err:
        resp = err
    with resp:
        media = (resp.headers.get("Content-Type") or "").split(";")[0]
        if isinstance(step, Watch):
            events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
            return resp.status, media, events
        raw = resp.read()
        if media == "application/yaml":
            return resp.status, media, yaml.safe_load(raw)
        if media != JSON:
            return resp.status, media, raw.decode()
        return resp.status, media, json.loads(raw) if raw else None


def run_case(case: Case, target: SimProcess, ns: str, ssl_for: SslFor) -> list[Outcome]:
    saved: dict[str, str] = {"ns": ns}
    outcomes = []
    for index, step in enumerate(case.steps):
        if isinstance(step, Compact):
            target.compact()
            continue
        path = step.path.format(**saved)
        body = step.body if isinstance(step, Req) else None
        if body is not None and not isinstance(body, bytes):
            body = json.loads(json.dumps(body).replace("{ns}", ns))
            body = _fill(body, saved)
        code, media, doc = _send(target, ssl_for, step, path, body)
        if isinstance(step, Req) and step.save:
            _save(saved, step.save, doc)
        if isinstance(step, Watch):
            doc = [e for e in doc if not _periodic_bookmark(e)]
        if index not in case.quiet:
            subset = isinstance(step, Req) and step.subset
            outcomes.append(Outcome(f"{index}: {step}", code, media, _normalise(doc, ns), subset))
    return outcomes


def _fill(value: Any, saved: dict[str, str]) -> Any:
    if isinstance(value, str) and "{" in value:
        return value.format(**saved)
    if isinstance(value, dict):
        return {k: _fill(v, saved) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, saved) for v in value]
    return value


def _save(saved: dict[str, str], label: str, doc: Any) -> None:
    """Remember a response's resourceVersion, continue token and name."""
    meta = (doc or {}).get("metadata") or {}
    saved[label] = str(meta.get("resourceVersion", ""))
    saved[label + "_continue"] = str(meta.get("continue", ""))
    saved[label + "_name"] = str(meta.get("name", ""))
    saved[label + "_uid"] = str(meta.get("uid", ""))


def _periodic_bookmark(event: Any) -> bool:
    """Timed bookmarks come when the server likes; only the initial-events end is due."""
    if event.get("type") != "BOOKMARK":
        return False
    annotations = event["object"].get("metadata", {}).get("annotations") or {}
    return annotations.get("k8s.io/initial-events-end") != "true"


_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
_GENERATED = re.compile(r"^(gen-)[bcdfghjklmnpqrstvwxz2456789]{5}$")
_AGE = re.compile(r"^\d+s$")
_IP = re.compile(r"^\d+\.\d+\.\d+\.\d+$")
_VOLATILE = {"uid": "UID", "resourceVersion": "RV", "clusterIP": "IP", "serverAddress": "ADDR"}


# Numbers inside messages that are resourceVersions.
_MESSAGE_RVS = (
    (re.compile(r"too old resource version: \d+ \(\d+\)"), "too old resource version: RV (RV)"),
    (re.compile(r"in record \(\d+\)"), "in record (RV)"),
    (re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"), "UID"),
)


def _normalise(value: Any, ns: str, key: str = "") -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "managedFields":
                continue
            if k in _VOLATILE and isinstance(v, str) and v:
                out[k] = _VOLATILE[k]
            elif k == "continue" and isinstance(v, str) and v:
                out[k] = _continue(v, ns)
            else:
                out[k] = _normalise(v, ns, k)
        return out
    if isinstance(value, list):
        if key == "clusterIPs":
            return ["IP" for _ in value]
        return [_normalise(v, ns, key) for v in value]
    if isinstance(value, str):
        if _TIMESTAMP.match(value):
            return "TIME"
        if key == "cells" and _AGE.match(value):
            return "AGE"
        if key == "cells" and _IP.match(value):
            return "IP"
        value = _GENERATED.sub(r"\1XXXXX", value)
        for pattern, replacement in _MESSAGE_RVS:
            value = pattern.sub(replacement, value)
        return value.replace(ns, "NS")
    return value


def _continue(token: str, ns: str) -> str:
    padded = token + "=" * (-len(token) % 4)
    doc = json.loads(base64.urlsafe_b64decode(padded))
    # kube-apiserver's start key has a leading "/" the simulator's lacks; both
    # servers accept either, and clients never look inside.
    start = doc["start"].lstrip("/").replace(ns, "NS")
    return f"continue(rv={'-1' if doc['rv'] == -1 else 'RV'}, start={start!r})"


def _restrict(real: Any, sim: Any) -> Any:
    """The real discovery document cut down to the resources and groups the sim serves."""
    if not isinstance(real, dict) or not isinstance(sim, dict):
        return real
    out = dict(real)
    for key in ("resources", "groups"):
        if isinstance(sim.get(key), list) and isinstance(real.get(key), list):
            names = [entry["name"] for entry in sim[key]]
            by_name = {entry["name"]: entry for entry in real[key]}
            out[key] = [by_name[n] for n in names if n in by_name]
    return out


# -- the cases ------------------------------------------------------------------


def with_finalizer(body: dict[str, Any]) -> dict[str, Any]:
    body["metadata"]["finalizers"] = ["example.com/hold"]
    return body


THREE = (
    post_cm("web-front", {"app": "web", "tier": "front"}),
    post_cm("web-back", {"app": "web", "tier": "back"}),
    post_cm("db", {"app": "db"}, save="last"),
)
WATCH = CM + "?watch=true&timeoutSeconds=1"

CASES: tuple[Case, ...] = (
    Case(
        "configmap-create-get",
        (
            post_cm("a", {"app": "web"}, x="1"),
            Req("GET", CM + "/a"),
            Req("GET", CM + "/a", accept=PARTIAL),
            Req("GET", CM + "/a", accept="application/yaml, application/json"),
        ),
    ),
    Case("get-missing", (Req("GET", CM + "/nope"), Req("GET", "/api/v1/namespaces/{ns}-gone"))),
    Case("create-twice", (post_cm("a"), post_cm("a"))),
    Case(
        "create-generate-name",
        (Req("POST", CM, {"metadata": {"generateName": "gen-"}, "data": {"k": "v"}}),),
    ),
    Case("create-bad-name", (post_cm("Bad_Name"), post_cm("a" * 254), post_cm(""))),
    Case(
        "create-wrong-kind",
        (
            Req("POST", CM, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}}),
            Req(
                "POST",
                CM,
                {"apiVersion": "apps/v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
            ),
            Req("POST", CM, {"apiVersion": "v1", "kind": "Foo", "metadata": {"name": "x"}}),
        ),
    ),
    Case(
        "create-in-missing-namespace",
        (Req("POST", "/api/v1/namespaces/{ns}-gone/configmaps", cm("a")),),
    ),
    Case(
        "create-with-resource-version",
        (Req("POST", CM, {"metadata": {"name": "a", "resourceVersion": "5"}}),),
    ),
    Case(
        "list-label-selectors",
        (
            *THREE,
            Req("GET", CM + "?labelSelector=app%3Dweb"),
            Req("GET", CM + "?labelSelector=app+in+(web,db),tier!%3Dback"),
            Req("GET", CM + "?labelSelector=!tier"),
            Req("GET", CM + "?labelSelector=app%3D%3D"),
            Req("GET", CM + "?labelSelector=a+b"),
            Req("GET", CM + "?labelSelector=x%3D" + "v" * 64),
        ),
        quiet=frozenset({0, 1, 2}),
    ),
    Case(
        "list-field-selectors",
        (
            *THREE,
            Req("GET", CM + "?fieldSelector=metadata.name%3Ddb"),
            Req("GET", CM + "?fieldSelector=metadata.name!%3Ddb,metadata.namespace%3D{ns}"),
            Req("GET", CM + "?fieldSelector=spec.nodeName%3Dx"),
            Req("GET", CM + "?fieldSelector=metadata.name"),
        ),
        quiet=frozenset({0, 1, 2}),
    ),
    Case(
        "list-paging",
        (
            *THREE,
            Req("GET", CM + "?limit=2", save="p1"),
            Req("GET", CM + "?limit=2&continue={p1_continue}"),
            Req("GET", CM + "?limit=1&labelSelector=app%3Dweb"),
            Req("GET", CM + "?limit=2&continue=x"),
            Req("GET", CM + "?limit=2&continue={p1_continue}&resourceVersion=5"),
        ),
        quiet=frozenset({0, 1, 2}),
    ),
    Case(
        "list-resource-versions",
        (
            post_cm("a", save="a"),
            post_cm("b"),
            Req("GET", CM + "?resourceVersion=0&limit=1"),
            Req("GET", CM + "?resourceVersion={a}&resourceVersionMatch=Exact"),
            Req("GET", CM + "?resourceVersion={a}&resourceVersionMatch=NotOlderThan"),
            Req("GET", CM + "?resourceVersion={a}&limit=1"),
            Req("GET", CM + "?resourceVersionMatch=Exact"),
            Req("GET", CM + "?resourceVersion=0&resourceVersionMatch=Exact"),
            Req("GET", CM + "?resourceVersion={a}&resourceVersionMatch=Newest"),
            Req("GET", CM + "?resourceVersion=abc"),
            Req("GET", CM + "?sendInitialEvents=true"),
        ),
    ),
    Case(
        "update-conflicts",
        (
            post_cm("a", save="a", x="1"),
            Req(
                "PUT",
                CM + "/a",
                {**cm("a", y="2"), "metadata": {"name": "a", "resourceVersion": "{a}"}},
            ),
            Req(
                "PUT",
                CM + "/a",
                {**cm("a", z="3"), "metadata": {"name": "a", "resourceVersion": "{a}"}},
            ),
            Req("PUT", CM + "/a", cm("a", z="3")),
            Req("PUT", CM + "/a", cm("b")),
            Req("PUT", CM + "/missing", cm("missing")),
            Req("PUT", CM + "/a", {**cm("a"), "metadata": {"name": "a", "namespace": "other"}}),
        ),
    ),
    Case(
        "patch-types",
        (
            post_cm("a", {"app": "web"}, x="1", y="2"),
            Req("PATCH", CM + "/a", {"data": {"x": None, "z": "3"}}, MERGE),
            Req("PATCH", CM + "/a", [{"op": "add", "path": "/data/w", "value": "4"}], JSON_PATCH),
            Req("PATCH", CM + "/a", [{"op": "test", "path": "/data/w", "value": "5"}], JSON_PATCH),
            Req("PATCH", CM + "/a", [{"op": "remove", "path": "/data/nope"}], JSON_PATCH),
            Req("PATCH", CM + "/a", {"metadata": {"labels": {"tier": "x"}}}, STRATEGIC),
            Req("PATCH", CM + "/a", {"metadata": {"resourceVersion": "1"}}, MERGE),
            Req("PATCH", CM + "/a", {"data": {"x": "1"}}, "text/plain"),
            Req("PATCH", CM + "/missing", {"data": {}}, MERGE),
        ),
    ),
    Case(
        "strategic-merge-list-order",
        (
            Req(
                "POST",
                SVC,
                {"metadata": {"name": "s"}, "spec": {"ports": [{"name": "a", "port": 80}]}},
            ),
            Req("PATCH", SVC + "/s", {"spec": {"ports": [{"name": "b", "port": 81}]}}, STRATEGIC),
            Req("PATCH", SVC + "/s", {"spec": {"ports": [{"name": "a2", "port": 80}]}}, STRATEGIC),
            Req("POST", CM, with_finalizer(cm("f"))),
            Req("PATCH", CM + "/f", {"metadata": {"finalizers": ["example.com/new"]}}, STRATEGIC),
            Req("PATCH", CM + "/f", {"metadata": {"finalizers": None}}, MERGE),
        ),
    ),
    Case(
        "server-side-apply",
        (
            Req("PATCH", CM + "/a?fieldManager=test", cm("a", x="1"), APPLY),
            Req("PATCH", CM + "/a?fieldManager=test", cm("a", x="2", y="3"), APPLY),
            Req("PATCH", CM + "/a", cm("a", x="2"), APPLY),
        ),
    ),
    Case(
        "delete",
        (
            post_cm("a"),
            Req("DELETE", CM + "/a"),
            Req("DELETE", CM + "/a"),
            post_cm("b"),
            Req("DELETE", CM + "/b", {"preconditions": {"uid": "0000"}}),
            Req("DELETE", CM + "/b", {"preconditions": {"resourceVersion": "1"}}),
        ),
    ),
    Case(
        "delete-with-finalizer",
        (
            Req("POST", CM, with_finalizer(cm("a"))),
            Req("DELETE", CM + "/a"),
            Req("DELETE", CM + "/a"),
            Req("PATCH", CM + "/a", {"metadata": {"finalizers": None}}, MERGE),
            Req("GET", CM + "/a"),
        ),
    ),
    Case(
        "delete-collection",
        (*THREE, Req("DELETE", CM + "?labelSelector=app%3Dweb"), Req("GET", CM)),
        quiet=frozenset({0, 1, 2}),
    ),
    Case(
        "pod-lifecycle",
        (
            Req("POST", PODS, pod("p")),
            Req(
                "PATCH",
                PODS + "/p",
                {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"}]}},
                STRATEGIC,
            ),
            Req(
                "PATCH",
                PODS + "/p",
                {"spec": {"containers": [{"name": "side", "image": "busybox"}]}},
                STRATEGIC,
            ),
            Req("PATCH", PODS + "/p", {"spec": {"activeDeadlineSeconds": 60}}, MERGE),
            Req("DELETE", PODS + "/p"),
        ),
    ),
    Case(
        "service-create",
        (
            Req("POST", SVC, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
            Req("POST", SVC, {"metadata": {"name": "1s"}, "spec": {"ports": [{"port": 80}]}}),
            Req("DELETE", SVC + "/s"),
        ),
    ),
    Case(
        "other-kinds",
        (
            Req(
                "POST",
                "/api/v1/namespaces/{ns}/secrets",
                {"metadata": {"name": "s"}, "stringData": {"k": "v"}},
            ),
            Req("POST", "/api/v1/namespaces/{ns}/secrets", {"metadata": {"name": "t"}, "data": {}}),
            Req("POST", "/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "sa"}}),
            Req(
                "POST",
                "/api/v1/namespaces/{ns}/endpoints",
                {"metadata": {"name": "e"}, "subsets": []},
            ),
            Req(
                "POST",
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                {
                    "metadata": {"name": "l"},
                    "spec": {"holderIdentity": "me", "leaseDurationSeconds": 10},
                },
            ),
            Req(
                "POST",
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                {"metadata": {"name": "es"}, "addressType": "IPv4", "endpoints": []},
            ),
            Req(
                "POST",
                "/api/v1/namespaces/{ns}/events",
                {
                    "metadata": {"name": "ev"},
                    "involvedObject": {"kind": "Pod", "name": "p", "namespace": "{ns}"},
                    "reason": "R",
                },
            ),
            Req("DELETE", "/api/v1/namespaces/{ns}/secrets/s"),
            Req("DELETE", "/api/v1/namespaces/{ns}/serviceaccounts/sa"),
            Req("DELETE", "/api/v1/namespaces/{ns}/endpoints/e"),
            Req("DELETE", "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/l"),
            Req("DELETE", "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/es"),
            Req("DELETE", "/api/v1/namespaces/{ns}/events/ev"),
            Req("GET", "/apis/nope.example.com/v1/namespaces/{ns}/foos"),
            Req("GET", "/api/v1/namespaces/{ns}/foos"),
        ),
    ),
    Case(
        "namespace-lifecycle",
        (
            Req(
                "POST", "/api/v1/namespaces", {"metadata": {"name": "{ns}-x", "labels": {"a": "b"}}}
            ),
            Req("DELETE", "/api/v1/namespaces/{ns}-x"),
            Req("DELETE", "/api/v1/namespaces"),
        ),
    ),
    Case(
        "watch-from-resource-version",
        (
            post_cm("old", save="start"),
            post_cm("a", x="1"),
            Req("PATCH", CM + "/old", {"data": {"y": "2"}}, MERGE),
            Req("DELETE", CM + "/a"),
            post_cm("b", {"app": "web"}),
            Watch(WATCH + "&resourceVersion={start}"),
            Watch(WATCH + "&resourceVersion={start}&labelSelector=app%3Dweb"),
            Watch(WATCH + "&resourceVersion={start}&fieldSelector=metadata.name%3Dold"),
        ),
    ),
    Case(
        "watch-initial-events",
        (
            post_cm("a"),
            post_cm("b"),
            Watch(WATCH),
            Watch(
                WATCH
                + "&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
            ),
            Watch(WATCH + "&sendInitialEvents=true&allowWatchBookmarks=true"),
            Watch(WATCH + "&resourceVersionMatch=NotOlderThan"),
            Watch(
                WATCH
                + "&sendInitialEvents=false&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"
            ),
        ),
    ),
    Case(
        "watch-after-compaction",
        (
            post_cm("a", save="a"),
            post_cm("b"),
            Compact(),
            post_cm("c"),
            Watch(WATCH + "&resourceVersion={a}"),
        ),
    ),
    Case(
        "method-not-allowed",
        (
            Req("POST", CM + "/a", cm("a")),
            Req("PUT", CM, cm("a")),
            Req("PATCH", CM, {}, MERGE),
            Req("POST", "/api/v1/configmaps", cm("a")),
        ),
    ),
    Case(
        "tables",
        (
            *THREE,
            Req("POST", PODS, pod("p")),
            Req("POST", SVC, {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
            Req("GET", CM, accept=TABLE),
            Req("GET", CM + "/db", accept=TABLE),
            Req("GET", PODS, accept=TABLE),
            Req("GET", SVC, accept=TABLE),
            Req("GET", "/api/v1/namespaces/{ns}", accept=TABLE),
            Req("GET", CM + "?includeObject=None", accept=TABLE),
            Req("GET", CM + "?includeObject=Object&limit=1", accept=TABLE),
        ),
        quiet=frozenset({0, 1, 2, 3, 4}),
    ),
    Case(
        "partial-object-metadata",
        (
            *THREE,
            Req("GET", CM, accept=PARTIAL_LIST),
            Req("GET", CM + "?limit=1", accept=PARTIAL_LIST),
        ),
        quiet=frozenset({0, 1, 2}),
    ),
    Case(
        "discovery",
        (
            Req("GET", "/api"),
            Req("GET", "/api/v1", subset=True),
            Req("GET", "/apis", subset=True),
            Req("GET", "/apis/discovery.k8s.io"),
            Req("GET", "/apis/discovery.k8s.io/v1", subset=True),
            Req("GET", "/apis/coordination.k8s.io/v1", subset=True),
            Req("GET", "/apis/nope.example.com/v1"),
        ),
    ),
)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_sim_answers_like_kube_apiserver(
    case: Case,
    sim_tls: SimProcess,
    real: SimProcess,
    make_namespace: Callable[[SimProcess], str],
    client_ssl: SslFor,
) -> None:
    got = run_case(case, sim_tls, make_namespace(sim_tls), client_ssl)
    want = run_case(case, real, make_namespace(real), client_ssl)
    assert len(got) == len(want)
    diffs = []
    for sim_out, real_out in zip(got, want, strict=True):
        if real_out.subset:
            real_out = Outcome(
                real_out.step,
                real_out.status,
                real_out.media_type,
                _restrict(real_out.body, sim_out.body),
            )
        sim_text, real_text = _show(sim_out), _show(real_out)
        if sim_text != real_text:
            diff = difflib.unified_diff(
                real_text.splitlines(), sim_text.splitlines(), "real", "sim", lineterm="", n=3
            )
            diffs.append(f"step {sim_out.step}\n" + "\n".join(diff))
    if diffs:
        pytest.fail("\n\n".join(diffs), pytrace=False)


def _show(outcome: Outcome) -> str:
    doc = {"status": outcome.status, "type": outcome.media_type, "body": outcome.body}
    # Key order is not compared: kube-apiserver writes Go struct order and
    # sorted map keys, the simulator the order the client sent.
    return json.dumps(doc, indent=1, sort_keys=True)
