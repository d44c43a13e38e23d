"""Label selectors: parse, match and print them exactly as kube-apiserver does.

Both the proxy (filtering cached lists and watch events per client) and the
simulator evaluate `labelSelector` query parameters. Clients see our parse
errors verbatim in a 400 Status, and they see our matches as list contents and
watch transitions (k8s-api-semantics.md sec. 3.6, 4.1), so this module follows
`k8s.io/apimachinery/pkg/labels/selector.go` token for token: the same lexer
quirks, the same accepted grammar and the same error texts (which kube-apiserver
returns as `errors.NewBadRequest(err.Error())` when decoding ListOptions).

Matching sits on the hot path (every object of every event for every watcher),
so each requirement is compiled once into a small closure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from .status import StatusError, bad_request

Operator = Literal["=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"]
Matcher = Callable[[Mapping[str, str]], bool]


class SelectorError(ValueError):
    """A label or field selector kube-apiserver would reject with 400 BadRequest."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def status(self) -> StatusError:
        return bad_request(self.message)


# --- validation, as k8s.io/apimachinery/pkg/util/validation (v1.27-v1.34 wording) ---

_NAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_RE = re.compile(_NAME_FMT)
_NAME_MSG = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_VALUE_FMT = "(" + _NAME_FMT + ")?"
_VALUE_RE = re.compile(_VALUE_FMT)
_VALUE_MSG = (
    "a valid label must be an empty string or consist of alphanumeric characters, "
    "'-', '_' or '.', and must start and end with an alphanumeric character"
)
_DNS_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN_FMT = _DNS_LABEL + "(\\." + _DNS_LABEL + ")*"
_SUBDOMAIN_RE = re.compile(_SUBDOMAIN_FMT)
_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)
_INT_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _regex_error(msg: str, fmt: str, *examples: str) -> str:
    # validation.RegexError, including its double space: "'MyName',  or 'my.name'".
    shown = " or ".join(f"'{e}', " for e in examples)
    return f"{msg} (e.g. {shown}regex used for validation is '{fmt}')"


_NAME_ERR = _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc")
_VALUE_ERR = _regex_error(_VALUE_MSG, _VALUE_FMT, "MyValue", "my_value", "12345")
_SUBDOMAIN_ERR = _regex_error(_SUBDOMAIN_MSG, _SUBDOMAIN_FMT, "example.com")
_SLASHES_ERR = (
    f"a qualified name {_NAME_ERR} with an optional DNS subdomain prefix and '/' "
    "(e.g. 'example.com/MyName')"
)


def _max_len_error(n: int) -> str:
    return f"must be no more than {n} characters"


def _blen(s: str) -> int:
    """Go's len(): UTF-8 bytes, not code points."""
    return len(s.encode("utf-8", "surrogateescape"))


def go_int64(s: str) -> int | None:
    """strconv.ParseInt(s, 10, 64): ASCII digits with an optional sign, in int64 range."""
    if not _INT_RE.fullmatch(s):
        return None
    n = int(s)
    return n if _INT64_MIN <= n <= _INT64_MAX else None


_C_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r"}
_C_ESCAPES.update({"\t": "\\t", "\v": "\\v"})


def go_quote(s: str) -> str:
    """Go's %q / strconv.Quote, used by field.Invalid to show the bad value."""
    out = ['"']
    for ch in s:
        cp = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _C_ESCAPES:
            out.append(_C_ESCAPES[ch])
        elif cp < 0x20 or cp == 0x7F or 0xDC80 <= cp <= 0xDCFF:
            out.append(f"\\x{cp & 0xFF:02x}")
        elif cp < 0x10000:
            out.append(f"\\u{cp:04x}")
        else:
            out.append(f"\\U{cp:08x}")
    out.append('"')
    return "".join(out)


def _invalid(path: str, value: object, detail: str) -> str:
    """field.Invalid(path, value, detail).Error()."""
    shown = go_quote(value) if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return f"{path}: Invalid value: {shown}: {detail}"


