"""Printer columns: what kube-apiserver's table printers put in each cell, per kind.

The columns, their SwaggerDoc descriptions and their cell functions follow
kubernetes/pkg/printers/internalversion/printers.go (k8s-api-semantics.md
sec. 7): `kubectl get` prints what the server renders, so these are the
words and numbers an operator reads. table.py assembles them into Tables.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Cell = Callable[[dict[str, Any], datetime], Any]


# Column descriptions are the Go types' SwaggerDoc strings, byte for byte
# (too long for the line limit; they are data, not code).
_DOC = {
    "name": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
    "age": "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata",
    "podIP": "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.",
    "nodeName": "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename",
    "nominatedNodeName": "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.",
    "readinessGates": 'If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to "True" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates',
    "svcType": 'type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. "ClusterIP" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is "None", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. "NodePort" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. "LoadBalancer" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. "ExternalName" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types',
    "clusterIP": 'clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are "None", empty string (""), or a valid IP address. Setting this to "None" makes a "headless service" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies',
    "externalIPs": "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.",
    "svcPorts": "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies",
    "selector": "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/",
    "subsets": "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.",
    "podRestarts": "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    "kubeletVersion": "Kubelet Version reported by the node.",
    "addresses": "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).",
    "osImage": "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).",
    "kernelVersion": "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).",
    "containerRuntimeVersion": "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).",
    "lastTimestamp": "The time at which the most recent occurrence of this event was recorded.",
    "evType": "Type of this event (Normal, Warning), new types could be added in the future",
    "reason": "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.",
    "involvedObject": "The object that this event is about.",
    "fieldPath": 'If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: "spec.containers{name}" (where "name" refers to the name of the container that triggered the event) or if no container name is specified "spec.containers[2]" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.',
    "source": "The component reporting this event. Should be a short machine understandable string.",
    "message": "A human-readable description of the status of this operation.",
    "firstTimestamp": "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)",
    "count": "The number of times this event has occurred.",
    "secretType": "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types",
    "secretData": "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4",
    "saSecrets": 'Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use. Pods are only limited to this list if this service account has a "kubernetes.io/enforce-mountable-secrets" annotation set to "true". The "kubernetes.io/enforce-mountable-secrets" annotation is deprecated since v1.32. Prefer separate namespaces to isolate access to mounted secrets. This field should not be used to find auto-generated service account token secrets for use outside of pods. Instead, tokens can be requested directly using the TokenRequest API, or service account token secrets can be manually created. More info: https://kubernetes.io/docs/concepts/configuration/secret',
    "cmData": "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.",
    "holderIdentity": "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.",
    "addressType": 'addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name. (Deprecated) The EndpointSlice controller only generates, and kube-proxy only processes, slices of addressType "IPv4" and "IPv6". No semantics are defined for the "FQDN" type.',
    "epsPorts": "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. Each slice may include a maximum of 100 ports. Services always have at least 1 port, so EndpointSlices generated by the EndpointSlice controller will likewise always have at least 1 port. EndpointSlices used for other purposes may have an empty ports list.",
    "epsEndpoints": "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.",
}


@dataclass(frozen=True, slots=True)
class Column:
    """One printer column: its TableColumnDefinition and how to fill its cell."""

    name: str
    type: str
    doc: str
    cell: Cell
    format: str = ""
    priority: int = 0

    def definition(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": _DOC.get(self.doc, self.doc),
            "priority": self.priority,
        }


# -- time -------------------------------------------------------------------


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: ~2-3 significant figures."""
    secs = int(seconds)  # Go's int() truncates toward zero, as here
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d{rest}h" if rest else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        rest = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y{rest}d" if rest else f"{years}y"
    return f"{hours // 24 // 365}y"


def _since(value: Any, now: datetime) -> str:
    """translateTimestampSince: "<unknown>" for a missing timestamp."""
    when = _parse_time(value)
    return "<unknown>" if when is None else human_duration((now - when).total_seconds())


def _age(obj: dict[str, Any], now: datetime) -> str:
    return _since(meta_of(obj).get("creationTimestamp"), now)


# -- small accessors ----------------------------------------------------------


def meta_of(obj: Mapping[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for key in path:
        value = value.get(key) if isinstance(value, Mapping) else None
    return value


def _list(obj: Mapping[str, Any], *path: str) -> list[Any]:
    value = _get(obj, *path)
    return value if isinstance(value, list) else []


def _str(obj: Mapping[str, Any], *path: str, default: str = "") -> str:
    value = _get(obj, *path)
    return value if isinstance(value, str) and value else default


def _name(obj: dict[str, Any], _now: datetime) -> str:
    return _str(obj, "metadata", "name")


def _labels(selector: Any) -> str:
    """labels.FormatLabels: sorted k=v pairs, "<none>" when empty."""
    if not isinstance(selector, Mapping) or not selector:
        return "<none>"
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))


