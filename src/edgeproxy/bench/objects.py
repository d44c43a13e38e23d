"""The objects the suites create: realistic sizes, deterministic content.

Sizes matter more than content here: a Pod is ~1 KB as a Deployment creates
it, a resource-usage ConfigMap ~1.1 KB (1,000 of them make the challenge's
~1.1 MB list), an Endpoints object of 50 addresses ~3.5 KB. Every body is a
pure function of its index, so runs and baselines see the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

# Pods are spread over this many nodes: a node-scoped (kubelet) list is 1%.
NODES = 100
# The label every challenge object carries (PRIOR-ART.md).
CHALLENGE_LABEL = "cloud-native-challenge"

Body = dict[str, Any]


def namespace_body(name: str) -> Body:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def node_name(i: int) -> str:
    return f"node-{i % NODES:03d}"


def node_body(i: int) -> Body:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node_name(i),
            "labels": {"kubernetes.io/hostname": node_name(i), "topology.kubernetes.io/zone": "z1"},
        },
        "status": {"addresses": [{"type": "InternalIP", "address": f"10.0.{i // 250}.{i % 250}"}]},
    }


def pod_body(namespace: str, i: int) -> Body:
    """A ~1 KB Pod as a Deployment would create it."""
    app = f"app-{i % 50:02d}"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{app}-5d8f7b9c4d-{i:05d}",
            "namespace": namespace,
            "labels": {
                "app": app,
                "shard": str(i % 10),
                "tier": ("web", "api", "worker")[i % 3],
                "team": f"team-{i % 7}",
                "pod-template-hash": "5d8f7b9c4d",
            },
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
        },
        "spec": {
            "nodeName": node_name(i),
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "main",
                    "image": f"registry.example.com/team-{i % 7}/{app}:1.{i % 20}.3",
                    "ports": [
                        {"name": "http", "containerPort": 8080, "protocol": "TCP"},
                        {"name": "metrics", "containerPort": 9090, "protocol": "TCP"},
                    ],
                    "env": [
                        {"name": "APP_NAME", "value": app},
                        {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "REGION", "value": "cn-hangzhou"},
                        {
                            "name": "POD_NAME",
                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                        },
                    ],
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "500m", "memory": "512Mi"},
                    },
                }
            ],
        },
    }


def resourceusage_body(namespace: str, i: int) -> Body:
    """A ~1.1 KB ConfigMap of per-node resource usage samples, labelled as the challenge's."""
    samples = [
        {"ts": 1714550400 + 60 * k, "cpu": f"{(i * 7 + k) % 1000}m", "mem": f"{(i + k) % 512}Mi"}
        for k in range(15)
    ]
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"resourceusage-{i:04d}",
            "namespace": namespace,
            "labels": {
                CHALLENGE_LABEL: "benchmark",
                "type": "resourceusage",
                "app": "resourceusage",
                "node": node_name(i),
            },
        },
        "data": {
            "node": node_name(i),
            "window": "60s",
            "samples": json.dumps(samples, separators=(",", ":")),
        },
    }


def challenge_configmap(namespace: str, name: str, kind: str) -> Body:
    """A small ConfigMap of the functional / filter / consistency suites."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {CHALLENGE_LABEL: "benchmark", "type": kind},
        },
        "data": {"index": name},
    }


def service_body(namespace: str, i: int, subnet: int = 96) -> Body:
    """Service `i` with a fixed cluster IP in 10.<subnet>.0.0/16 (no two Services share one)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i:04d}", "namespace": namespace, "labels": {"app": f"a{i}"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": f"10.{subnet}.{i // 250}.{i % 250 + 1}",
            "selector": {"app": f"a{i}"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}],
        },
    }


def endpoints_body(namespace: str, i: int, addresses: int, generation: int = 0) -> Body:
    """Endpoints of service `i`: `addresses` ready pod IPs spread over the nodes."""
    return {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {
            "name": f"svc-{i:04d}",
            "namespace": namespace,
            "labels": {"app": f"a{i}"},
            "annotations": {"bench/generation": str(generation)},
        },
        "subsets": [
            {
                "addresses": [
                    {
                        "ip": f"10.{100 + (i * addresses + k) // 65536 % 100}."
                        f"{(i * addresses + k) // 256 % 256}.{(i * addresses + k) % 256}",
                        "nodeName": node_name(i + k),
                        "targetRef": {
                            "kind": "Pod",
                            "namespace": namespace,
                            "name": f"a{i}-pod-{k:02d}",
                        },
                    }
                    for k in range(addresses)
                ],
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            }
        ],
    }


# The filters suite: Services whose endpoints the proxy's servicetopology filter
# narrows to this node's pool, and their EndpointSlices as kube-proxy reads them.
POOL_LABEL = "apps.openyurt.io/nodepool"
TOPOLOGY_ANNOTATION = "openyurt.io/topologyKeys"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def topology_service_body(namespace: str, i: int) -> Body:
    """Service `i` of `service_body`, asking for pool-scoped endpoints (OpenYurt)."""
    # 10.97: kube-apiserver refuses a cluster IP the shared dataset's Services hold.
    body = service_body(namespace, i, subnet=97)
    body["metadata"]["annotations"] = {TOPOLOGY_ANNOTATION: "openyurt.io/nodepool"}
    return body


def slice_endpoint(i: int, k: int, endpoints: int) -> tuple[str, str]:
    """(IP, node) of endpoint `k` of service `i`: spread evenly over the nodes."""
    n = i * endpoints + k
    ip = f"10.{128 + n // 65536 % 128}.{n // 256 % 256}.{n % 256}"
    return ip, node_name(i + k * max(1, NODES // endpoints))


def endpointslice_name(i: int) -> str:
    return f"svc-{i:04d}-x7k2p"


def endpointslice_body(namespace: str, i: int, endpoints: int) -> Body:
    """The EndpointSlice of service `i` (~200 B per endpoint: ~10 KB at 50), as the controller writes it."""
    name = f"svc-{i:04d}"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": endpointslice_name(i),
            "namespace": namespace,
            "labels": {
                SERVICE_NAME_LABEL: name,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
            "annotations": {"bench/seq": "0"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {
                "addresses": [ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": node,
                "targetRef": {"kind": "Pod", "namespace": namespace, "name": f"a{i}-pod-{k:02d}"},
                "zone": "z1",
            }
            for k in range(endpoints)
            for ip, node in [slice_endpoint(i, k, endpoints)]
        ],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }
