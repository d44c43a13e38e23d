"""Field selectors: parse, match and print them exactly as kube-apiserver does.

`fieldSelector` is how kubelet scopes its watches (`spec.nodeName=<node>`,
`metadata.name=<name>`), so the proxy both filters with it and routes on it.
This follows `k8s.io/apimachinery/pkg/fields/selector.go`: terms split on
unescaped commas, sorted, split at the first `!=`/`==`/`=`, values unescaped
(`\\,` `\\=` `\\\\`), and the same error texts the apiserver returns in a 400.
Values compare as strings of the server's rendering, which the caller supplies
(k8s-api-semantics.md sec. 4.2).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .labels import LabelSelector, SelectorError, go_quote
from .resources import ResourceType
from .status import bad_request

FieldOp = Literal["=", "!="]
Term = tuple[str, str, str]


def escape_value(value: str) -> str:
    """fields.EscapeValue."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(raw: str) -> str:
    """fields.UnescapeValue: `\\\\`, `\\,` and `\\=` are the only escapes; bare `,`/`=` fail."""
    if "\\" not in raw and "," not in raw and "=" not in raw:
        return raw
    out: list[str] = []
    escaped = False
    for ch in raw:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            # Go prints the rune with %v, i.e. as its code point number.
            raise SelectorError(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise SelectorError("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def split_terms(text: str) -> list[str]:
    """Split on commas that are not backslash-escaped; escapes stay in the terms."""
    if not text:
        return []
    terms: list[str] = []
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, FieldOp, str] | None:
    """Split at the first operator; `==` is checked before `=` so no `=` leaks into the value."""
    eq = term.find("=")
    ne = term.find("!=")
    if ne != -1 and (eq == -1 or ne < eq):
        return term[:ne], "!=", term[ne + 2 :]
    if eq == -1:
        return None
    width = 2 if term.startswith("==", eq) else 1
    return term[:eq], "=", term[eq + width :]


def _render(term: Term) -> str:
    name, op, value = term
    return name + op + escape_value(value)


@dataclass(frozen=True, slots=True)
class FieldSelector:
    """An AND of (field, op, value) terms; op is "=" (`==` normalised) or "!=".

    Terms are kept sorted by their canonical text. kube-apiserver sorts the raw
    terms instead; the two orders agree for terms on different fields, so the
    first unsupported field reported is the same.
    """

    requirements: tuple[Term, ...] = ()
    _checks: tuple[tuple[str, str, bool], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        terms: list[Term] = []
        for name, op, value in self.requirements:
            if op == "==":
                op = "="
            if op not in ("=", "!="):
                raise SelectorError(f"unknown field selector operator {op!r}")
            # Transform() drops a term whose field and value are both empty ("=" alone).
            if name or value:
                terms.append((name, op, value))
        terms.sort(key=_render)
        object.__setattr__(self, "requirements", tuple(terms))
        object.__setattr__(self, "_checks", tuple((n, v, op == "=") for n, op, v in terms))

    @classmethod
    def parse(cls, text: str) -> FieldSelector:
        """fields.ParseSelector; raises SelectorError with the apiserver's message."""
        terms: list[Term] = []
        for part in sorted(split_terms(text)):
            if not part:
                continue
            split = _split_term(part)
            if split is None:
                raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
            name, op, raw = split
            terms.append((name, op, unescape_value(raw)))
        return cls(tuple(terms))

    @classmethod
    def everything(cls) -> FieldSelector:
        return _EVERYTHING

    @property
    def empty(self) -> bool:
        return not self.requirements

    @property
    def fields_used(self) -> frozenset[str]:
        return frozenset(name for name, _, _ in self.requirements)

    def matches(self, fields: Mapping[str, str]) -> bool:
        """A field missing from `fields` compares as "" (fields.Set.Get)."""
        for name, value, want_equal in self._checks:
            if (fields.get(name, "") == value) is not want_equal:
                return False
        return True

    def check_supported(self, supported: Collection[str], *, generic: bool = False) -> None:
        """Reject the first field the kind cannot select on, as the apiserver does.

        `generic=True` gives the wording of runtime.DefaultMetaV1FieldSelectorConversion,
        used for kinds without a registered field-label conversion (e.g. ConfigMap, CRDs).
        """
        for name, _, _ in self.requirements:
            if name not in supported:
                if generic:
                    raise SelectorError(
                        f"{go_quote(name)} is not a known field selector: "
                        'only "metadata.name", "metadata.namespace"'
                    )
                raise SelectorError(f"field label not supported: {name}")

    def exact_value(self, name: str) -> str | None:
        """RequiresExactMatch: the value a `name=value` term demands, if any."""
        for field_name, op, value in self.requirements:
            if field_name == name and op == "=":
                return value
        return None

    def with_term(self, name: str, value: str) -> FieldSelector:
        """This selector AND `name=value` (e.g. the name of a /watch/ URL)."""
        return FieldSelector((*self.requirements, (name, "=", value)))

    def __str__(self) -> str:
        return ",".join(_render(t) for t in self.requirements)


_EVERYTHING = FieldSelector(())


def parse_selectors(
    rt: ResourceType, label_text: str, field_text: str
) -> tuple[LabelSelector, FieldSelector]:
    """A request's selectors for `rt`, or the 400 kube-apiserver answers for them."""
    try:
        labels = LabelSelector.parse(label_text)
        fields = FieldSelector.parse(field_text)
        # Kinds without field-label conversions get apimachinery's generic message.
        # A type learnt from discovery may accept more than the proxy knows of
        # (PodCertificateRequest's spec.nodeName): upstream is asked instead.
        if rt.fields_checked:
            fields.check_supported(rt.field_paths, generic=not rt.extra_fields)
    except SelectorError as exc:
        raise bad_request(exc.message) from exc
    return labels, fields
