"""Scopes: canonical keys and which requests a synced scope can answer.

`covers` must be sound: claiming coverage wrongly would serve a client a
list that is missing objects (ARCHITECTURE.md sec. 2).
"""

from __future__ import annotations

import pytest

from edgeproxy.cache.scope import Scope
from edgeproxy.kube.fields import FieldSelector
from edgeproxy.kube.labels import LabelSelector
from edgeproxy.kube.resources import COMMON_FIELDS, ResourceRegistry, ResourceType

REGISTRY = ResourceRegistry()


def _rt(group: str, version: str, resource: str) -> ResourceType:
    rt = REGISTRY.get(group, version, resource)
    assert rt is not None
    return rt


PODS = _rt("", "v1", "pods")


def pods(namespace: str = "", labels: str = "", fields: str = "") -> Scope:
    """A pods scope with selectors in canonical form, as `Scope.of` builds them."""
    return Scope.of(PODS, namespace, LabelSelector.parse(labels), FieldSelector.parse(fields))


def test_of_canonicalises_selectors() -> None:
    a = pods("ns", "b=2,a in (y,x)", "spec.nodeName==n1")
    b = pods("ns", "a in (x,y),b=2", "spec.nodeName=n1")
    assert a == b
    assert a.key == b.key
    assert a.key == "v1/pods|ns=ns|l=a in (x,y),b=2|f=spec.nodeName=n1"


def test_key_includes_group() -> None:
    scope = Scope("apps", "v1", "deployments")
    assert scope.key == "apps/v1/deployments|ns=|l=|f="
    assert scope.gvr == ("apps", "v1", "deployments")


def test_selectors_round_trip() -> None:
    scope = pods("ns", "app=web", "status.phase=Running")
    assert scope.labels().matches({"app": "web"})
    assert not scope.labels().matches({"app": "db"})
    assert scope.fields().matches({"status.phase": "Running"})


# (scope, request, field_labels_known, covers)
COVERS = [
    pytest.param(pods(), pods(), False, True, id="identical-everything"),
    pytest.param(pods(), pods("ns"), False, True, id="cluster-covers-namespace"),
    pytest.param(pods("ns"), pods(), False, False, id="namespace-not-cluster"),
    pytest.param(pods("ns"), pods("other"), False, False, id="other-namespace"),
    pytest.param(pods("ns"), pods("ns", "app=web"), False, True, id="labels-narrower"),
    pytest.param(
        pods("", "app=web"), pods("", "app=web,tier=fe"), False, True, id="label-superset"
    ),
    pytest.param(pods("", "app=web"), pods(""), False, False, id="labels-broader"),
    pytest.param(pods("", "app=web"), pods("", "app=db"), False, False, id="labels-disjoint"),
    pytest.param(
        pods("", "app in (a,b)"), pods("", "app in (a,b),x=1"), False, True, id="set-term-kept"
    ),
    # Sound, not complete: `in (a)` inside `in (a,b)` is not recognised.
    pytest.param(pods("", "app in (a,b)"), pods("", "app in (a)"), False, False, id="incomplete"),
    # Pieces of set terms split at their inner commas must not combine into a match.
    pytest.param(
        pods("", "a in (x,y)"),
        pods("", "a in (x,z),c in (w,y)"),
        True,
        False,
        id="set-terms-not-split",
    ),
    pytest.param(pods(), pods("", "", "spec.nodeName=n1"), True, True, id="fields-known"),
    pytest.param(pods(), pods("", "", "spec.nodeName=n1"), False, False, id="fields-unknown"),
    pytest.param(pods(), pods("", "", "metadata.name=p"), False, True, id="metadata-fields"),
    pytest.param(
        pods("", "", "spec.nodeName=n1"),
        pods("", "", "spec.nodeName=n1"),
        False,
        True,
        id="same-field-selector",
    ),
    pytest.param(
        pods("", "", "spec.nodeName=n1"),
        pods("", "", "spec.nodeName=n2"),
        True,
        False,
        id="field-disjoint",
    ),
    pytest.param(pods("", "", "spec.nodeName=n1"), pods(), True, False, id="field-broader"),
    pytest.param(
        pods("", "", "spec.nodeName=n1"),
        pods("", "", "spec.nodeName=n1,status.phase=Running"),
        True,
        True,
        id="field-superset-known",
    ),
    pytest.param(
        pods("", "", "spec.nodeName=n1"),
        pods("", "", "spec.nodeName=n1,status.phase=Running"),
        False,
        False,
        id="field-superset-unknown",
    ),
    pytest.param(
        pods("", "", r"metadata.name=a\,b"),
        pods("", "", r"metadata.name=a\,c,metadata.namespace=x\,b"),
        True,
        False,
        id="escaped-commas-not-split",
    ),
    pytest.param(Scope("", "v1", "configmaps"), pods(), True, False, id="other-resource"),
]


# The fields a store can evaluate: all of the kind's, or (a type the proxy
# knows only from discovery) metadata.name and metadata.namespace.
METADATA_ONLY = frozenset(COMMON_FIELDS)


@pytest.mark.parametrize(("scope", "request_scope", "known", "expected"), COVERS)
def test_covers(scope: Scope, request_scope: Scope, known: bool, expected: bool) -> None:
    evaluable = PODS.field_paths if known else METADATA_ONLY
    assert scope.covers(request_scope, evaluable) is expected


def pcrs(fields: str = "") -> Scope:
    return Scope("certificates.k8s.io", "v1beta1", "podcertificaterequests", "", "", fields)


@pytest.mark.parametrize(
    ("scope", "request_scope", "expected"),
    [
        # A selector on a field the proxy holds no value of would compare "" and
        # match nothing (or everything, with !=): never from a broader scope.
        pytest.param(pcrs(), pcrs("spec.nodeName=n1"), False, id="unknown-from-broader"),
        pytest.param(pcrs(), pcrs("spec.nodeName!=n1"), False, id="unknown-negated"),
        pytest.param(pcrs(), pcrs("metadata.foo=x"), False, id="unknown-metadata-field"),
        # The scope listed upstream with those terms answers them exactly ...
        pytest.param(pcrs("spec.nodeName=n1"), pcrs("spec.nodeName=n1"), True, id="exact-scope"),
        # ... and narrower requests whose other terms the proxy can evaluate.
        pytest.param(
            pcrs("spec.nodeName=n1"),
            pcrs("metadata.name=a,spec.nodeName=n1"),
            True,
            id="narrower-evaluable",
        ),
        pytest.param(
            pcrs("spec.nodeName=n1"),
            pcrs("spec.nodeName=n1,spec.signerName=s"),
            False,
            id="narrower-unknown",
        ),
    ],
)
def test_covers_fields_without_values(scope: Scope, request_scope: Scope, expected: bool) -> None:
    assert scope.covers(request_scope, METADATA_ONLY) is expected


def test_residual_fields_leave_out_the_scopes_own_terms() -> None:
    scope = pcrs("spec.nodeName=n1")
    request = FieldSelector.parse("spec.nodeName=n1,metadata.name=a")
    assert str(scope.residual_fields(request)) == "metadata.name=a"
    assert scope.residual_fields(scope.fields()).empty
    assert pcrs().residual_fields(request) == request


@pytest.mark.parametrize(
    ("labels", "fields"),
    [("", ""), ("app=web", ""), ("", "spec.nodeName=n"), ("a in (x,y),!b", "status.phase!=Done")],
)
def test_every_scope_covers_itself(labels: str, fields: str) -> None:
    scope = pods("ns", labels, fields)
    assert scope.covers(scope, METADATA_ONLY)
