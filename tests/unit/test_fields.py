"""Field selectors parse, match, print and fail exactly like apimachinery's fields.ParseSelector."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.kube.fields import FieldSelector, escape_value, unescape_value
from edgeproxy.kube.labels import SelectorError


@pytest.mark.parametrize(
    ("text", "terms", "canonical"),
    [
        ("", (), ""),
        (",,", (), ""),
        ("=", (), ""),  # upstream Transform drops a term with empty field and value
        ("!=", (), ""),
        ("metadata.name=x", (("metadata.name", "=", "x"),), "metadata.name=x"),
        ("metadata.name==x", (("metadata.name", "=", "x"),), "metadata.name=x"),
        ("status.phase!=Running", (("status.phase", "!=", "Running"),), "status.phase!=Running"),
        (
            "spec.nodeName=n1,metadata.namespace=kube-system",
            (("metadata.namespace", "=", "kube-system"), ("spec.nodeName", "=", "n1")),
            "metadata.namespace=kube-system,spec.nodeName=n1",
        ),
        ("a=", (("a", "=", ""),), "a="),
        ("=x", (("", "=", "x"),), "=x"),
        ("a=b\\,c", (("a", "=", "b,c"),), "a=b\\,c"),
        ("a=b\\=c", (("a", "=", "b=c"),), "a=b\\=c"),
        ("a=b\\\\", (("a", "=", "b\\"),), "a=b\\\\"),
        ("a=b\\\\,c=d", (("a", "=", "b\\"), ("c", "=", "d")), "a=b\\\\,c=d"),
        ("a=!b", (("a", "=", "!b"),), "a=!b"),
        ("a!b=c", (("a!b", "=", "c"),), "a!b=c"),
        (" a = b ", ((" a ", "=", " b "),), " a = b "),  # no trimming upstream
        ("a=x,a=x", (("a", "=", "x"), ("a", "=", "x")), "a=x,a=x"),
    ],
)
def test_parse(text: str, terms: tuple[tuple[str, str, str], ...], canonical: str) -> None:
    selector = FieldSelector.parse(text)
    assert selector.requirements == terms
    assert str(selector) == canonical
    assert FieldSelector.parse(canonical) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "invalid selector: 'a'; can't understand 'a'"),
        ("b=1,a", "invalid selector: 'b=1,a'; can't understand 'a'"),
        ("z,y", "invalid selector: 'z,y'; can't understand 'y'"),  # terms are sorted first
        ("a=b=c", "invalid field selector: unescaped character in value: 61"),
        ("a==b=c", "invalid field selector: unescaped character in value: 61"),
        ("a=b\\x", "invalid field selector: invalid escape sequence: \\x"),
        ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        FieldSelector.parse(text)
    assert info.value.message == message
    assert info.value.status().code == 400


@pytest.mark.parametrize(
    ("text", "fields", "expected"),
    [
        ("", {}, True),
        ("metadata.name=x", {"metadata.name": "x"}, True),
        ("metadata.name=x", {"metadata.name": "y"}, False),
        ("metadata.name=x", {}, False),
        ("metadata.name=", {}, True),  # absent compares as ""
        ("metadata.name!=", {}, False),
        ("metadata.name!=x", {}, True),
        ("metadata.name!=x", {"metadata.name": "x"}, False),
        ("spec.unschedulable=true", {"spec.unschedulable": "true"}, True),
        ("a=1,b!=2", {"a": "1", "b": "3"}, True),
        ("a=1,b!=2", {"a": "1", "b": "2"}, False),
        ("a=b\\,c", {"a": "b,c"}, True),
    ],
)
def test_matches(text: str, fields: dict[str, str], expected: bool) -> None:
    assert FieldSelector.parse(text).matches(fields) is expected


def test_check_supported() -> None:
    supported = {"metadata.name", "metadata.namespace", "spec.nodeName"}
    FieldSelector.parse("spec.nodeName=n,metadata.name!=x").check_supported(supported)
    with pytest.raises(SelectorError) as info:
        FieldSelector.parse("spec.foo=1,spec.bar=2,metadata.name=x").check_supported(supported)
    assert info.value.message == "field label not supported: spec.bar"
    with pytest.raises(SelectorError) as info:
        FieldSelector.parse("data.x=1").check_supported(supported, generic=True)
    assert info.value.message == (
        '"data.x" is not a known field selector: only "metadata.name", "metadata.namespace"'
    )


def test_exact_value_and_with_term() -> None:
    selector = FieldSelector.parse("metadata.name!=a,spec.nodeName=n1")
    assert selector.exact_value("spec.nodeName") == "n1"
    assert selector.exact_value("metadata.name") is None
    assert selector.exact_value("status.phase") is None
    named = selector.with_term("metadata.name", "web-0")
    assert named.exact_value("metadata.name") == "web-0"
    assert str(named) == "metadata.name!=a,metadata.name=web-0,spec.nodeName=n1"
    assert named.fields_used == frozenset({"metadata.name", "spec.nodeName"})
    assert FieldSelector.everything().with_term("metadata.name", "a,b") == FieldSelector.parse(
        "metadata.name=a\\,b"
    )


def test_everything_and_direct_construction() -> None:
    assert FieldSelector.everything().empty
    assert FieldSelector.parse("") == FieldSelector.everything()
    built = FieldSelector((("b", "==", "1"), ("a", "!=", "2")))
    assert built.requirements == (("a", "!=", "2"), ("b", "=", "1"))
    with pytest.raises(SelectorError):
        FieldSelector((("a", "in", "x"),))


# --- properties ---

field_names = st.from_regex(r"[A-Za-z0-9_./-]{0,12}", fullmatch=True)
field_values = st.text(max_size=12)
ops = st.sampled_from(["=", "!="])
terms = st.tuples(field_names, ops, field_values)
selectors = st.lists(terms, max_size=5).map(lambda ts: FieldSelector(tuple(ts)))


@given(field_values)
def test_escape_roundtrip(value: str) -> None:
    assert unescape_value(escape_value(value)) == value


@given(selectors)
def test_roundtrip(selector: FieldSelector) -> None:
    assert FieldSelector.parse(str(selector)) == selector


@given(selectors, st.dictionaries(field_names, field_values, max_size=5))
def test_matches_reference(selector: FieldSelector, fields: dict[str, str]) -> None:
    expected = all(
        (fields.get(name, "") == value) == (op == "=") for name, op, value in selector.requirements
    )
    assert selector.matches(fields) is expected


@given(field_names.filter(bool), field_values, st.dictionaries(field_names, field_values))
def test_equal_and_not_equal_are_complements(name: str, value: str, fields: dict[str, str]) -> None:
    eq = FieldSelector(((name, "=", value),))
    ne = FieldSelector(((name, "!=", value),))
    assert eq.matches(fields) is not ne.matches(fields)


@given(field_names.filter(bool), field_values)
def test_with_term_routes(name: str, value: str) -> None:
    selector = FieldSelector.everything().with_term(name, value)
    assert selector.exact_value(name) == value
    assert selector.matches({name: value})


@given(st.text(max_size=30))
def test_parse_never_crashes(text: str) -> None:
    try:
        selector = FieldSelector.parse(text)
    except SelectorError:
        return
    assert FieldSelector.parse(str(selector)) == selector
