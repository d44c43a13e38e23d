"""Request classification: what a Kubernetes API request asks for.

The proxy (deciding what it may answer from its cache) and the simulator
(deciding what to serve) must agree with kube-apiserver on what a URL means,
so both use this one pure parser. `request_info` mirrors the apiserver's
RequestInfoFactory (apiserver pkg/endpoints/request/requestinfo.go);
`list_options` mirrors how the list/watch handler decodes and validates the
query (apiserver pkg/endpoints/handlers/get.go ListResource, apimachinery
meta/internalversion/validation ValidateListOptions) and the storage layer's
continue check (apiserver pkg/storage ValidateListOptions). Error messages are
the apiserver's, verbatim (k8s-api-semantics.md sec. 1, 2.1, 2.2, 3.1, 3.8).

Selectors are carried as strings; only the one `metadata.name` requirement a
named watch needs is looked at here (kube/fields.py owns selector parsing).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from edgeproxy.kube.fields import split_terms
from edgeproxy.kube.status import StatusError, bad_request, invalid

Verb = Literal[
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
    "connect",
]
ListSemantics = Literal["most_recent", "any", "not_older_than", "exact"]

_API_PREFIXES = frozenset({"api", "apis"})
_GROUPLESS_PREFIXES = frozenset({"api"})
# Path segments that are verbs rather than resources (`/api/v1/watch/pods`).
_SPECIAL_VERBS = frozenset({"proxy", "watch"})
# After `/proxy/` everything past the name is the proxied path, not a subresource.
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
# `/namespaces/{ns}/status` is the namespace's subresource, not a resource "status".
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
# Methods are case-sensitive, as in Go's switch on req.Method.
_METHOD_VERBS: Mapping[str, Verb] = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

MATCH_EXACT = "Exact"
MATCH_NOT_OLDER_THAN = "NotOlderThan"
_LIST_OPTIONS_KIND = "ListOptions"
_META_GROUP = "meta.k8s.io"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    is_resource_request: bool
    path: str
    # The Kubernetes verb for resource requests ("" for methods it has no verb
    # for, e.g. OPTIONS); the lowercased HTTP method for non-resource requests.
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    # Path segments starting at {resource}/{name}; everything uninterpreted stays.
    parts: tuple[str, ...] = ()


def parse_bool(value: str | None) -> bool:
    """A boolean query parameter as apimachinery reads it.

    Absent, "0" or "false" in any case mean false; anything else, even "",
    means true (runtime.Convert_Slice_string_To_bool uses strings.EqualFold;
    casefold() matches its simple folding for the word "false").
    """
    if value is None:
        return False
    return not (value == "0" or value.casefold() == "false")


def request_info(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Classify a request like kube-apiserver's RequestInfoFactory.

    A GET of a named item stays "get" even with ?watch=true: the apiserver
    routes it to the get handler, which ignores `watch`; only the legacy
    `/watch/` prefix watches a single object. Raises a 500 StatusError for
    `/api/v1/watch` or `/api/v1/proxy` with nothing after the verb, where the
    apiserver fails with "failed to create RequestInfo".
    """
    parts = [] if not path.strip("/") else path.strip("/").split("/")
    plain = RequestInfo(is_resource_request=False, path=path, verb=method.lower())
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return plain
    api_prefix, rest = parts[0], parts[1:]
    api_group = ""
    if api_prefix not in _GROUPLESS_PREFIXES:
        if len(rest) < 3:
            return plain
        api_group, rest = rest[0], rest[1:]
    api_version, rest = rest[0], rest[1:]

    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            raise _no_kind_error(path)
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method, "")

    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]

    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) >= 2 else ""
    subresource = ""
    if len(rest) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = rest[2]

    if not name and verb == "get":
        verb = "watch" if parse_bool(query.get("watch")) else "list"
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=api_prefix,
        api_group=api_group,
        api_version=api_version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(rest),
    )


# apimachinery path.NameMayNotBe / NameMayNotContain.
_NAME_MAY_NOT_BE = (".", "..")
_NAME_MAY_NOT_CONTAIN = ("/", "%")
# Verbs whose storage key is built from the name (registry NamespaceKeyFunc).
_KEYED_VERBS = frozenset({"get", "update", "patch", "delete"})


def check_name(info: RequestInfo) -> None:
    """Refuse a name that cannot be a storage key, as the registry's KeyFunc does.

    `configmaps/..` reaches the get handler with the name "..", which
    kube-apiserver refuses with a 400; it never resolves the dot segment to
    another resource. (A path whose segments after the name match no route,
    like `configmaps/../secrets`, is a 404 before any name is looked at.)
    """
    if info.verb not in _KEYED_VERBS or not info.name:
        return
    if info.name in _NAME_MAY_NOT_BE:
        problems = [f"may not be '{info.name}'"]
    else:
        problems = [f"may not contain '{c}'" for c in _NAME_MAY_NOT_CONTAIN if c in info.name]
    if problems:
        raise bad_request(f"Name parameter invalid: {go_quote(info.name)}: {';'.join(problems)}")