def _aggregate(errors: list[str]) -> str:
    """field.ErrorList.ToAggregate().Error(): de-duplicated, bracketed when several."""
    unique = list(dict.fromkeys(errors))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def key_errors(key: str) -> list[str]:
    """validation.IsQualifiedName: a label key is [DNS-subdomain "/"] name."""
    parts = key.split("/")
    if len(parts) > 2:
        return [_SLASHES_ERR]
    errs: list[str] = []
    name, prefix = parts[-1], parts[0] if len(parts) == 2 else None
    if prefix == "":
        errs.append("prefix part must be non-empty")
    elif prefix is not None:
        if _blen(prefix) > 253:
            errs.append("prefix part " + _max_len_error(253))
        if not _SUBDOMAIN_RE.fullmatch(prefix):
            errs.append("prefix part " + _SUBDOMAIN_ERR)
    if not name:
        errs.append("name part must be non-empty")
    elif _blen(name) > 63:
        errs.append("name part " + _max_len_error(63))
    if not _NAME_RE.fullmatch(name):
        errs.append("name part " + _NAME_ERR)
    return errs


def value_errors(value: str) -> list[str]:
    """validation.IsValidLabelValue."""
    # IsValidLabelValue counts bytes and says so (validation.MaxLenError is for characters).
    too_long = ["must be no more than 63 bytes"] if _blen(value) > 63 else []
    return too_long if _VALUE_RE.fullmatch(value) else [*too_long, _VALUE_ERR]


# --- requirements ---

_SET_OPS = frozenset({"in", "notin"})
_ALL_OPS = frozenset({"=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"})
_SHOWN_OP = {"=": "=", "==": "==", "!=": "!=", "in": " in ", "notin": " notin "}
_SHOWN_OP.update({"gt": ">", "lt": "<"})


def _compile(key: str, op: str, values: tuple[str, ...]) -> Matcher:
    if op == "exists":
        return lambda ls: key in ls
    if op == "!":
        return lambda ls: key not in ls
    if op in ("gt", "lt"):
        bound = go_int64(values[0]) if len(values) == 1 else None
        if bound is None:
            return lambda ls: False
        greater = op == "gt"

        def compare(ls: Mapping[str, str]) -> bool:
            raw = ls.get(key)
            n = None if raw is None else go_int64(raw)
            return n is not None and (n > bound if greater else n < bound)

        return compare
    positive = op in ("=", "==", "in")
    if len(values) == 1:
        only = values[0]
        if positive:
            return lambda ls: ls.get(key) == only
        return lambda ls: ls.get(key) != only
    allowed = frozenset(values)
    if positive:
        return lambda ls: (v := ls.get(key)) is not None and v in allowed
    return lambda ls: (v := ls.get(key)) is None or v not in allowed


@dataclass(frozen=True, slots=True)
class Requirement:
    """One ANDed term: `key op values`. in/notin values are kept sorted and unique."""

    key: str
    operator: Operator
    values: tuple[str, ...] = ()
    _match: Matcher = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.operator not in _ALL_OPS:
            raise SelectorError(f"unknown label selector operator {self.operator!r}")
        if self.operator in _SET_OPS:
            object.__setattr__(self, "values", tuple(sorted(set(self.values))))
        object.__setattr__(self, "_match", _compile(self.key, self.operator, self.values))

    def matches(self, labels: Mapping[str, str]) -> bool:
        return self._match(labels)

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return "!" + self.key
        shown = ",".join(sorted(self.values))
        if self.operator in _SET_OPS:
            shown = "(" + shown + ")"
        return self.key + _SHOWN_OP[self.operator] + shown


def _count_error(op: str, n: int) -> str | None:
    if op in _SET_OPS:
        return None if n else "for 'in', 'notin' operators, values set can't be empty"
    if op in ("exists", "!"):
        return None if n == 0 else "values set must be empty for exists and does not exist"
    if n == 1:
        return None
    if op in ("gt", "lt"):
        return "for 'Gt', 'Lt' operators, exactly one value is required"
    return "exact-match compatibility requires one single value"


