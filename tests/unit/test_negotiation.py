"""Accept/Content-Type negotiation, checked against kube-apiserver's behaviour."""

from __future__ import annotations

import pytest

from edgeproxy.kube.negotiation import MediaChoice, negotiate, request_content_type
from edgeproxy.kube.resources import BUILTIN
from edgeproxy.kube.status import StatusError

PODS = next(rt for rt in BUILTIN if rt.resource == "pods")
LEASES = next(rt for rt in BUILTIN if rt.resource == "leases")

KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
CLIENT_GO = "application/vnd.kubernetes.protobuf, application/json"
METADATA_LIST = (
    "application/vnd.kubernetes.protobuf;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,"
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"
)
METADATA_OBJECT = METADATA_LIST.replace("MetadataList", "Metadata")
ALL = "only the following media types are accepted: "


def test_kubectl_get_gets_table_v1_as_plain_json() -> None:
    choice = negotiate(KUBECTL_GET, target="list")
    assert choice == MediaChoice("table", "application/json", "meta.k8s.io/v1")
    assert choice.serializer == "json"


@pytest.mark.parametrize("target", ["object", "list", "watch"])
def test_kubectl_table_for_every_target(target: str) -> None:
    assert negotiate(KUBECTL_GET, target=target).form == "table"  # type: ignore[arg-type]


def test_table_v1beta1_when_only_that_is_accepted() -> None:
    choice = negotiate("application/json;as=Table;v=v1beta1;g=meta.k8s.io", target="list")
    assert choice.meta_api_version == "meta.k8s.io/v1beta1"


@pytest.mark.parametrize("accept", [None, "", "*/*", "application/*", "application/json"])
def test_defaults_to_json(accept: str | None) -> None:
    assert negotiate(accept, target="list") == MediaChoice("json", "application/json")


def test_client_go_protobuf_then_json_gets_json() -> None:
    assert negotiate(CLIENT_GO, target="list").form == "json"
    watch = negotiate(
        "application/vnd.kubernetes.protobuf;stream=watch,application/json", target="watch"
    )
    assert watch == MediaChoice("json", "application/json")


def test_metadata_list_on_a_list() -> None:
    choice = negotiate(METADATA_LIST, target="list")
    assert choice == MediaChoice("partial", "application/json", "meta.k8s.io/v1")


def test_metadata_object_on_get_and_watch() -> None:
    assert negotiate(METADATA_OBJECT, target="object").form == "partial"
    assert negotiate(METADATA_OBJECT, target="watch").form == "partial"


def test_metadata_object_on_a_list_is_406_naming_the_go_type() -> None:
    with pytest.raises(StatusError) as err:
        negotiate(METADATA_OBJECT, target="list", rt=PODS)
    assert err.value.code == 406
    assert err.value.reason == "NotAcceptable"
    assert err.value.message == (
        "you requested PartialObjectMetadata, but the requested object is a list (*core.PodList)"
    )


def test_metadata_list_on_an_object_is_406() -> None:
    with pytest.raises(StatusError) as err:
        negotiate(METADATA_LIST, target="object", rt=LEASES)
    assert err.value.message == (
        "you requested PartialObjectMetadataList, but the requested object is not a list "
        "(*coordination.Lease)"
    )


def test_yaml() -> None:
    assert negotiate("application/yaml", target="object") == MediaChoice("yaml", "application/yaml")
    table = negotiate("application/yaml;as=Table;g=meta.k8s.io;v=v1", target="list")
    assert (table.form, table.serializer) == ("table", "yaml")


def test_yaml_watch_is_406_listing_stream_types() -> None:
    with pytest.raises(StatusError) as err:
        negotiate("application/yaml, application/json", target="watch")
    assert err.value.code == 406
    assert err.value.message == (
        ALL + "application/json;stream=watch, application/vnd.kubernetes.protobuf;stream=watch"
    )


