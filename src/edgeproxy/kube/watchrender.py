"""Watch frames re-encoded for clients that asked for a Table or metadata only.

`kubectl get -w` asks for Table; the garbage collector for
PartialObjectMetadata. Each event's object becomes a one-row Table (column
definitions only in the first, as kube-apiserver sends them) or a
PartialObjectMetadata; ERROR events pass unchanged (k8s-api-semantics.md sec. 7).
"""

from __future__ import annotations

import msgspec

from edgeproxy.kube.negotiation import MediaChoice
from edgeproxy.kube.resources import ResourceType
from edgeproxy.kube.table import IncludeObject, partial_object_metadata, table


class WatchFrameConverter:
    """A stateful frame filter for one watch: `convert(frame) -> frame`."""

    def __init__(
        self, rt: ResourceType, choice: MediaChoice, include_object: IncludeObject
    ) -> None:
        self.rt = rt
        self.choice = choice
        self.include_object = include_object
        self.first = True

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