def _no_kind_error(path: str) -> StatusError:
    # The apiserver's WithRequestInfo filter answers this as text/plain
    # 'Internal Server Error: "<uri>": <message>' (responsewriters.InternalError).
    return StatusError(
        500,
        "InternalError",
        f"failed to create RequestInfo: unable to determine kind and namespace from url, {path}",
    )


@dataclass(frozen=True, slots=True)
class ListOptions:
    label_selector: str
    # With a named watch, already includes `metadata.name=<name>`.
    field_selector: str
    # None when absent or "": the apiserver does not tell them apart.
    resource_version: str | None
    resource_version_match: str
    limit: int
    continue_token: str
    watch: bool
    allow_watch_bookmarks: bool
    # None when the parameter is absent (validation tells absent from false).
    send_initial_events: bool | None
    timeout_seconds: int | None


def list_options(info: RequestInfo, query: Mapping[str, str]) -> ListOptions:
    """Decode and validate list/watch query parameters like the apiserver.

    Order of checks follows ListResource: integers (400), ListOptions
    validation (422), the named-watch field selector (400), then the storage
    layer's continue check (400, lists only) and its resourceVersion parse
    (400 for a list, 500 for a watch). Selector syntax is not checked here;
    the apiserver checks it between the integers and the 422 validation.
    """
    timeout_seconds = _parse_int64(query.get("timeoutSeconds"))
    limit = _parse_int64(query.get("limit")) or 0
    query_watch = parse_bool(query.get("watch"))
    resource_version = query.get("resourceVersion") or None
    match = query.get("resourceVersionMatch", "")
    continue_token = query.get("continue", "")
    raw_sie = query.get("sendInitialEvents")
    send_initial_events = None if raw_sie is None else parse_bool(raw_sie)

    # Validation looks at ?watch only: a legacy /watch/ path without it is
    # validated as a list (get.go passes forceWatch separately).
    causes = _validate(query_watch, resource_version, match, continue_token, send_initial_events)
    if causes:
        raise invalid(_LIST_OPTIONS_KIND, "", causes, group=_META_GROUP)

    watch = query_watch or info.verb == "watch"
    field_selector = query.get("fieldSelector", "")
    if info.name and info.verb == "watch":
        field_selector = _with_name(field_selector, info.name)

    if not watch and continue_token and resource_version not in (None, "0"):
        raise bad_request("specifying resource version is not allowed when using continue")
    if resource_version is not None:
        _check_resource_version(resource_version, watch)

    return ListOptions(
        label_selector=query.get("labelSelector", ""),
        field_selector=field_selector,
        resource_version=resource_version,
        resource_version_match=match,
        limit=limit,
        continue_token=continue_token,
        watch=watch,
        allow_watch_bookmarks=parse_bool(query.get("allowWatchBookmarks")),
        send_initial_events=send_initial_events,
        timeout_seconds=timeout_seconds,
    )


def list_semantics(opts: ListOptions) -> ListSemantics:
    """Which state a list (or a watch-list's initial events) is served from (sec. 2.1).

    A continued list reads at its token's RV, so it is "exact"; a token whose
    rv is -1 (handed out with a 410) means the most recent state instead,
    which only the decoded token can tell. Watches ignore limit and continue.
    """
    if opts.continue_token and not opts.watch:
        return "exact"
    rv = opts.resource_version
    if rv is None:
        return "most_recent"
    if rv == "0":
        return "any"
    if opts.resource_version_match == MATCH_EXACT:
        return "exact"
    if opts.resource_version_match == MATCH_NOT_OLDER_THAN:
        return "not_older_than"
    # Legacy quirk: RV=N with a limit and no match is an exact read.
    return "exact" if opts.limit > 0 and not opts.watch else "not_older_than"


class InvalidResourceVersion(ValueError):
    """A resourceVersion that is not an etcd revision (a decimal uint64)."""


_UINT_RE = re.compile(r"[0-9]+")
_UINT64_MAX = 2**64 - 1


def parse_resource_version(value: str) -> int:
    """APIObjectVersioner.ParseResourceVersion: "" and "0" are 0, else ParseUint base 10.

    Stricter than int(): no sign, no spaces, no underscores, no non-ASCII
    digits, at most 2^64-1. The error text is the apiserver's field error.
    """
    if value in ("", "0"):
        return 0
    if not _UINT_RE.fullmatch(value):
        problem = "invalid syntax"
    elif int(value) > _UINT64_MAX:
        problem = "value out of range"
    else:
        return int(value)
    quoted = go_quote(value)
    raise InvalidResourceVersion(
        f"resourceVersion: Invalid value: {quoted}: strconv.ParseUint: parsing {quoted}: {problem}"
    )


def check_get_options(query: Mapping[str, str]) -> None:
    """GetOptions as the get handler decodes them: only resourceVersion counts.

    List parameters on a get are ignored, not validated. An unparsable RV
    fails in the watch cache's Get with the same bare 500 as a watch's.
    """
    rv = query.get("resourceVersion")
    if rv:
        _check_resource_version(rv, watch=True)


