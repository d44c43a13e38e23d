"""inclusterconfig: make kube-proxy on edge nodes use its in-cluster config.

kube-proxy's ConfigMap (kube-system/kube-proxy, key `config.conf`) usually
names a kubeconfig file that points at the apiservers directly. Commenting
that line out makes kube-proxy fall back to in-cluster config, i.e. to
KUBERNETES_SERVICE_HOST/PORT, which masterservice points at this proxy; so
kube-proxy keeps working while the node is offline.
"""

from __future__ import annotations

from collections.abc import Mapping

from edgeproxy.filters.base import Applies, FilterInputs, Need, decode, rewritten
from edgeproxy.kube.objects import ObjectRecord

CONFIG_MAP = ("kube-system", "kube-proxy")
CONFIG_KEY = "config.conf"


def comment_out_kubeconfig(config: str) -> str:
    """`config` with every `kubeconfig: <path>` line commented out.

    A line matches when, stripped of spaces (only spaces: YAML forbids tabs
    for indentation), it splits on ":" into exactly two parts, the first being
    `kubeconfig`. The first "kubeconfig" in the line becomes "#kubeconfig", so
    indentation is kept. Idempotent: a commented line starts with "#" and no
    longer matches. A value with another ":" (a URL, a Windows path such as
    C:\\kube\\config) is left alone, as OpenYurt does: this is a line match,
    not a YAML parse, and it stays as narrow as the reference's.
    """
    lines = config.split("\n")
    for i, line in enumerate(lines):
        parts = line.strip(" ").split(":")
        if len(parts) == 2 and parts[0] == "kubeconfig":
            lines[i] = line.replace("kubeconfig", "#kubeconfig", 1)
    return "\n".join(lines)


class InClusterConfig:
    """Comment out the kubeconfig line of kube-proxy's ConfigMap for kubelet."""

    name = "inclusterconfig"
    needs: frozenset[Need] = frozenset()

    def __init__(self, applies: Applies | None = None) -> None:
        self.applies = applies or Applies.of(("kubelet",), ("configmaps",))

    def apply(self, record: ObjectRecord, inputs: FilterInputs) -> ObjectRecord | None:
        if (record.namespace, record.name) != CONFIG_MAP:
            return record
        try:
            obj = decode(record)
        except ValueError:  # not a JSON object: not ours to judge
            return record
        data = obj.get("data")
        if not isinstance(data, Mapping):
            return record
        config = data.get(CONFIG_KEY)
        if not isinstance(config, str) or not config:
            return record
        new_config = comment_out_kubeconfig(config)
        if new_config == config:
            return record
        return rewritten(record, {**obj, "data": {**data, CONFIG_KEY: new_config}})