def _more(items: list[str], total: int, empty: str, limit: int = 3) -> str:
    """The printers' "a,b,c + N more..." list."""
    if total > limit:
        return ",".join(items[:limit]) + f" + {total - limit} more..."
    return ",".join(items) or empty


# -- pods ---------------------------------------------------------------------


def _is_true(conditions: list[Any], kind: str) -> bool:
    return any(c.get("type") == kind and c.get("status") == "True" for c in conditions)


def _exit(term: Mapping[str, Any]) -> str:
    signal = term.get("signal")
    return term.get("reason") or (
        f"Signal:{signal}" if signal else f"ExitCode:{term.get('exitCode', 0)}"
    )


def _pod_summary(pod: dict[str, Any], now: datetime) -> tuple[str, str, str]:
    """(READY, STATUS, RESTARTS) after printPod; sidecar init containers count
    as containers, but their restarts are not tracked separately."""
    inits = _list(pod, "spec", "initContainers")
    sidecars = {c.get("name") for c in inits if c.get("restartPolicy") == "Always"}
    phase = _str(pod, "status", "phase")
    reason = _str(pod, "status", "reason", default=phase)
    conditions = _list(pod, "status", "conditions")
    if any(
        c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated" for c in conditions
    ):
        reason = "SchedulingGated"
    ready = restarts = 0
    last: datetime | None = None
    initializing = False
    for i, st in enumerate(_list(pod, "status", "initContainerStatuses")):
        restarts += int(st.get("restartCount") or 0)
        term, wait = _get(st, "state", "terminated"), _get(st, "state", "waiting")
        if term and term.get("exitCode", 0) == 0:
            continue
        if st.get("name") in sidecars and st.get("started"):
            ready += bool(st.get("ready"))
            continue
        if term:
            reason = "Init:" + _exit(term)
        elif wait and wait.get("reason") not in (None, "", "PodInitializing"):
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(inits)}"
        initializing = True
        break
    if not initializing or _is_true(conditions, "Initialized"):
        restarts, running = 0, False
        for st in reversed(_list(pod, "status", "containerStatuses")):
            restarts += int(st.get("restartCount") or 0)
            ended = _parse_time(_get(st, "lastState", "terminated", "finishedAt"))
            last = ended if ended and (last is None or ended > last) else last
            term, wait = _get(st, "state", "terminated"), _get(st, "state", "waiting")
            if wait and wait.get("reason"):
                reason = wait["reason"]
            elif term:
                reason = _exit(term)
            elif st.get("ready") and _get(st, "state", "running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            reason = "Running" if _is_true(conditions, "Ready") else "NotReady"
    if meta_of(pod).get("deletionTimestamp"):
        if _str(pod, "status", "reason") == "NodeLost":
            reason = "Unknown"
        elif phase not in ("Succeeded", "Failed"):
            reason = "Terminating"
    shown = str(restarts)
    if restarts and last is not None:
        shown = f"{restarts} ({human_duration((now - last).total_seconds())} ago)"
    total = len(_list(pod, "spec", "containers")) + len(sidecars)
    return f"{ready}/{total}", reason, shown


def _pod_readiness_gates(pod: dict[str, Any], _now: datetime) -> str:
    gates = _list(pod, "spec", "readinessGates")
    status = {c.get("type"): c.get("status") for c in _list(pod, "status", "conditions")}
    true = sum(1 for g in gates if status.get(g.get("conditionType")) == "True")
    return f"{true}/{len(gates)}" if gates else "<none>"


def _pod_ip(pod: dict[str, Any], _now: datetime) -> str:
    ips = _list(pod, "status", "podIPs")
    return (ips[0].get("ip") if ips and isinstance(ips[0], dict) else None) or "<none>"


_POD_DONE = {"Succeeded": "The pod has completed successfully.", "Failed": "The pod failed."}


def pod_conditions(pod: Mapping[str, Any]) -> list[dict[str, str]]:
    """Row conditions printPod adds for finished pods (kubectl greys them out)."""
    phase = _str(pod, "status", "phase")
    if phase not in _POD_DONE:
        return []
    return [{"type": "Completed", "status": "True", "reason": phase, "message": _POD_DONE[phase]}]


# -- other kinds ----------------------------------------------------------------


def _service_external_ip(svc: dict[str, Any], _now: datetime) -> str:
    external = [ip for ip in _list(svc, "spec", "externalIPs") if isinstance(ip, str)]
    kind = _str(svc, "spec", "type")
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or "<none>"
    if kind == "LoadBalancer":
        ingress = _list(svc, "status", "loadBalancer", "ingress")
        lb = sorted({i.get("ip") or i.get("hostname") for i in ingress} - {None, ""})
        return ",".join(lb + external) or "<pending>"
    if kind == "ExternalName":
        return _str(svc, "spec", "externalName")
    return "<unknown>"


def _service_ports(svc: dict[str, Any], _now: datetime) -> str:
    pieces = []
    for p in _list(svc, "spec", "ports"):
        proto = p.get("protocol") or "TCP"
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        pieces.append(f"{p.get('port')}{node}/{proto}")
    return ",".join(pieces) or "<none>"


def _endpoints(ep: dict[str, Any], _now: datetime) -> str:
    if not _list(ep, "subsets"):
        return "<none>"
    shown: list[str] = []
    total = 0
    for subset in _list(ep, "subsets"):
        ips = [a.get("ip", "") for a in subset.get("addresses") or []]
        ports = subset.get("ports") or [None]
        for port in ports:
            total += len(ips)
            for ip in ips:
                if port is None:
                    shown.append(ip)
                else:
                    host = f"[{ip}]" if ":" in ip else ip  # net.JoinHostPort
                    shown.append(f"{host}:{port.get('port')}")
    return _more(shown, total, "")


def _node_status(node: dict[str, Any], _now: datetime) -> str:
    ready = [c for c in _list(node, "status", "conditions") if c.get("type") == "Ready"]
    status = ["Ready" if ready[-1].get("status") == "True" else "NotReady"] if ready else []
    status = status or ["Unknown"]
    if _get(node, "spec", "unschedulable") is True:
        status.append("SchedulingDisabled")
    return ",".join(status)


def _node_roles(node: dict[str, Any], _now: datetime) -> str:
    roles = set()
    for key, value in (meta_of(node).get("labels") or {}).items():
        if key.startswith("node-role.kubernetes.io/") and key[24:]:
            roles.add(key[24:])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    return ",".join(sorted(roles)) or "<none>"


def _node_address(kind: str) -> Cell:
    def cell(node: dict[str, Any], _now: datetime) -> str:
        found = [a for a in _list(node, "status", "addresses") if a.get("type") == kind]
        return found[0].get("address", "") if found else "<none>"

    return cell


def _node_info(key: str) -> Cell:
    return lambda node, _now: _str(node, "status", "nodeInfo", key, default="<unknown>")


def _event_times(ev: dict[str, Any], now: datetime) -> tuple[str, str, int]:
    first = _since(ev.get("firstTimestamp"), now)
    if _parse_time(ev.get("firstTimestamp")) is None:
        first = _since(ev.get("eventTime"), now)
    last = _since(ev.get("lastTimestamp"), now)
    if _parse_time(ev.get("lastTimestamp")) is None:
        last = first
    count = int(ev.get("count") or 0)
    series = ev.get("series")
    if isinstance(series, dict):
        last, count = _since(series.get("lastObservedTime"), now), int(series.get("count") or 0)
    elif count == 0:
        count = 1  # singleton events of the events.k8s.io API carry no count
    return first, last, count


def _event_object(ev: dict[str, Any], _now: datetime) -> str:
    kind = _str(ev, "involvedObject", "kind").lower()
    name = _str(ev, "involvedObject", "name")
    return f"{kind}/{name}" if name else kind


def _event_source(ev: dict[str, Any], _now: datetime) -> str:
    component = _str(ev, "source", "component") or _str(ev, "reportingComponent")
    instance = _str(ev, "source", "host") or _str(ev, "reportingInstance")
    return f"{component}, {instance}" if instance else component


def _slice_ports(eps: dict[str, Any], _now: datetime) -> str:
    ports = _list(eps, "ports")
    shown = [
        str(p.get("port") if p.get("port") is not None else p.get("name") or "*") for p in ports
    ]
    return _more(shown, len(ports), "<unset>")


def _slice_endpoints(eps: dict[str, Any], _now: datetime) -> str:
    shown = [a for e in _list(eps, "endpoints") for a in e.get("addresses") or []]
    return _more(shown, len(shown), "<unset>")


def _configmap_data(cm: dict[str, Any], _now: datetime) -> int:
    return len(cm.get("data") or {}) + len(cm.get("binaryData") or {})


def _created_at(obj: dict[str, Any], _now: datetime) -> str:
    when = _parse_time(meta_of(obj).get("creationTimestamp"))
    return (when or datetime(1, 1, 1, tzinfo=UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _field(*path: str, default: str = "") -> Cell:
    return lambda obj, _now: _str(obj, *path, default=default)


def _count(*path: str) -> Cell:
    return lambda obj, _now: len(_get(obj, *path) or ())


def _pod(index: int) -> Cell:
    return lambda obj, now: _pod_summary(obj, now)[index]


def _event(index: int) -> Cell:
    return lambda obj, now: _event_times(obj, now)[index]


# (column, description key or text, cell[, priority]); every column is a
# "string" except the default convertor's "date", and "Name" has format "name".
_Spec = tuple[str, str, Cell] | tuple[str, str, Cell, int]
_N: _Spec = ("Name", "name", _name)
_A: _Spec = ("Age", "age", _age)
_SPECS: dict[tuple[str, str], tuple[_Spec, ...]] = {
    ("", "Pod"): (
        _N,
        ("Ready", "The aggregate readiness state of this pod for accepting traffic.", _pod(0)),
        ("Status", "The aggregate status of the containers in this pod.", _pod(1)),
        ("Restarts", "podRestarts", _pod(2)),
        _A,
        ("IP", "podIP", _pod_ip, 1),
        ("Node", "nodeName", _field("spec", "nodeName", default="<none>"), 1),
        (
            "Nominated Node",
            "nominatedNodeName",
            _field("status", "nominatedNodeName", default="<none>"),
            1,
        ),
        ("Readiness Gates", "readinessGates", _pod_readiness_gates, 1),
    ),
    ("", "Node"): (
        _N,
        ("Status", "The status of the node", _node_status),
        ("Roles", "The roles of the node", _node_roles),
        _A,
        ("Version", "kubeletVersion", _field("status", "nodeInfo", "kubeletVersion")),
        ("Internal-IP", "addresses", _node_address("InternalIP"), 1),
        ("External-IP", "addresses", _node_address("ExternalIP"), 1),
        ("OS-Image", "osImage", _node_info("osImage"), 1),
        ("Kernel-Version", "kernelVersion", _node_info("kernelVersion"), 1),
        ("Container-Runtime", "containerRuntimeVersion", _node_info("containerRuntimeVersion"), 1),
    ),
    ("", "Namespace"): (
        _N,
        ("Status", "The status of the namespace", _field("status", "phase")),
        _A,
    ),
    ("", "Service"): (
        _N,
        ("Type", "svcType", _field("spec", "type")),
        (
            "Cluster-IP",
            "clusterIP",
            lambda o, _n: (_list(o, "spec", "clusterIPs") or ["<none>"])[0],
        ),
        ("External-IP", "externalIPs", _service_external_ip),
        ("Port(s)", "svcPorts", _service_ports),
        _A,
        ("Selector", "selector", lambda o, _n: _labels(_get(o, "spec", "selector")), 1),
    ),
    ("", "Endpoints"): (_N, ("Endpoints", "subsets", _endpoints), _A),
    ("", "ConfigMap"): (_N, ("Data", "cmData", _configmap_data), _A),
    ("", "Secret"): (
        _N,
        ("Type", "secretType", _field("type")),
        ("Data", "secretData", _count("data")),
        _A,
    ),
    ("", "ServiceAccount"): (_N, ("Secrets", "saSecrets", _count("secrets")), _A),
    ("", "Event"): (
        ("Last Seen", "lastTimestamp", _event(1)),
        ("Type", "evType", _field("type")),
        ("Reason", "reason", _field("reason")),
        ("Object", "involvedObject", _event_object),
        ("Subobject", "fieldPath", _field("involvedObject", "fieldPath"), 1),
        ("Source", "source", _event_source, 1),
        ("Message", "message", lambda o, _n: str(o.get("message") or "").strip()),
        ("First Seen", "firstTimestamp", _event(0), 1),
        ("Count", "count", _event(2), 1),
        ("Name", "name", _name, 1),
    ),
    ("discovery.k8s.io", "EndpointSlice"): (
        _N,
        ("AddressType", "addressType", _field("addressType")),
        ("Ports", "epsPorts", _slice_ports),
        ("Endpoints", "epsEndpoints", _slice_endpoints),
        _A,
    ),
    ("coordination.k8s.io", "Lease"): (
        _N,
        ("Holder", "holderIdentity", _field("spec", "holderIdentity")),
        _A,
    ),
}


def _column(spec: _Spec, kind: str = "string") -> Column:
    name, doc, cell, *rest = spec
    fmt = "name" if name == "Name" else ""
    return Column(name, kind, doc, cell, format=fmt, priority=rest[0] if rest else 0)


PRINTERS = {key: tuple(_column(s) for s in specs) for key, specs in _SPECS.items()}
# rest.defaultTableConvertor, for kinds without a printer.
DEFAULT_COLUMNS = (_column(_N), _column(("Created At", "age", _created_at), kind="date"))
