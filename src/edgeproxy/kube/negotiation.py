"""Response media-type negotiation from `Accept`, as kube-apiserver does it.

Why this exists: a proxy that caches and a simulator that answers must pick
the same representation kube-apiserver would pick for the same `Accept`
header -- plain JSON, YAML, a server-printed `meta.k8s.io` Table (kubectl
get) or PartialObjectMetadata (the garbage collector, metadata informers) --
and fail with the same 406/415 Status when it cannot (k8s-api-semantics.md
sec. 7). The rules mirror apiserver/pkg/endpoints/handlers/negotiation:

- The header is split on "," and ";" exactly as goautoneg.ParseAccept does:
  no lower-casing, no quoted strings, an unparsable `q` counts as 0, `q=0`
  clauses are kept (just sorted last), and clauses are ordered by goautoneg's
  (not quite consistent) "higher q first, concrete before wildcard" rule
  with the insertion sort Go uses for short slices.
- Each clause is tried against the serializers json, yaml, protobuf, in that
  order (`*/*` and `application/*` therefore mean JSON). Parameters `as`,
  `g`, `v` ask for a conversion, allowed only for Table (json/yaml) and
  PartialObjectMetadata[List] in meta.k8s.io v1/v1beta1; `stream` must be
  `watch` on a streaming serializer (not yaml); `sv` must be `v1`; anything
  else is ignored. The first acceptable clause wins; no header means JSON.
- Content-Type of the answer is the bare serializer type (`application/json`
  even for a Table -- the as/g/v parameters are only echoed for aggregated
  discovery), and `application/json` for every JSON watch.
- Watch: kube-apiserver takes the first acceptable clause and, when that is
  yaml (no stream framer), answers 406 listing the stream types rather than
  trying the next clause.
- A PartialObjectMetadata conversion on a list (or ...List on one object) is
  accepted by negotiation but fails when the response is transformed, with a
  406 naming the internal Go type, e.g. `(*core.PodList)`.

Protobuf is chosen, as kube-apiserver does, when the first acceptable clause
names it and the resource is a built-in kind (`protobuf=True`: the caller has
the kind's table); for other kinds (CRDs) protobuf clauses are skipped, so a
client that also accepts JSON gets JSON and one that accepts only protobuf
gets the 406, as from kube-apiserver's CRD handler. A Table cannot be
protobuf there either; a protobuf PartialObjectMetadata conversion is skipped
here (answered as the next clause says).

Deliberate differences: the as/list mismatch above is raised here, before the object is read,
so it wins over a 404 that kube-apiserver would report first; a watch asking
for PartialObjectMetadataList gets that 406 instead of kube-apiserver's empty
stream (its watch encoder fails and closes the connection).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.status import not_acceptable, unsupported_media_type

Form = Literal["json", "yaml", "table", "partial", "protobuf"]
Target = Literal["object", "list", "watch"]

JSON = "application/json"
YAML = "application/yaml"
PROTOBUF = "application/vnd.kubernetes.protobuf"
META_GROUP = "meta.k8s.io"
META_VERSIONS = ("v1", "v1beta1")

# Serializers in kube-apiserver's registration order (legacyscheme.Codecs);
# the order decides what `*/*` means and how the 406/415 messages read.
_SERIALIZERS: tuple[str, ...] = (JSON, YAML, PROTOBUF)
_STREAMING: frozenset[str] = frozenset({JSON, PROTOBUF})

_NOT_ACCEPTABLE = "only the following media types are accepted: " + ", ".join(_SERIALIZERS)
_NOT_ACCEPTABLE_STREAM = "only the following media types are accepted: " + ", ".join(
    f"{m};stream=watch" for m in _SERIALIZERS if m in _STREAMING
)
_UNSUPPORTED = (
    "the body of the request was in an unknown format - accepted media types include: "
    + ", ".join(_SERIALIZERS)
)

# Go's strconv.ParseFloat accepts more spellings, but nothing a client sends.
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_TOKEN = r"[!#$%&'*+.^_`|~0-9a-z-]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")


@dataclass(frozen=True, slots=True)
class MediaChoice:
    """The representation to answer with.

    `content_type` is the exact Content-Type header kube-apiserver sends;
    `meta_api_version` is `meta.k8s.io/v1` or `meta.k8s.io/v1beta1` for the
    table/partial forms (the apiVersion of the Table or PartialObjectMetadata
    and of the PartialObjectMetadata embedded in table rows), "" otherwise.
    """

    form: Form
    content_type: str
    meta_api_version: str = ""

    @property
    def serializer(self) -> Literal["json", "yaml"]:
        """How to encode the body (a Table or partial object may be YAML too)."""
        return "yaml" if self.content_type == YAML else "json"


JSON_CHOICE = MediaChoice("json", JSON)
PROTOBUF_CHOICE = MediaChoice("protobuf", PROTOBUF)
PROTOBUF_WATCH_CHOICE = MediaChoice("protobuf", PROTOBUF + ";stream=watch")


@dataclass(slots=True)
class _Clause:
    type: str
    subtype: str
    q: float = 1.0
    params: dict[str, str] = field(default_factory=dict)


def _parse_q(raw: str) -> float:
    return float(raw) if _FLOAT.fullmatch(raw) else 0.0


def _parse_accept(header: str) -> list[_Clause]:
    clauses: list[_Clause] = []
    for part in header.split(","):
        pieces = part.strip(" ").split(";")
        media = pieces[0].split("/")
        kind = media[0].strip(" ")
        if len(media) == 1 and kind == "*":
            clause = _Clause(kind, "*")
        elif len(media) == 2:
            clause = _Clause(kind, media[1].strip(" "))
        else:
            continue
        for param in pieces[1:]:
            key, sep, value = param.partition("=")
            if not sep:
                continue
            key = key.strip(" ")
            if key == "q":
                clause.q = _parse_q(value)
            else:
                clause.params[key] = value.strip(" ")
        clauses.append(clause)
    _goautoneg_sort(clauses)
    return clauses


def _goautoneg_less(a: _Clause, b: _Clause) -> bool:
    if a.q > b.q:
        return True
    if a.type != "*" and b.type == "*":
        return True
    return a.subtype != "*" and b.subtype == "*"


def _goautoneg_sort(clauses: list[_Clause]) -> None:
    """Go's sort.Sort on fewer than 13 items: an insertion sort, kept verbatim
    because goautoneg's Less is not a strict order and the result depends on it."""
    for i in range(1, len(clauses)):
        j = i
        while j > 0 and _goautoneg_less(clauses[j], clauses[j - 1]):
            clauses[j], clauses[j - 1] = clauses[j - 1], clauses[j]
            j -= 1