def _check_resource_version(value: str, watch: bool) -> None:
    """Reject an RV the storage layer cannot parse, with the apiserver's answer.

    A list meets storage.ValidateListOptions, a 400 BadRequest. A watch meets
    the watch cache's bare parse error, which the apiserver renders as a 500
    without a reason (kubernetes issue #139485) - odd, but it is the answer.
    """
    try:
        parse_resource_version(value)
    except InvalidResourceVersion as exc:
        if watch:
            raise StatusError(500, "", str(exc)) from None
        raise bad_request(f"invalid resource version: {exc}") from None


Cause = tuple[str, str, str]

# Details of apimachinery's ValidateListOptions / validateWatchOptions.
_MATCH_NEEDS_RV = "resourceVersionMatch is forbidden unless resourceVersion is provided"
_MATCH_WITH_CONTINUE = "resourceVersionMatch is forbidden when continue is provided"
_EXACT_AT_ZERO = 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
_SIE_NEEDS_MATCH = "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
_WATCH_MATCH_NEEDS_SIE = (
    "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"
)


def _forbidden(field: str, detail: str) -> Cause:
    return ("FieldValueForbidden", field, f"Forbidden: {detail}")


def _not_supported(field: str, value: str, supported: tuple[str, ...]) -> Cause:
    values = ", ".join(go_quote(v) for v in supported)
    body = f"Unsupported value: {go_quote(value)}: supported values: {values}"
    return ("FieldValueNotSupported", field, body)


def _validate(
    watch: bool,
    rv: str | None,
    match: str,
    continue_token: str,
    send_initial_events: bool | None,
) -> list[Cause]:
    """ValidateListOptions with the WatchList feature enabled, in upstream order."""
    rvm = "resourceVersionMatch"
    causes: list[Cause] = []
    if watch:
        if send_initial_events is not None and match != MATCH_NOT_OLDER_THAN:
            causes.append(_forbidden(rvm, _SIE_NEEDS_MATCH))
        if match:
            if send_initial_events is None:
                causes.append(_forbidden(rvm, _WATCH_MATCH_NEEDS_SIE))
            if match != MATCH_NOT_OLDER_THAN:
                causes.append(_not_supported(rvm, match, (MATCH_NOT_OLDER_THAN,)))
            if continue_token:
                causes.append(_forbidden(rvm, _MATCH_WITH_CONTINUE))
        return causes
    if match:
        if not rv:
            causes.append(_forbidden(rvm, _MATCH_NEEDS_RV))
        if continue_token:
            causes.append(_forbidden(rvm, _MATCH_WITH_CONTINUE))
        if match not in (MATCH_EXACT, MATCH_NOT_OLDER_THAN):
            causes.append(_not_supported(rvm, match, (MATCH_EXACT, MATCH_NOT_OLDER_THAN, "")))
        if match == MATCH_EXACT and rv == "0":
            causes.append(_forbidden(rvm, _EXACT_AT_ZERO))
    if send_initial_events is not None:
        causes.append(_forbidden("sendInitialEvents", "sendInitialEvents is forbidden for list"))
    return causes


_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_int64(value: str | None) -> int | None:
    """strconv.ParseInt(value, 10, 64), with Go's error text as a 400."""
    if value is None:
        return None
    if not _INT_RE.fullmatch(value):
        raise bad_request(f"strconv.ParseInt: parsing {go_quote(value)}: invalid syntax")
    number = int(value)
    if not _INT64_MIN <= number <= _INT64_MAX:
        raise bad_request(f"strconv.ParseInt: parsing {go_quote(value)}: value out of range")
    return number


def _with_name(field_selector: str, name: str) -> str:
    """Fold a path name into the field selector as ListResource does."""
    terms = [t for t in split_terms(field_selector) if t]
    if not terms:
        return "metadata.name=" + _escape_value(name)
    if _exact_name(terms) != name:
        raise bad_request("fieldSelector metadata.name doesn't match requested name")
    return field_selector


def _exact_name(terms: list[str]) -> str | None:
    """fields.Selector.RequiresExactMatch("metadata.name") over sorted terms.

    Just enough of apimachinery's field selector grammar for this one check;
    kube/fields.py owns the grammar and its syntax errors.
    """
    for term in sorted(terms):
        op = re.search(r"!=|==|=", term)
        if op and op.group() != "!=" and term[: op.start()] == "metadata.name":
            return re.sub(r"\\(.)", r"\1", term[op.end() :])
    return None


def _escape_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


_GO_SHORT_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_GO_SHORT_ESCAPES |= {"\t": "\\t", "\v": "\\v", '"': '\\"', "\\": "\\\\"}


def go_quote(value: str) -> str:
    """Go's strconv.Quote (and %q), which apiserver messages use for values."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in _GO_SHORT_ESCAPES:
            out.append(_GO_SHORT_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