def new_requirement(key: str, op: Operator, values: Iterable[str]) -> Requirement:
    """labels.NewRequirement: validate like the apiserver (same paths, same order), then build."""
    vals = list(values)
    errs: list[str] = []
    if kerrs := key_errors(key):
        errs.append(_invalid("key", key, "; ".join(kerrs)))
    if count_error := _count_error(op, len(vals)):
        errs.append(_invalid("values", vals, count_error))
    if op in ("gt", "lt"):
        not_int = "for 'Gt', 'Lt' operators, the value must be an integer"
        errs += [
            _invalid(f"values[{i}]", v, not_int) for i, v in enumerate(vals) if go_int64(v) is None
        ]
    for i, v in enumerate(vals):
        if verrs := value_errors(v):
            errs.append(_invalid(f"values[{i}][{key}]", v, "; ".join(verrs)))
    if errs:
        raise SelectorError(_aggregate(errs))
    return Requirement(key, op, tuple(vals))


# --- lexer and parser (selector.go's Lexer/Parser, including their quirks) ---

_ERR, _EOS, _CLOSE, _COMMA, _NOT, _DEQ, _EQ, _GT, _ID, _IN, _LT, _NEQ, _NOTIN, _OPEN = range(14)
_TOKENS = {")": _CLOSE, ",": _COMMA, "!": _NOT, "==": _DEQ, "=": _EQ, ">": _GT, "in": _IN}
_TOKENS.update({"<": _LT, "!=": _NEQ, "notin": _NOTIN, "(": _OPEN})
_SPECIAL = frozenset("=!(),><")
_SPACE = frozenset(" \t\r\n")
_BINARY_OPS = "in, notin, =, ==, !=, gt, lt"
_OPERATOR_TOKENS: dict[int, Operator] = {_IN: "in", _NOTIN: "notin", _EQ: "=", _DEQ: "=="}
_OPERATOR_TOKENS.update({_NEQ: "!=", _GT: "gt", _LT: "lt"})


def _lex(s: str) -> list[tuple[int, str]]:
    """Tokenize like selector.go's Lexer: a NUL (or the end) ends a token; an
    identifier is any run of non-special, non-space characters."""
    items: list[tuple[int, str]] = []
    pos, n = 0, len(s)

    def read() -> str:
        nonlocal pos
        if pos < n:
            pos += 1
            return s[pos - 1]
        return "\0"

    while True:
        ch = read()
        while ch in _SPACE:
            ch = read()
        if ch == "\0":
            items.append((_EOS, ""))
            return items
        pos -= 1
        buf: list[str] = []
        if ch in _SPECIAL:
            last: tuple[int, str] | None = None
            while (c := read()) != "\0":
                if c not in _SPECIAL:
                    pos -= 1
                    break
                buf.append(c)
                lit = "".join(buf)
                if lit in _TOKENS:
                    last = (_TOKENS[lit], lit)
                elif last is not None:
                    pos -= 1
                    break
            items.append(last or (_ERR, f"error expected: keyword found '{''.join(buf)}'"))
        else:
            while (c := read()) != "\0":
                if c in _SPECIAL or c in _SPACE:
                    pos -= 1
                    break
                buf.append(c)
            lit = "".join(buf)
            items.append((_TOKENS.get(lit, _ID), lit))


