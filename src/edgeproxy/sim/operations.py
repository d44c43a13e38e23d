"""Write semantics of the simulator: create, update, patch, delete.

Turns a request body into the next stored state the way kube-apiserver's
generic registry does (k8s-api-semantics.md sec. 6): server-set uid,
creationTimestamp, resourceVersion and generation; generateName; optimistic
concurrency on resourceVersion; preconditions; finalizers and
deletionTimestamp; status kept apart from the main resource; no-op updates
that change nothing (no new RV, no event). Kind-specific defaults are the
few that clients notice (Service clusterIP, Pod phase, Namespace phase).
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import re
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from edgeproxy.kube import status
from edgeproxy.kube.objects import ObjectRecord, object_key, with_type_meta
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.status import StatusError
from edgeproxy.kube.wire import list_body
from edgeproxy.sim.patch import BUILTIN_KINDS, apply_patch
from edgeproxy.sim.pods import check_pod_update, default_pod
from edgeproxy.sim.store import Store

Obj = dict[str, Any]

_META_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', "
    "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# Where kube-apiserver's runtime.Scheme was created, as its decode errors name it.
_SCHEME = "pkg/runtime/scheme.go:111"

# Kinds whose registry strategy keeps metadata.generation (PodObservedGenerationTracking
# for pods); the others' stored objects have none.
_GENERATION_KINDS = frozenset({"pods", "endpointslices"})
# Registries with ReturnDeletedObject: a delete answers with the object, not a Status.
_RETURN_DELETED = frozenset({"pods", "services", "serviceaccounts", "namespaces"})
# Go map fields with omitempty: an empty map is not stored, so not sent back.
_MAP_FIELDS = {
    "configmaps": ("data", "binaryData"),
    "secrets": ("data",),
}
# Go fields without omitempty: always encoded, as their zero value when unset.
_ALWAYS_ENCODED: dict[str, dict[str, Any]] = {
    "endpointslices": {"endpoints": None, "ports": None},
    "events": {
        "source": {},
        "firstTimestamp": None,
        "lastTimestamp": None,
        "eventTime": None,
        "reportingComponent": "",
        "reportingInstance": "",
    },
}
_META_OMIT_EMPTY = ("labels", "annotations", "finalizers", "ownerReferences", "generateName")


def now_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode_object(obj: Obj) -> bytes:
    """Encode in list-item form: no kind/apiVersion, metadata first, in kube's key order."""
    meta = obj.get("metadata") or {}
    ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
    ordered_meta.update({k: v for k, v in meta.items() if k not in ordered_meta})
    out: Obj = {"metadata": ordered_meta}
    out.update({k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "metadata")})
    return msgspec.json.encode(out)


