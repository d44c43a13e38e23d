"""Label selectors parse, match, print and fail exactly like apimachinery's labels.Parse."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.kube.labels import LabelSelector, Operator, Requirement, SelectorError, go_quote

NAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with "
    "an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
    "'my_value',  or '12345', regex used for validation is "
    "'(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
LONG = "a" * 64


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("", ""),
        (" \t\r\n", ""),
        ("a=b", "a=b"),
        ("a==b", "a==b"),
        ("a!=b", "a!=b"),
        ("a = b , c != d", "a=b,c!=d"),
        ("x in (foo,,baz),y,z notin ()", "x in (,baz,foo),y,z notin ()"),
        ("k in (b,a,b)", "k in (a,b)"),
        ("k in (a,)", "k in (,a)"),
        ("k in (,a)", "k in (,a)"),
        ("k in(a)", "k in (a)"),
        ("k notin (a)", "k notin (a)"),
        ("!k", "!k"),
        ("! k", "!k"),
        ("k", "k"),
        ("k>5", "k>5"),
        ("k < 10", "k<10"),
        ("k=", "k="),
        ("k=,j", "j,k="),
        ("b=1,a=2,c", "a=2,b=1,c"),
        ("x=a,x!=b", "x=a,x!=b"),
        ("in in (in, notin)", "in in (in,notin)"),
        ("notin=in", "notin=in"),
        ("example.com/app=web", "example.com/app=web"),
        ("k=" + "a" * 63, "k=" + "a" * 63),
    ],
)
def test_parse_canonical(text: str, canonical: str) -> None:
    selector = LabelSelector.parse(text)
    assert str(selector) == canonical
    assert LabelSelector.parse(canonical) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=b=c", "found '=', expected: ',' or 'end of string'"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        ("!=a", "found '!=', expected: !, identifier, or 'end of string'"),
        ("!k=v", "found '=', expected: ',' or 'end of string'"),
        ("a,", "found '', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a==,", "found '', expected: identifier after ','"),
        ("a===b", "unable to parse requirement: found '=', expected: identifier"),
        ("k v", "unable to parse requirement: found 'v', expected: in, notin, =, ==, !=, gt, lt"),
        ("k in a", "unable to parse requirement: found 'a' expected: '('"),
        ("k in )", "unable to parse requirement: found ')' expected: '('"),
        ("k in (=)", "unable to parse requirement: found '=', expected: ',', ')' or identifier"),
        ("k in (a b)", "unable to parse requirement: found 'b', expected: ',' or ')'"),
        ("k in (,,)", "unable to parse requirement: found ')', expected: ',', or identifier"),
        ("k in (a,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
        (
            "k>abc",
            'unable to parse requirement: values[0]: Invalid value: "abc": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "k<",
            'unable to parse requirement: values[0]: Invalid value: "": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "k>99999999999999999999",
            'unable to parse requirement: values[0]: Invalid value: "99999999999999999999": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "k>-5",
            f'unable to parse requirement: values[0][k]: Invalid value: "-5": {VALUE_RULE}',
        ),
        (
            "k=" + LONG,
            f'unable to parse requirement: values[0][k]: Invalid value: "{LONG}": '
            "must be no more than 63 bytes",
        ),
        (
            "k>" + LONG,
            f'unable to parse requirement: [values[0]: Invalid value: "{LONG}": '
            "for 'Gt', 'Lt' operators, the value must be an integer, "
            f'values[0][k]: Invalid value: "{LONG}": must be no more than 63 bytes]',
        ),
        (
            "k in (-b,-a)",
            f'unable to parse requirement: [values[0][k]: Invalid value: "-a": {VALUE_RULE}, '
            f'values[1][k]: Invalid value: "-b": {VALUE_RULE}]',
        ),
        (
            "app:nginx",
            'unable to parse requirement: <nil>: Invalid value: "app:nginx": '
            f"name part {NAME_RULE}",
        ),
        (
            "a/b/c=d",
            'unable to parse requirement: <nil>: Invalid value: "a/b/c": a qualified name '
            f"{NAME_RULE} with an optional DNS subdomain prefix and '/' "
            "(e.g. 'example.com/MyName')",
        ),
        (
            "/a",
            'unable to parse requirement: <nil>: Invalid value: "/a": '
            "prefix part must be non-empty",
        ),
        (
            "a/",
            'unable to parse requirement: <nil>: Invalid value: "a/": '
            f"name part must be non-empty; name part {NAME_RULE}",
        ),
        (
            LONG,
            f'unable to parse requirement: <nil>: Invalid value: "{LONG}": '
            "name part must be no more than 63 characters",
        ),
        (
            "Example.com/a",
            'unable to parse requirement: <nil>: Invalid value: "Example.com/a": '
            f"prefix part {SUBDOMAIN_RULE}",
        ),
        (
            "k=é",
            f'unable to parse requirement: values[0][k]: Invalid value: "é": {VALUE_RULE}',
        ),
        (
            "k=a\x01",
            f'unable to parse requirement: values[0][k]: Invalid value: "a\\x01": {VALUE_RULE}',
        ),
        # selector.go's lexer treats a NUL as the end of a token.
        (
            "a\x00b",
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
        ),
    ],
)
def test_parse_errors(text: str, message: str) -> None:
    with pytest.raises(SelectorError) as info:
        LabelSelector.parse(text)
    assert info.value.message == message
    status = info.value.status()
    assert (status.code, status.reason, status.message) == (400, "BadRequest", message)


def test_nul_where_a_token_starts_ends_the_selector() -> None:
    # Lex() reading a NUL as its first non-space byte returns end-of-string...
    assert str(LabelSelector.parse("a \x00b")) == "a"
    # ...but a NUL that ends a symbol or identifier is just swallowed.
    assert str(LabelSelector.parse("a,\x00b")) == "a,b"


MATCH_TABLE: list[tuple[str, dict[str, str], bool]] = [
    ("", {}, True),
    ("a=b", {"a": "b"}, True),
    ("a=b", {"a": "c"}, False),
    ("a=b", {}, False),
    ("a==b", {"a": "b", "x": "y"}, True),
    ("a!=b", {}, True),
    ("a!=b", {"a": "b"}, False),
    ("a!=b", {"a": "c"}, True),
    ("a in (b,c)", {"a": "c"}, True),
    ("a in (b,c)", {"a": "d"}, False),
    ("a in (b,c)", {}, False),
    ("a notin (b,c)", {}, True),
    ("a notin (b,c)", {"a": "b"}, False),
    ("a notin (b,c)", {"a": "d"}, True),
    ("a in ()", {"a": ""}, True),
    ("a=", {"a": ""}, True),
    ("a=", {}, False),
    ("a", {"a": ""}, True),
    ("a", {"b": "a"}, False),
    ("!a", {}, True),
    ("!a", {"a": "x"}, False),
    ("a>5", {"a": "6"}, True),
    ("a>5", {"a": "5"}, False),
    ("a>5", {"a": "x"}, False),
    ("a>5", {}, False),
    ("a<5", {"a": "-7"}, True),
    ("a<5", {"a": "+4"}, True),
    ("a<5", {"a": "4.0"}, False),
    ("a<5", {"a": " 4"}, False),
    ("a<5", {"a": "٤"}, False),  # Arabic-Indic digit: Go's ParseInt is ASCII only
    ("a>1", {"a": "99999999999999999999"}, False),  # beyond int64
    ("a=b,c", {"a": "b", "c": ""}, True),
    ("a=b,c", {"a": "b"}, False),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH_TABLE)
def test_matches(text: str, labels: dict[str, str], expected: bool) -> None:
    selector = LabelSelector.parse(text)
    assert selector.matches(labels) is expected
    assert all(r.matches(labels) for r in selector.requirements) is expected


def test_everything_and_empty() -> None:
    assert LabelSelector.everything().empty
    assert LabelSelector.parse("  ") == LabelSelector.everything()
    assert not LabelSelector.parse("a").empty
    assert LabelSelector.everything().matches({"x": "y"})


def test_direct_construction_is_canonical() -> None:
    built = LabelSelector(
        (Requirement("b", "in", ("y", "x", "y")), Requirement("a", "exists")),
    )
    assert built == LabelSelector.parse("a, b in (x,y)")
    assert str(built) == "a,b in (x,y)"
    assert LabelSelector.from_set({"b": "2", "a": "1"}) == LabelSelector.parse("a=1,b=2")
    assert not Requirement("a", "gt", ("x",)).matches({"a": "1"})


def test_go_quote() -> None:
    assert go_quote('a"b\\c\n\t\x7f\u200bé😀') == '"a\\"b\\\\c\\n\\t\\x7f\\u200bé😀"'


# --- properties ---

names = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
prefixes = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,8}[a-z0-9])?(\.[a-z0-9]{1,5}){0,2}", fullmatch=True)
keys = st.one_of(names, st.tuples(prefixes, names).map("/".join))
values = st.one_of(st.just(""), names)
ints = st.integers(0, 2**63 - 1).map(str)


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    key = draw(keys)
    all_ops: list[Operator] = ["=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"]
    op = draw(st.sampled_from(all_ops))
    if op in ("exists", "!"):
        return Requirement(key, op)
    if op in ("in", "notin"):
        return Requirement(key, op, tuple(draw(st.lists(values, min_size=1, max_size=4))))
    return Requirement(key, op, (draw(ints if op in ("gt", "lt") else values),))


selectors = st.lists(requirements(), max_size=6).map(lambda rs: LabelSelector(tuple(rs)))
label_sets = st.dictionaries(keys, values, max_size=6)


def reference_match(r: Requirement, labels: dict[str, str]) -> bool:
    present = r.key in labels
    value = labels.get(r.key)
    if r.operator in ("=", "==", "in"):
        return present and value in r.values
    if r.operator in ("!=", "notin"):
        return not present or value not in r.values
    if r.operator == "exists":
        return present
    if r.operator == "!":
        return not present
    if not present or not (value or "").isascii() or not (value or "").lstrip("+-").isdigit():
        return False
    n, bound = int(value or ""), int(r.values[0])
    return n > bound if r.operator == "gt" else n < bound


@given(selectors)
def test_roundtrip(selector: LabelSelector) -> None:
    assert LabelSelector.parse(str(selector)) == selector


@given(selectors, label_sets)
def test_matches_reference(selector: LabelSelector, labels: dict[str, str]) -> None:
    expected = all(reference_match(r, labels) for r in selector.requirements)
    assert selector.matches(labels) is expected


@given(label_sets)
def test_selector_from_set_matches_its_set(labels: dict[str, str]) -> None:
    selector = LabelSelector.from_set(labels)
    assert selector.matches(labels)
    assert LabelSelector.parse(str(selector)).matches(labels)


@given(keys, values, label_sets)
def test_equal_and_not_equal_are_complements_when_key_present(
    key: str, value: str, labels: dict[str, str]
) -> None:
    eq = LabelSelector.parse(f"{key}={value}")
    ne = LabelSelector.parse(f"{key}!={value}")
    labels_with_key = {**labels, key: labels.get(key, value)}
    assert eq.matches(labels_with_key) is not ne.matches(labels_with_key)
    without = {k: v for k, v in labels.items() if k != key}
    assert not eq.matches(without)
    assert ne.matches(without)


@given(st.text(max_size=30))
def test_parse_never_crashes(text: str) -> None:
    try:
        selector = LabelSelector.parse(text)
    except SelectorError:
        return
    assert LabelSelector.parse(str(selector)) == selector
