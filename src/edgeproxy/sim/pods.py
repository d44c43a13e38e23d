"""What kube-apiserver does to a Pod that it does to no other kind.

Clients read back the pod kube-apiserver stored, not the one they sent: the
API defaults (pkg/apis/core/v1/defaults.go), the DefaultTolerationSeconds and
Priority admission plugins (both on by default), and the QoS class computed
into the status. Updates may change only a handful of spec fields
(ValidatePodUpdate). The simulator applies the same rules so that its pods
look like the real ones; the proxy's filters and selectors do not depend on
any of this.

Left out on purpose: the ServiceAccount admission plugin (off in the project's
ControlPlane, so no serviceAccountName or token volume), probe and volume
defaults, and the field-by-field diff kube-apiserver appends to a forbidden
update's message.
"""

from __future__ import annotations

from typing import Any

from edgeproxy.kube import status

Obj = dict[str, Any]

# DefaultTolerationSeconds admission: 300 s for both taints unless the pod
# already tolerates them.
_DEFAULT_TOLERATED = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")
_TOLERATION_SECONDS = 300

_UPDATABLE = (
    "pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def default_pod(pod: Obj) -> None:
    """Fill in what kube-apiserver fills in when it stores a new pod."""
    spec: Obj = pod.setdefault("spec", {})
    for key in ("initContainers", "containers"):
        for container in spec.get(key) or []:
            if isinstance(container, dict):
                _default_container(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    _default_tolerations(spec)
    # Priority admission: no priorityClassName and no global default class.
    spec.setdefault("priority", 0)
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    pod_status: Obj = pod.setdefault("status", {})
    pod_status.setdefault("phase", "Pending")
    pod_status.setdefault("qosClass", qos_class(spec))


def _default_container(container: Obj) -> None:
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", _pull_policy(str(container.get("image") or "")))
    for port in container.get("ports") or []:
        if isinstance(port, dict):
            port.setdefault("protocol", "TCP")


def _pull_policy(image: str) -> str:
    """Always for `:latest` or an untagged image, IfNotPresent otherwise."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    tag = last.split(":", 1)[1] if ":" in last else ""
    return "IfNotPresent" if tag and tag != "latest" else "Always"


def _default_tolerations(spec: Obj) -> None:
    tolerations = spec.get("tolerations")
    if not isinstance(tolerations, list):
        tolerations = []
    for key in _DEFAULT_TOLERATED:
        if not any(_tolerates_no_execute(t, key) for t in tolerations):
            tolerations.append(
                {
                    "key": key,
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": _TOLERATION_SECONDS,
                }
            )
    spec["tolerations"] = tolerations


def _tolerates_no_execute(toleration: Any, key: str) -> bool:
    if not isinstance(toleration, dict):
        return False
    if toleration.get("effect") not in (None, "", "NoExecute"):
        return False
    return toleration.get("key") in (None, "", key)


def qos_class(spec: Obj) -> str:
    """BestEffort without requests or limits; Guaranteed when every container's
    cpu and memory limits are set and requests equal them; Burstable otherwise."""
    containers = [
        c
        for key in ("initContainers", "containers")
        for c in spec.get(key) or []
        if isinstance(c, dict)
    ]
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits, requests = r.get("limits") or {}, r.get("requests") or {}
        for name in ("cpu", "memory"):
            if name not in limits or requests.get(name, limits[name]) != limits[name]:
                return "Burstable"
    return "Guaranteed"


def check_pod_update(name: str, old: Obj, new: Obj) -> None:
    """ValidatePodUpdate: a pod's spec is immutable but for a few fields; 422 otherwise."""
    old_spec: Obj = old.get("spec") or {}
    new_spec: Obj = new.get("spec") or {}
    if len(old_spec.get("containers") or []) != len(new_spec.get("containers") or []):
        _forbidden(name, "spec.containers", "pod updates may not add or remove containers")
    if len(old_spec.get("initContainers") or []) != len(new_spec.get("initContainers") or []):
        _forbidden(name, "spec.initContainers", "pod updates may not add or remove containers")
    if _mutable_part(old_spec) != _mutable_part(new_spec) or not _only_added(
        old_spec.get("tolerations") or [], new_spec.get("tolerations") or []
    ):
        _forbidden(name, "spec", _UPDATABLE)


def _mutable_part(spec: Obj) -> Obj:
    """The spec with the fields an update may change blanked out."""
    rest = {
        k: v
        for k, v in spec.items()
        if k not in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds")
    }
    for key in ("initContainers", "containers"):
        if isinstance(rest.get(key), list):
            rest[key] = [
                {k: v for k, v in c.items() if k != "image"} if isinstance(c, dict) else c
                for c in rest[key]
            ]
    return rest


def _only_added(old: list[Any], new: list[Any]) -> bool:
    return all(t in new for t in old)


def _forbidden(name: str, field: str, message: str) -> None:
    raise status.invalid("Pod", name, [("FieldValueForbidden", field, f"Forbidden: {message}")])
