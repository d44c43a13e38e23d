"""Objects a fresh simulator starts with, and loading a `--seed` file.

A real cluster always has the four system namespaces and the `kubernetes`
Service with its Endpoints/EndpointSlice; clients (kubectl, kube-proxy,
coredns) expect them. A seed file is YAML or JSON: one object per document,
or `kind: List` documents with `items`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from edgeproxy.kube.resources import ResourceRegistry
from edgeproxy.kube.status import StatusError
from edgeproxy.sim.operations import Operations


class SeedError(ValueError):
    """A seed file entry that cannot be loaded; the message names the entry."""


def system_objects(api_host: str = "127.0.0.1", api_port: int = 6443) -> list[dict[str, Any]]:
    ns = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
        for n in ("default", "kube-system", "kube-public", "kube-node-lease")
    ]
    port = {"name": "https", "port": 443, "protocol": "TCP", "targetPort": api_port}
    return [
        *ns,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"component": "apiserver", "provider": "kubernetes"},
            },
            "spec": {
                "clusterIP": "10.96.0.1",
                "clusterIPs": ["10.96.0.1"],
                "ports": [port],
                "type": "ClusterIP",
                "sessionAffinity": "None",
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "subsets": [
                {
                    "addresses": [{"ip": api_host}],
                    "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
                }
            ],
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "kubernetes",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "kubernetes"},
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [api_host], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": api_port, "protocol": "TCP"}],
        },
    ]


def read_seed_file(path: Path) -> list[dict[str, Any]]:
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise SeedError(f"cannot read seed file {path}: {exc}") from exc
    return list(_flatten(docs, str(path)))


def _flatten(docs: Iterable[Any], where: str) -> Iterator[dict[str, Any]]:
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise SeedError(f"{where}: document {i} is not an object")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            yield from _flatten(doc["items"], f"{where}: document {i}")
        else:
            yield doc


def load(ops: Operations, registry: ResourceRegistry, objects: Iterable[dict[str, Any]]) -> int:
    """Create the objects, namespaces first; skip ones that already exist."""
    ordered = sorted(objects, key=lambda o: o.get("kind") != "Namespace")
    created = 0
    for obj in ordered:
        api_version = str(obj.get("apiVersion", ""))
        group, _, version = api_version.rpartition("/")
        rt = registry.by_kind(group, version, str(obj.get("kind", "")))
        name = (obj.get("metadata") or {}).get("name") or (obj.get("metadata") or {}).get(
            "generateName"
        )
        if rt is None:
            raise SeedError(f"seed object {obj.get('kind')} {name!r}: unknown kind {api_version}")
        namespace = (obj.get("metadata") or {}).get("namespace") or (
            "default" if rt.namespaced else ""
        )
        try:
            ops.create(rt, namespace, obj)
            created += 1
        except StatusError as err:
            if err.reason == "AlreadyExists":
                continue
            raise SeedError(f"seed object {rt.kind} {namespace}/{name}: {err.message}") from err
    return created
