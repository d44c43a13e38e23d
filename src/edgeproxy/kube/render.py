"""Lists and watch frames rendered for clients that asked for a Table or metadata only.

`kubectl get` asks for Table; the garbage collector for
PartialObjectMetadata(List). A list becomes a Table or a
PartialObjectMetadataList; each watch event's object becomes a one-row Table
(column definitions only in the first, as kube-apiserver sends them) or a
PartialObjectMetadata, and ERROR events pass unchanged (k8s-api-semantics.md sec. 7).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec

from edgeproxy.kube.negotiation import MediaChoice
from edgeproxy.kube.objects import with_type_meta
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.table import (
    IncludeObject,
    partial_object_metadata,
    partial_object_metadata_list,
    table,
)


class WatchFrameConverter:
    """A stateful frame filter for one watch: `convert(frame) -> frame`."""

    def __init__(
        self, rt: ResourceType, choice: MediaChoice, include_object: IncludeObject
    ) -> None:
        self.rt = rt
        self.choice = choice
        self.include_object = include_object
        self.first = True

    @property
    def passthrough(self) -> bool:
        """Whether frames go out as they are (JSON): the writer then skips the call."""
        return self.choice.form == "json"

    def __call__(self, frame: bytes) -> bytes:
        if self.choice.form == "json":
            return frame
        event = msgspec.json.decode(frame)
        obj = event.get("object") or {}
        if event.get("type") == "ERROR" or obj.get("kind") == "Status":
            return frame
        if self.choice.form == "table":
            event["object"] = table(
                self.rt,
                [obj],
                list_meta=None,
                api_version=self.choice.meta_api_version,
                include_object=self.include_object,
                with_columns=self.first,
            )
            self.first = False
        else:
            event["object"] = partial_object_metadata(obj, self.choice.meta_api_version)
        return msgspec.json.encode(event) + b"\n"


def render_list(
    rt: ResourceType,
    raws: Iterable[bytes],
    list_meta: dict[str, Any],
    choice: MediaChoice,
    include_object: IncludeObject,
    now: datetime | None = None,
) -> dict[str, Any] | None:
    """Objects (list-item form) as a Table or PartialObjectMetadataList; None for other forms.

    A Table's AGE and other relative times are as of `now` (default: this moment).
    """
    if choice.form not in ("table", "partial"):
        return None
    objs = [msgspec.json.decode(with_type_meta(raw, rt.kind, rt.api_version)) for raw in raws]
    if choice.form == "table":
        return table(
            rt,
            objs,
            list_meta=list_meta,
            api_version=choice.meta_api_version,
            include_object=include_object,
            now=now,
        )
    return partial_object_metadata_list(objs, list_meta, choice.meta_api_version)