class Operations:
    """The write verbs over a `Store`."""

    def __init__(self, store: Store, clock: Callable[[], str] = now_timestamp) -> None:
        self.store = store
        self.clock = clock
        self._next_ip = 10
        self._next_node_port = 30000
        self._namespaces = next(rt for rt in store.registry if rt.resource == "namespaces")

    # -- helpers -----------------------------------------------------------

    def _current(self, rt: ResourceType, namespace: str, name: str) -> ObjectRecord:
        record = self.store.resource(rt).get(object_key(namespace, name))
        if record is None:
            raise status.not_found(rt.resource, name, rt.group)
        return record

    def _check_type(self, rt: ResourceType, obj: Obj) -> None:
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version not in (None, "", rt.api_version):
            version = str(api_version).rsplit("/", 1)[-1]
            raise status.bad_request(
                f'{kind or rt.kind} in version "{version}" cannot be handled as a {rt.kind}: '
                f'no kind "{kind or rt.kind}" is registered for version "{api_version}" '
                f'in scheme "{_SCHEME}"'
            )
        if kind not in (None, "", rt.kind):
            raise status.bad_request(
                f'{kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                + _kind_mismatch(rt, str(kind))
            )
        if not isinstance(obj.get("metadata", {}), dict):
            raise status.bad_request("metadata must be a JSON object")
        self._check_meta_types(rt, obj.get("metadata") or {})

    @staticmethod
    def _check_meta_types(rt: ResourceType, meta: Obj) -> None:
        """Wrongly typed metadata is a decode error (400), as in the apiserver's JSON decoder.

        Without this check a label value like 5 reaches the store and fails there (a 500).
        """
        go_types = {
            "name": "string",
            "generateName": "string",
            "namespace": "string",
            "uid": "string",
            "resourceVersion": "string",
            "labels": "map[string]string",
            "annotations": "map[string]string",
            "finalizers": "[]string",
        }
        for key, go_type in go_types.items():
            value = meta.get(key)
            if value is None:
                continue
            if go_type == "string":
                ok = isinstance(value, str)
            elif go_type == "[]string":
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            else:
                ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
            if not ok:
                raise status.bad_request(
                    f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                    f"json: cannot unmarshal {type(value).__name__} into Go struct field "
                    f"ObjectMeta.metadata.{key} of type {go_type}"
                )

    def _validate_name(self, rt: ResourceType, name: str) -> None:
        # Services are DNS-1123 labels since RelaxedServiceNameValidation (was DNS-1035).
        if rt.resource in ("namespaces", "services"):
            pattern, msg, limit = _DNS1123_LABEL, _LABEL_MSG, 63
        else:
            pattern, msg, limit = _DNS1123_SUBDOMAIN, _SUBDOMAIN_MSG, 253
        # IsDNS1123Label/Subdomain report each failed rule, length first.
        errors = [f"must be no more than {limit} characters"] if len(name) > limit else []
        if not pattern.match(name):
            errors.append(msg)
        if errors:
            raise status.invalid(
                rt.kind,
                name,
                [
                    ("FieldValueInvalid", "metadata.name", f'Invalid value: "{name}": {e}')
                    for e in errors
                ],
                rt.group,
            )

    def _check_namespace(self, rt: ResourceType, namespace: str, meta: Obj) -> None:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return
        body_ns = meta.get("namespace") or ""
        if body_ns and namespace and body_ns != namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        meta["namespace"] = namespace or body_ns
        if not meta["namespace"]:
            raise status.bad_request("the namespace of the object is required")
        if self.store.resource(self._namespaces).get(meta["namespace"]) is None:
            raise status.not_found("namespaces", meta["namespace"])

    def _commit(
        self, rt: ResourceType, kind: str, obj: Obj, prev: ObjectRecord | None, dry_run: bool
    ) -> bytes:
        if dry_run:
            return with_type_meta(encode_object(obj), rt.kind, rt.api_version)
        rv = self.store.next_rv()
        obj["metadata"]["resourceVersion"] = str(rv)
        raw = encode_object(obj)
        self.store.commit(rt, kind, raw, prev, rv)  # type: ignore[arg-type]
        return with_type_meta(raw, rt.kind, rt.api_version)

    # -- create ------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, obj: Obj, *, dry_run: bool = False) -> bytes:
        self._check_type(rt, obj)
        meta: Obj = obj.setdefault("metadata", {})
        if meta.get("resourceVersion"):
            # BeforeCreate's plain error: a 500 without a reason or details.
            raise StatusError(500, "", "resourceVersion should not be set on objects to be created")
        self._check_namespace(rt, namespace, meta)
        name = meta.get("name") or ""
        if not name:
            prefix = meta.get("generateName") or ""
            if not prefix:
                raise status.invalid(
                    rt.kind,
                    "",
                    [
                        (
                            "FieldValueRequired",
                            "metadata.name",
                            "Required value: name or generateName is required",
                        )
                    ],
                    rt.group,
                )
            name = prefix[:58] + "".join(secrets.choice(_GENERATE_ALPHABET) for _ in range(5))
            meta["name"] = name
        self._validate_name(rt, name)
        if self.store.resource(rt).get(object_key(meta.get("namespace", ""), name)) is not None:
            raise status.already_exists(rt.resource, name, rt.group)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self.clock()
        for server_set in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(server_set, None)
        if rt.resource in _GENERATION_KINDS:
            meta["generation"] = 1
        self._defaults(rt, obj)
        return self._commit(rt, "ADDED", obj, None, dry_run)

    def _defaults(self, rt: ResourceType, obj: Obj) -> None:
        _omit_empty(rt, obj)
        if rt.resource == "namespaces":
            # NamespaceDefaultLabelName: every namespace is labelled with its name.
            meta: Obj = obj["metadata"]
            meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            obj.setdefault("status", {}).setdefault("phase", "Active")
        elif rt.resource == "pods":
            default_pod(obj)
        elif rt.resource == "secrets":
            _fold_string_data(obj)
            obj.setdefault("type", "Opaque")
        elif rt.resource == "services":
            self._service_defaults(obj)

    def _service_defaults(self, obj: Obj) -> None:
        spec = obj.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            ip = str(ipaddress.ip_address("10.96.0.0") + self._next_ip)
            self._next_ip += 1
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        if spec["type"] != "ExternalName":
            spec.setdefault("ipFamilies", ["IPv4"])
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))
                if spec["type"] in ("NodePort", "LoadBalancer") and not port.get("nodePort"):
                    port["nodePort"] = self._next_node_port
                    self._next_node_port += 1
        obj.setdefault("status", {}).setdefault("loadBalancer", {})

    # -- update and patch ----------------------------------------------------

    def update(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        obj: Obj,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> bytes:
        self._check_type(rt, obj)
        meta: Obj = obj.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise status.bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        meta["name"] = name
        if rt.namespaced and meta.get("namespace") and meta["namespace"] != namespace:
            raise status.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        current = self._current(rt, namespace, name)
        wanted_rv = meta.get("resourceVersion") or ""
        if wanted_rv and wanted_rv != str(current.rv):
            raise status.conflict(rt.resource, name, rt.group)
        return self._replace(rt, current, obj, subresource=subresource, dry_run=dry_run)

    def patch(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        content_type: str,
        body: bytes,
        *,
        subresource: str = "",
        dry_run: bool = False,
    ) -> bytes:
        current = self._current(rt, namespace, name)
        old = msgspec.json.decode(current.raw)
        patched = apply_patch(content_type, old, body, rt.kind)
        if not isinstance(patched.get("metadata", {}), dict):
            raise status.bad_request("the patch did not produce an object")
        self._check_type(rt, patched)
        meta = patched.setdefault("metadata", {})
        wanted_rv = meta.get("resourceVersion") or ""
        if wanted_rv and wanted_rv != str(current.rv):
            raise status.conflict(rt.resource, name, rt.group)
        if meta.get("name", name) != name or (
            rt.namespaced and meta.get("namespace", namespace) != namespace
        ):
            raise status.bad_request(
                "the name or namespace of the object may not be changed by a patch"
            )
        return self._replace(rt, current, patched, subresource=subresource, dry_run=dry_run)

    def _replace(
        self, rt: ResourceType, current: ObjectRecord, obj: Obj, *, subresource: str, dry_run: bool
    ) -> bytes:
        old: Obj = msgspec.json.decode(current.raw)
        old_meta: Obj = old["metadata"]
        if subresource == "status":
            new = dict(old)
            new["metadata"] = dict(old_meta)
            if "status" in obj:
                new["status"] = obj["status"]
        elif subresource:
            raise status.method_not_allowed(f"subresource {subresource} does not support updates")
        else:
            new = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}
            new_meta = dict(obj.get("metadata") or {})
            new["metadata"] = new_meta
            for kept in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
                "namespace",
                "name",
            ):
                if kept in old_meta:
                    new_meta[kept] = old_meta[kept]
                else:
                    new_meta.pop(kept, None)
            if "status" in rt.subresources:
                # The main resource ignores status changes; /status carries them.
                if "status" in old:
                    new["status"] = old["status"]
                else:
                    new.pop("status", None)
            if rt.resource == "services":
                self._keep_service_allocations(old, new)
            self._defaults(rt, new)
            if rt.resource == "pods":
                check_pod_update(new_meta["name"], old, new)
            if rt.resource in _GENERATION_KINDS and new.get("spec") != old.get("spec"):
                new_meta["generation"] = int(old_meta.get("generation", 0)) + 1
        new["metadata"]["resourceVersion"] = old_meta.get("resourceVersion", "")
        if new == old:
            return with_type_meta(current.raw, rt.kind, rt.api_version)  # no-op: no new RV
        if old_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            # The last finalizer is gone: the object is finally removed.
            return self._commit(rt, "DELETED", new, current, dry_run)
        return self._commit(rt, "MODIFIED", new, current, dry_run)

    @staticmethod
    def _keep_service_allocations(old: Obj, new: Obj) -> None:
        old_spec, new_spec = old.get("spec") or {}, new.setdefault("spec", {})
        for key in ("clusterIP", "clusterIPs"):
            if key in old_spec and not new_spec.get(key):
                new_spec[key] = old_spec[key]

    # -- delete ------------------------------------------------------------

    def delete(
        self,
        rt: ResourceType,
        namespace: str,
        name: str,
        options: Obj,
        *,
        dry_run: bool = False,
        as_status: bool = True,
    ) -> bytes:
        """The delete's answer: the object, or a Success Status when `as_status`
        and the kind's registry does not return deleted objects."""
        current = self._current(rt, namespace, name)
        obj: Obj = msgspec.json.decode(current.raw)
        meta: Obj = obj["metadata"]
        pre = options.get("preconditions") or {}
        if not isinstance(pre, dict):
            raise status.bad_request("preconditions must be a JSON object")
        # The storage layer's precondition errors name the Kind, not the resource.
        if pre.get("uid") and pre["uid"] != meta.get("uid"):
            raise status.conflict(
                rt.kind,
                name,
                rt.group,
                f"the UID in the precondition ({pre['uid']}) does not match the UID in record "
                f"({meta.get('uid')}). The object might have been deleted and then recreated",
            )
        if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
            raise status.conflict(
                rt.kind,
                name,
                rt.group,
                f"the ResourceVersion in the precondition ({pre['resourceVersion']}) does not "
                f"match the ResourceVersion in record ({meta.get('resourceVersion')}). "
                "The object might have been modified",
            )
        if meta.get("finalizers"):
            if meta.get("deletionTimestamp"):
                return with_type_meta(current.raw, rt.kind, rt.api_version)
            meta["deletionTimestamp"] = self.clock()
            meta["deletionGracePeriodSeconds"] = 0
            return self._commit(rt, "MODIFIED", obj, current, dry_run)
        if rt.resource == "namespaces":
            return self._delete_namespace(rt, obj, current, dry_run)
        if rt.resource == "pods":
            # Graceful deletion with a zero grace period (no kubelet confirms
            # anything): marked, generation bumped, then removed at once.
            meta["deletionTimestamp"] = self.clock()
            meta["deletionGracePeriodSeconds"] = 0
            meta["generation"] = int(meta.get("generation", 0)) + 1
        deleted = self._commit(rt, "DELETED", obj, current, dry_run)
        if rt.resource in _RETURN_DELETED or not as_status:
            return deleted
        return deletion_status(rt, name, str(meta.get("uid", "")))

    def _delete_namespace(
        self, rt: ResourceType, obj: Obj, current: ObjectRecord, dry_run: bool
    ) -> bytes:
        """Terminating first (what the client gets back), then the namespace
        controller's job, done at once: delete everything inside, then the namespace."""
        meta: Obj = obj["metadata"]
        meta["deletionTimestamp"] = self.clock()
        obj.setdefault("status", {})["phase"] = "Terminating"
        terminating = self._commit(rt, "MODIFIED", obj, current, dry_run)
        if not dry_run:
            self._empty_namespace(meta["name"])
            record = self._current(rt, "", meta["name"])
            self._commit(rt, "DELETED", msgspec.json.decode(record.raw), record, False)
        return terminating

    def _empty_namespace(self, namespace: str) -> None:
        for res in self.store.resources():
            if not res.rt.namespaced:
                continue
            for key in list(res.keys_from(prefix=namespace + "/")):
                record = res.objects[key]
                obj: Obj = msgspec.json.decode(record.raw)
                self._commit(res.rt, "DELETED", obj, record, False)

    def delete_collection(
        self, rt: ResourceType, records: list[ObjectRecord], options: Obj, *, dry_run: bool = False
    ) -> bytes:
        deleted = [
            self.delete(rt, r.namespace, r.name, options, dry_run=dry_run, as_status=False)
            for r in records
        ]
        items = [_strip_type_meta(raw) for raw in deleted]
        return list_body(rt.list_kind, rt.api_version, str(self.store.rv), items)


