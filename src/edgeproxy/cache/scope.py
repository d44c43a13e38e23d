"""Scopes: what a reflector keeps in sync, and which requests it can answer.

A scope is (group, version, resource, namespace, label selector, field
selector) as a client asked for it (ARCHITECTURE.md sec. 2). Selectors are
kept in canonical form so equal selectors written differently share a scope.
A scope *covers* a request when it holds a superset of the objects the
request selects and the proxy can evaluate the rest locally: a field
selector on fields the proxy holds no values of is answered only by a scope
listed with exactly those terms (kube/discovery.py).
"""

from __future__ import annotations

from collections.abc import Collection
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

    def covers(self, request: Scope, evaluable: Collection[str]) -> bool:
        """Whether this scope's objects include every object `request` selects.

        The request's own selectors are then evaluated locally, so every field
        it filters on that this scope does not already apply upstream must be
        one of `evaluable`, the field labels this scope's store holds values
        of: any other would compare as "" and match by mistake.
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
            return self.residual_fields(request.fields()).fields_used <= set(evaluable)
        return True

    def residual_fields(self, fields: FieldSelector) -> FieldSelector:
        """The terms of `fields` this scope's store must still evaluate itself.

        Its own terms were applied by upstream (its lists and watches carry
        them), which matters for a field the proxy holds no value of: a store
        listed with `spec.nodeName=n1` of a kind the proxy does not know the
        fields of serves exactly that request, with nothing left to evaluate.
        """
        if not self.field_selector or fields.empty:
            return fields
        own = set(self.fields().requirements)
        return FieldSelector(tuple(t for t in fields.requirements if t not in own))


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
