"""Scopes: what a reflector keeps in sync, and which requests it can answer.

A scope is (group, version, resource, namespace, label selector, field
selector) as a client asked for it (ARCHITECTURE.md sec. 2). Selectors are
kept in canonical form so equal selectors written differently share a scope.
A scope *covers* a request when it holds a superset of the objects the
request selects and the proxy can evaluate the rest locally.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.resources import ResourceType


@dataclass(frozen=True, slots=True)
class Scope:
    group: str
    version: str
    resource: str
    namespace: str = ""
    label_selector: str = ""
    field_selector: str = ""

    @classmethod
    def of(
        cls, rt: ResourceType, namespace: str, labels: LabelSelector, fields: FieldSelector
    ) -> Scope:
        return cls(rt.group, rt.version, rt.resource, namespace, str(labels), str(fields))

    @property
    def key(self) -> str:
        gvr = (
            f"{self.group}/{self.version}/{self.resource}"
            if self.group
            else f"{self.version}/{self.resource}"
        )
        return f"{gvr}|ns={self.namespace}|l={self.label_selector}|f={self.field_selector}"

    @property
    def gvr(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.resource)

    def labels(self) -> LabelSelector:
        return LabelSelector.parse(self.label_selector)

    def fields(self) -> FieldSelector:
        return FieldSelector.parse(self.field_selector)

    def covers(self, request: Scope, field_labels_known: bool) -> bool:
        """Whether this scope's objects include every object `request` selects.

        The request's own selectors are then evaluated locally, which needs
        the resource's field labels when the request filters on fields this
        scope does not already apply.
        """
        if self.gvr != request.gvr:
            return False
        if self.namespace and self.namespace != request.namespace:
            return False
        if self.label_selector and not _label_subset(request.label_selector, self.label_selector):
            return False
        if self.field_selector and not _field_subset(request.field_selector, self.field_selector):
            return False
        if request.field_selector and request.field_selector != self.field_selector:
            return field_labels_known or _metadata_only(request.field_selector)
        return True


def _requirements(selector: str) -> set[str]:
    # Parsed, not split at commas: set terms such as `a in (x,y)` contain commas.
    return {str(r) for r in LabelSelector.parse(selector).requirements}


def _label_subset(narrow: str, broad: str) -> bool:
    """`narrow` selects a subset of `broad` when it contains all of broad's terms.

    Sound (never claims coverage wrongly) but not complete: `a in (x)` is not
    recognised inside `a in (x,y)`. Terms are compared in canonical form.
    """
    return _requirements(broad) <= _requirements(narrow)


def _field_subset(narrow: str, broad: str) -> bool:
    return set(FieldSelector.parse(broad).requirements) <= set(
        FieldSelector.parse(narrow).requirements
    )


def _metadata_only(field_selector: str) -> bool:
    return all(
        name.startswith("metadata.") for name in FieldSelector.parse(field_selector).fields_used
    )
