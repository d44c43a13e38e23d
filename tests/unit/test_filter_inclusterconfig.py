"""inclusterconfig as tables: kube-proxy's config.conf → the same with kubeconfig commented out."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest

from edgeproxy.filters.base import Applies, Filter
from edgeproxy.filters.inclusterconfig import InClusterConfig, comment_out_kubeconfig
from edgeproxy.kube.objects import NO_FIELDS, ObjectRecord, record_from_bytes
from edgeproxy.kube.resources import ResourceRegistry

_cm = ResourceRegistry().get("", "v1", "configmaps")
assert _cm is not None
CONFIGMAPS = _cm


@dataclass
class FakeInputs:
    """The pure input table a filter reads (FilterInputs); this filter reads none of it."""

    node_name: str = "n1"
    pool_label: str = "apps.openyurt.io/nodepool"
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def node_labels(self, name: str) -> Mapping[str, str] | None:
        return self.nodes.get(name)

    def service(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.services.get((namespace, name))


KUBE_PROXY_CONF = """\
apiVersion: kubeproxy.config.k8s.io/v1alpha1
bindAddress: 0.0.0.0
clientConnection:
  acceptContentTypes: ""
  burst: 10
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 5
mode: iptables
"""

# (id, config.conf, expected)
CONFIG_ROWS: list[tuple[str, str, str]] = [
    (
        "kubeadm-default",
        KUBE_PROXY_CONF,
        KUBE_PROXY_CONF.replace("  kubeconfig:", "  #kubeconfig:"),
    ),
    ("top-level", "kubeconfig: /k.conf\nmode: ipvs", "#kubeconfig: /k.conf\nmode: ipvs"),
    ("indentation-kept", "a:\n      kubeconfig: /k", "a:\n      #kubeconfig: /k"),
    ("already-commented", "  #kubeconfig: /k", "  #kubeconfig: /k"),
    ("commented-with-space", "  # kubeconfig: /k", "  # kubeconfig: /k"),
    ("empty-value", "kubeconfig:", "#kubeconfig:"),
    ("first-occurrence-only", "kubeconfig: kubeconfig", "#kubeconfig: kubeconfig"),
    ("url-value-left-alone", "kubeconfig: https://x:6443", "kubeconfig: https://x:6443"),
    ("windows-path-left-alone", "kubeconfig: C:\\k\\conf", "kubeconfig: C:\\k\\conf"),
    ("space-before-colon", "kubeconfig : /k", "kubeconfig : /k"),
    ("tab-indent-not-stripped", "\tkubeconfig: /k", "\tkubeconfig: /k"),
    ("other-key", "kubeconfigPath: /k", "kubeconfigPath: /k"),
    ("crlf-line", "kubeconfig: /k\r\nmode: x", "#kubeconfig: /k\r\nmode: x"),
    ("several", "kubeconfig: /a\n kubeconfig: /b", "#kubeconfig: /a\n #kubeconfig: /b"),
    ("trailing-newlines-kept", "kubeconfig: /k\n\n", "#kubeconfig: /k\n\n"),
]


@pytest.mark.parametrize(
    ("config", "expected"), [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS]
)
def test_comment_out_kubeconfig(config: str, expected: str) -> None:
    assert comment_out_kubeconfig(config) == expected
    assert comment_out_kubeconfig(expected) == expected  # idempotent


def configmap(data: Any, *, ns: str = "kube-system", name: str = "kube-proxy") -> ObjectRecord:
    obj = {
        "metadata": {"name": name, "namespace": ns, "resourceVersion": "3"},
        "data": data,
    }
    return record_from_bytes(CONFIGMAPS, json.dumps(obj, separators=(",", ":")).encode())


def _bare(body: bytes) -> ObjectRecord:
    return ObjectRecord("kube-system/kube-proxy", 1, {}, NO_FIELDS, body)


SAME = None  # the row expects the very same record back
CONF = {"config.conf": KUBE_PROXY_CONF, "kubeconfig.conf": "apiVersion: v1\n"}

# (id, record, expected data or SAME)
RECORD_ROWS: list[tuple[str, ObjectRecord, dict[str, Any] | None]] = [
    (
        "rewrites-config-only",
        configmap(CONF),
        {**CONF, "config.conf": comment_out_kubeconfig(KUBE_PROXY_CONF)},
    ),
    ("already-rewritten", configmap({"config.conf": "#kubeconfig: /k"}), SAME),
    ("nothing-to-comment", configmap({"config.conf": "mode: ipvs\n"}), SAME),
    ("other-configmap", configmap(CONF, name="kube-proxy-x"), SAME),
    ("other-namespace", configmap(CONF, ns="default"), SAME),
    ("empty-config", configmap({"config.conf": ""}), SAME),
    ("no-config-key", configmap({"other": "kubeconfig: /k"}), SAME),
    ("config-not-string", configmap({"config.conf": ["kubeconfig: /k"]}), SAME),
    ("data-not-object", configmap("kubeconfig: /k"), SAME),
    ("no-data", configmap(None), SAME),
    ("body-not-json", _bare(b"{"), SAME),
    ("body-not-object", _bare(b'"x"'), SAME),
]


@pytest.mark.parametrize(
    ("record", "data"), [r[1:] for r in RECORD_ROWS], ids=[r[0] for r in RECORD_ROWS]
)
def test_inclusterconfig(record: ObjectRecord, data: dict[str, Any] | None) -> None:
    f = InClusterConfig()
    out = f.apply(record, FakeInputs())
    if data is SAME:
        assert out is record
        return
    assert out is not None
    before = msgspec.json.decode(record.raw)
    assert msgspec.json.decode(out.raw) == {**before, "data": data}
    assert out.raw == msgspec.json.encode({**before, "data": data})  # deterministic bytes
    assert (out.key, out.rv, out.labels) == (record.key, record.rv, record.labels)
    assert f.apply(out, FakeInputs()) is out  # idempotent: a filtered object is a fixed point


def test_declarations() -> None:
    f: Filter = InClusterConfig()
    assert f.name == "inclusterconfig"
    assert not f.needs
    for verb in ("get", "list", "watch"):
        assert f.applies.matches("kubelet", "configmaps", verb)
    assert not f.applies.matches("kube-proxy", "configmaps", "list")
    assert not f.applies.matches("kubelet", "secrets", "list")
    custom = Applies.of(("kubelet",), ("configmaps",), ("list",))
    assert InClusterConfig(applies=custom).applies is custom