class _Parser:
    def __init__(self, text: str) -> None:
        self.items = _lex(text)
        self.pos = 0

    def peek(self, values: bool = True) -> tuple[int, str]:
        tok, lit = self.items[self.pos]
        return (_ID, lit) if values and tok in (_IN, _NOTIN) else (tok, lit)

    def take(self, values: bool = True) -> tuple[int, str]:
        item = self.peek(values)
        self.pos += 1
        return item

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.peek()
            if tok == _EOS:
                return reqs
            if tok not in (_ID, _NOT):
                raise SelectorError(f"found '{lit}', expected: !, identifier, or 'end of string'")
            try:
                reqs.append(self.requirement())
            except SelectorError as err:
                raise SelectorError(f"unable to parse requirement: {err.message}") from None
            tok, lit = self.take()
            if tok == _EOS:
                return reqs
            if tok != _COMMA:
                raise SelectorError(f"found '{lit}', expected: ',' or 'end of string'")
            tok, lit = self.peek()
            if tok not in (_ID, _NOT):
                raise SelectorError(f"found '{lit}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        tok, lit = self.take()
        negated = tok == _NOT
        if negated:
            tok, lit = self.take()
        if tok != _ID:
            raise SelectorError(f"found '{lit}', expected: identifier")
        if kerrs := key_errors(lit):
            raise SelectorError(_invalid("<nil>", lit, "; ".join(kerrs)))
        key = lit
        if negated:
            return new_requirement(key, "!", ())
        if self.peek()[0] in (_EOS, _COMMA):
            return new_requirement(key, "exists", ())
        tok, lit = self.take(values=False)
        op = _OPERATOR_TOKENS.get(tok)
        if op is None:
            raise SelectorError(f"found '{lit}', expected: {_BINARY_OPS}")
        values = self.value_set() if op in _SET_OPS else self.exact_value()
        return new_requirement(key, op, sorted(values))

    def value_set(self) -> set[str]:
        tok, lit = self.take()
        if tok != _OPEN:
            raise SelectorError(f"found '{lit}' expected: '('")
        tok, lit = self.peek()
        if tok == _CLOSE:
            self.take()
            return {""}
        if tok not in (_ID, _COMMA):
            raise SelectorError(f"found '{lit}', expected: ',', ')' or identifier")
        values = self.identifiers()
        if self.take()[0] != _CLOSE:  # unreachable upstream too; same message
            raise SelectorError(f"found '{lit}', expected: ')'")
        return values

    def identifiers(self) -> set[str]:
        values: set[str] = set()
        while True:
            tok, lit = self.take()
            if tok == _ID:
                values.add(lit)
                tok2, lit2 = self.peek()
                if tok2 == _CLOSE:
                    return values
                if tok2 != _COMMA:
                    raise SelectorError(f"found '{lit2}', expected: ',' or ')'")
            elif tok == _COMMA:
                if not values:
                    values.add("")  # "(,"
                tok2, _ = self.peek()
                if tok2 == _CLOSE:
                    values.add("")  # ",)"
                    return values
                if tok2 == _COMMA:
                    self.take()
                    values.add("")  # ",,"
            else:
                raise SelectorError(f"found '{lit}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        if self.peek()[0] in (_EOS, _COMMA):
            return {""}
        tok, lit = self.take()
        if tok == _ID:
            return {lit}
        raise SelectorError(f"found '{lit}', expected: identifier")


# --- selector ---


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """An AND of requirements, kept sorted by key (stably) like labels.Parse."""

    requirements: tuple[Requirement, ...] = ()
    _matchers: tuple[Matcher, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.requirements, key=lambda r: r.key))
        object.__setattr__(self, "requirements", ordered)
        object.__setattr__(self, "_matchers", tuple(r._match for r in ordered))

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """labels.Parse; raises SelectorError with the apiserver's message."""
        return cls(tuple(_Parser(text).parse()))

    @classmethod
    def everything(cls) -> LabelSelector:
        return _EVERYTHING

    @classmethod
    def from_set(cls, labels: Mapping[str, str]) -> LabelSelector:
        """labels.SelectorFromValidatedSet: `k=v` for every pair, unvalidated."""
        return cls(tuple(Requirement(k, "=", (v,)) for k, v in labels.items()))

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, labels: Mapping[str, str]) -> bool:
        # A plain loop: all() over a generator costs a frame per call on this hot path.
        for match in self._matchers:  # noqa: SIM110
            if not match(labels):
                return False
        return True

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


_EVERYTHING = LabelSelector(())