def test_watch_with_table() -> None:
    choice = negotiate(KUBECTL_GET + ";stream=watch", target="watch")
    assert choice.form == "table"
    assert choice.content_type == "application/json"


@pytest.mark.parametrize(
    "accept",
    [
        "text/html",
        "application/xml, text/plain",
        "application/vnd.kubernetes.protobuf",
        "application/json;as=Table;g=meta.k8s.io;v=v2",
        "application/json;as=Table",
        "application/json;as=APIGroupDiscoveryList;g=apidiscovery.k8s.io;v=v2",
        "application/json;stream=other",
        "application/json;sv=v2",
        "Application/JSON",  # goautoneg compares case-sensitively
        " ",
    ],
)
def test_not_acceptable(accept: str) -> None:
    with pytest.raises(StatusError) as err:
        negotiate(accept, target="list")
    assert err.value.code == 406
    assert err.value.message == (
        ALL + "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )


def test_rejected_conversion_falls_through_to_next_clause() -> None:
    accept = "application/json;as=APIGroupDiscoveryList;g=apidiscovery.k8s.io;v=v2,application/json"
    assert negotiate(accept, target="object").form == "json"


def test_q_orders_clauses() -> None:
    accept = "application/json;q=0.5, application/yaml;q=0.9"
    assert negotiate(accept, target="object").form == "yaml"
    # q=0 is not "refused" in goautoneg: it just sorts last.
    assert negotiate("application/json;q=0", target="object").form == "json"


def test_concrete_type_before_wildcard_at_equal_q() -> None:
    assert negotiate("*/*, application/yaml", target="object").form == "yaml"


def test_request_content_type() -> None:
    assert request_content_type(None) == "application/json"
    assert request_content_type("application/json; charset=utf-8") == "application/json"
    assert request_content_type("Application/YAML") == "application/yaml"


@pytest.mark.parametrize(
    "header", ["application/vnd.kubernetes.protobuf", "text/plain", "application/json;x", "json"]
)
def test_request_content_type_415(header: str) -> None:
    with pytest.raises(StatusError) as err:
        request_content_type(header)
    assert err.value.code == 415
    assert err.value.reason == "UnsupportedMediaType"
    assert err.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json, application/yaml, application/vnd.kubernetes.protobuf"
    )


# -- protobuf, for the kinds that have it (the proxy passes protobuf=True for built-ins)


@pytest.mark.parametrize("target", ["object", "list"])
def test_client_go_gets_protobuf_for_builtin_kinds(target: str) -> None:
    choice = negotiate(CLIENT_GO, target=target, rt=PODS, protobuf=True)  # type: ignore[arg-type]
    assert choice == MediaChoice("protobuf", "application/vnd.kubernetes.protobuf")


def test_protobuf_watch_content_type_names_the_stream() -> None:
    choice = negotiate(CLIENT_GO, target="watch", rt=PODS, protobuf=True)
    assert choice.content_type == "application/vnd.kubernetes.protobuf;stream=watch"


def test_first_acceptable_clause_wins_json_first_is_json() -> None:
    accept = "application/json, application/vnd.kubernetes.protobuf"
    assert negotiate(accept, target="list", rt=PODS, protobuf=True).form == "json"
    assert negotiate("*/*", target="list", rt=PODS, protobuf=True).form == "json"


def test_no_protobuf_kind_falls_back_to_json_or_406() -> None:
    # A CRD: kube-apiserver's CRD handler has no protobuf serializer.
    assert negotiate(CLIENT_GO, target="list", rt=PODS, protobuf=False).form == "json"
    with pytest.raises(StatusError) as info:
        negotiate("application/vnd.kubernetes.protobuf", target="list", rt=PODS, protobuf=False)
    assert info.value.code == 406


def test_protobuf_metadata_conversion_is_answered_by_the_next_clause() -> None:
    assert negotiate(METADATA_LIST, target="list", rt=PODS, protobuf=True).form == "partial"