def _matches(clause: _Clause, media: str) -> bool:
    kind, _, sub = media.partition("/")
    if clause.type == "*" and clause.subtype == "*":
        return True
    return clause.type == kind and clause.subtype in (sub, "*")


def _conversion(clause: _Clause, media: str) -> tuple[bool, str, str]:
    """(acceptable, as-kind, meta version) for one clause on one serializer."""
    params = clause.params
    stream = params.get("stream", "")
    if stream and (media not in _STREAMING or stream != "watch"):
        return False, "", ""
    server_version = params.get("sv", "")
    if server_version and server_version != "v1":
        return False, "", ""
    if not ({"as", "g", "v"} & params.keys()):
        return True, "", ""
    kind, group, version = params.get("as", ""), params.get("g", ""), params.get("v", "")
    if group != META_GROUP or version not in META_VERSIONS:
        return False, "", ""
    if kind == "Table":
        return media in (JSON, YAML), kind, version
    if kind in ("PartialObjectMetadata", "PartialObjectMetadataList"):
        return True, kind, version
    return False, "", ""


def _go_type(rt: ResourceType | None, *, is_list: bool) -> str:
    """The internal Go type kube-apiserver names in its as/list mismatch 406."""
    if rt is None:
        package, kind = "unstructured", "Unstructured"
    else:
        package, kind = (rt.group.split(".")[0] if rt.group else "core"), rt.kind
    return f"*{package}.{kind}{'List' if is_list else ''}"


def _choice(
    media: str, kind: str, version: str, target: Target, rt: ResourceType | None
) -> MediaChoice:
    meta = f"{META_GROUP}/{version}" if version else ""
    if kind == "Table":
        return MediaChoice("table", media, meta)
    if kind == "PartialObjectMetadata" and target == "list":
        raise not_acceptable(
            "you requested PartialObjectMetadata, but the requested object is a list "
            f"({_go_type(rt, is_list=True)})"
        )
    if kind == "PartialObjectMetadataList" and target != "list":
        raise not_acceptable(
            "you requested PartialObjectMetadataList, but the requested object is not a list "
            f"({_go_type(rt, is_list=False)})"
        )
    if kind:
        return MediaChoice("partial", media, meta)
    return MediaChoice("yaml" if media == YAML else "json", media)


def negotiate(
    accept: str | None,
    *,
    target: Target,
    rt: ResourceType | None = None,
    protobuf: bool = False,
) -> MediaChoice:
    """Choose the response representation for `Accept`, or raise 406.

    `target` is what the request returns: one object (get/create/update/...),
    a list, or a watch stream. `rt` only names the Go type in the as/list
    mismatch message. `protobuf`: the caller can answer this resource in
    protobuf (a built-in kind).
    """
    if not accept:
        return JSON_CHOICE
    for clause in _parse_accept(accept):
        for media in _SERIALIZERS:
            if not _matches(clause, media):
                continue
            ok, kind, version = _conversion(clause, media)
            if not ok:
                continue
            if media == PROTOBUF:
                if protobuf and not kind:
                    return PROTOBUF_WATCH_CHOICE if target == "watch" else PROTOBUF_CHOICE
                continue  # no protobuf for this kind (or form): the client's next choice
            if target == "watch" and media not in _STREAMING:
                raise not_acceptable(_NOT_ACCEPTABLE_STREAM)
            return _choice(media, kind, version, target, rt)
    raise not_acceptable(_NOT_ACCEPTABLE)


def request_content_type(header: str | None) -> str:
    """Validate the media type of a create/update body; return it without parameters.

    A missing header means JSON (the first serializer), as in
    NegotiateInputSerializerForMediaType. Protobuf is refused with the
    apiserver's own 415 text: we cannot decode it, and its clients can all
    send JSON instead.
    """
    if not header:
        return JSON
    media, *params = header.split(";")
    media = media.strip().lower()
    well_formed = _MEDIA_TYPE.fullmatch(media) is not None and all(
        "=" in p or not p.strip() for p in params
    )
    if well_formed and media in (JSON, YAML):
        return media
    raise unsupported_media_type(_UNSUPPORTED)


__all__ = [
    "JSON",
    "JSON_CHOICE",
    "PROTOBUF",
    "PROTOBUF_CHOICE",
    "YAML",
    "MediaChoice",
    "negotiate",
    "request_content_type",
]
