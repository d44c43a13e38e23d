"""Request bodies the simulator decodes: JSON, YAML or protobuf, and kube's 400s for bad ones.

kube-apiserver's decoder answers an unparseable, non-object or too deeply
nested body with a 400 whose text clients show to people; these are its
words, kept apart from the write semantics in operations.py.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
import yaml

from edgeproxy.kube import protobuf, status
from edgeproxy.kube.negotiation import request_content_type

Obj = dict[str, Any]


def decode_body(body: bytes, content_type_header: str | None, kind: str = "Object") -> Obj:
    """Decode a create/update/delete body (JSON, YAML or protobuf); 400/415 otherwise."""
    media = (content_type_header or "").split(";")[0].strip().lower()
    if media == protobuf.CONTENT_TYPE:
        return protobuf.decode_object(body)
    content_type = request_content_type(content_type_header)
    try:
        if content_type in ("application/yaml", "application/x-yaml"):
            obj = yaml.safe_load(body)
        else:
            obj = msgspec.json.decode(body)
    except (msgspec.DecodeError, yaml.YAMLError) as exc:
        raise status.bad_request(f"couldn't get version/kind; json parse error: {exc}") from exc
    except RecursionError:
        raise _too_deep(body, kind) from None
    if not isinstance(obj, dict):
        raise status.bad_request(
            "couldn't get version/kind; json parse error: the request body is not a JSON object"
        )
    return obj


# encoding/json's scanner (and sigs.k8s.io/json's) refuses deeper nesting.
_GO_MAX_NESTING = 10_000
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def _too_deep(body: bytes, kind: str) -> status.StatusError:
    """The 400 for a body nested deeper than Python's recursion limit lets msgspec go.

    Beyond 10,000 levels kube-apiserver's JSON scanner fails while reading
    apiVersion/kind, and the create handler says so (transformDecodeError).
    Between ~1,000 and 10,000 levels it would read the body; the simulator
    cannot, and says that instead of crashing.
    """
    depth = 0
    culprit = ""
    for byte in _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS):
        depth += 1 if byte in b"[{" else -1
        if depth > _GO_MAX_NESTING:
            culprit = chr(byte)
            break
    return status.bad_request(
        f"the object provided is unrecognized (must be of type {kind}): "
        f"{_depth_detail(culprit)} ({_summarize(body)})"
    )


def _depth_detail(culprit: str) -> str:
    if not culprit:
        return "nested more deeply than the simulator decodes"
    return (
        "couldn't get version/kind; json parse error: "
        f"invalid character '{culprit}' exceeded max depth"
    )


def _summarize(body: bytes, limit: int = 30) -> str:
    """apiserver summarizeData: an object's first bytes as text, anything else in hex."""
    head, more = body[:limit], " ..." if len(body) > limit else ""
    if not body:
        return "<empty>"
    if body.startswith(b"{"):
        return head.decode(errors="replace") + more
    return head.hex() + more