def deletion_status(rt: ResourceType, name: str, uid: str) -> bytes:
    """The Success Status an immediate delete answers with (no ReturnDeletedObject)."""
    details: Obj = {"name": name}
    if rt.group:
        details["group"] = rt.group
    details.update(kind=rt.resource, uid=uid)
    doc = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
    return msgspec.json.encode({**doc, "details": details})


def _kind_mismatch(rt: ResourceType, kind: str) -> str:
    """The decoder's complaint: a registered kind fails conversion, others are unknown."""
    if kind in BUILTIN_KINDS:
        source = f"{rt.version}.{kind}"
        internal = (rt.group.split(".")[0] or "core") + "." + rt.kind
        return f"converting ({source}) to ({internal}): unknown conversion"
    return f'no kind "{kind}" is registered for version "{rt.api_version}" in scheme "{_SCHEME}"'


def _omit_empty(rt: ResourceType, obj: Obj) -> None:
    """Drop what Go's omitempty drops when kube-apiserver re-encodes the object."""
    meta: Obj = obj.get("metadata") or {}
    for key in _META_OMIT_EMPTY:
        if key in meta and not meta[key]:
            del meta[key]
    for key in _MAP_FIELDS.get(rt.resource, ()):
        if key in obj and not obj[key]:
            del obj[key]
    always = _ALWAYS_ENCODED.get(rt.resource, {})
    for key, zero in always.items():
        if not obj.get(key):
            obj[key] = copy.deepcopy(zero)
    for key, value in list(obj.items()):
        if key not in always and (value is None or value == []):
            del obj[key]


def _fold_string_data(secret: Obj) -> None:
    """stringData is write-only: kube-apiserver merges it into data, base64-encoded."""
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.get("data") or {}
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        secret["data"] = data


def _strip_type_meta(raw: bytes) -> bytes:
    obj = msgspec.json.decode(raw)
    obj.pop("kind", None)
    obj.pop("apiVersion", None)
    return msgspec.json.encode(obj)


def raise_if_not_object(value: Any, what: str) -> Obj:
    if not isinstance(value, dict):
        raise StatusError(400, "BadRequest", f"{what} must be a JSON object")
    return value
