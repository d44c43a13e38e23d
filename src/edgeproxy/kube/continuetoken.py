"""Continue tokens in kube-apiserver's own format.

A client may page a list through the proxy and finish it against the real
apiserver, or the other way round, so tokens must be interchangeable with the
apiserver's: base64url without padding of
`{"v":"meta.k8s.io/v1","rv":<int64>,"start":"<key>"}` (apiserver
pkg/storage/continue.go). `start` is the storage key relative to the list's
key prefix at which the next page begins; the apiserver uses the last
returned key plus "\\x00", the smallest key after it (etcd3 store GetList).
For a list in one namespace the prefix includes the namespace, so keys are
`<name>`; for a cluster-wide list of a namespaced resource they are
`<namespace>/<name>`; for cluster-scoped resources `<name>`.

Errors reach the client as 400 "invalid continue token: <reason>" (storage
ValidateListOptions) and, for a compacted snapshot, as a 410 whose Status
carries a fresh token with rv -1 (etcd3 handleCompactedErrorForPaging).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from edgeproxy.kube.status import StatusError, bad_request

TOKEN_VERSION = "meta.k8s.io/v1"
# rv -1 asks to continue from the most recent state (the 410 hand-out).
LATEST_RV = -1

_INVALID = "continue key is not valid"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, "
    "modified, or deleted between the time the first chunk was returned and now may "
    "show up in the list."
)


def encode_continue(rv: int, start_key: str) -> str:
    """The token for a page that starts at `start_key` in the snapshot `rv`."""
    body = f'{{"v":"{TOKEN_VERSION}","rv":{rv},"start":{_go_json_string(start_key)}}}'
    return base64.urlsafe_b64encode(body.encode()).rstrip(b"=").decode("ascii")


def continue_after(rv: int, last_key: str) -> str:
    """The token for the page after the one whose last item has `last_key`."""
    return encode_continue(rv, last_key + "\x00")


def decode_continue(token: str) -> tuple[int, str]:
    """(rv, start_key) of a token; 400 BadRequest as the apiserver words it.

    rv is non-zero; -1 means "continue from the most recent state".
    """
    try:
        return _decode(token)
    except _InvalidToken as err:
        raise bad_request(f"invalid continue token: {err}") from None


class ContinueExpired(StatusError):
    """410 Expired for a continue token whose snapshot is compacted.

    The Status carries `metadata.continue`: a token for the same start key at
    rv -1, with which the client may finish the list inconsistently.
    """

    def __init__(self, start_key: str) -> None:
        super().__init__(410, "Expired", INCONSISTENT_CONTINUE)
        self.continue_token = encode_continue(LATEST_RV, start_key)

    def to_dict(self) -> dict[str, Any]:
        status = super().to_dict()
        status["metadata"] = {"continue": self.continue_token}
        return status


def expired_continue(start_key: str) -> StatusError:
    """The 410 for a compacted continue token; `start_key` as decoded from it."""
    return ContinueExpired(start_key)


class _InvalidToken(Exception):
    pass


def _decode(token: str) -> tuple[int, str]:
    data = _go_raw_url_b64decode(token)
    version, rv, start = _go_unmarshal_token(data)
    if version != TOKEN_VERSION:
        raise _InvalidToken(f"{_INVALID}: server does not recognize this encoded version {version}")
    if rv == 0:
        raise _InvalidToken(
            f"{_INVALID}: incorrect encoded start resourceVersion (version {TOKEN_VERSION})"
        )
    if not start:
        raise _InvalidToken(f"{_INVALID}: encoded start key empty (version {TOKEN_VERSION})")
    # Path traversal defence: the key must already be clean, so it cannot
    # range over anything outside the list's key prefix.
    key = start if start.startswith("/") else "/" + start
    if _go_path_clean(key) != key:
        raise _InvalidToken(f"{_INVALID}: {start}")
    return rv, key[1:]


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_B64_VALUES = {c: i for i, c in enumerate(_B64_ALPHABET)}


def _go_raw_url_b64decode(token: str) -> bytes:
    """base64.RawURLEncoding.DecodeString, including Go's error offsets.

    Go skips CR and LF, ignores non-zero trailing bits, and rejects "=".
    """
    src = token.encode("utf-8", "surrogatepass")
    out = bytearray()
    si = 0
    while True:
        quantum: list[int] = []
        while len(quantum) < 4:
            if si == len(src):
                if not quantum:
                    return bytes(out)
                if len(quantum) == 1:
                    raise _InvalidToken(f"{_INVALID}: illegal base64 data at input byte {si - 1}")
                break
            byte = src[si]
            si += 1
            if byte in _B64_VALUES:
                quantum.append(_B64_VALUES[byte])
            elif byte not in (0x0A, 0x0D):
                raise _InvalidToken(f"{_INVALID}: illegal base64 data at input byte {si - 1}")
        value = 0
        for i in range(4):
            value = value << 6 | (quantum[i] if i < len(quantum) else 0)
        out += value.to_bytes(3, "big")[: len(quantum) - 1]
        if len(quantum) < 4:
            return bytes(out)


class _Number(str):
    """A JSON number kept as its literal text, as Go's decoder reports it."""


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs, duplicates and order kept."""


class _Constant(ValueError):
    """NaN/Infinity, which Python's json accepts and Go's rejects."""


def _reject_constant(name: str) -> Any:
    raise _Constant(name)


def _go_unmarshal_token(data: bytes) -> tuple[str, int, str]:
    """json.Unmarshal into the apiserver's continueToken struct.

    Keys match case-insensitively and the last one wins; null leaves a field
    unset; the first type mismatch is reported after the whole value decoded.
    """
    text = data.decode("utf-8", "replace")
    try:
        value = json.loads(
            text,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_reject_constant,
            object_pairs_hook=_Object,
        )
    except (json.JSONDecodeError, ValueError) as err:
        raise _InvalidToken(f"{_INVALID}: {_go_syntax_error(text, err)}") from None
    if value is None:
        return "", 0, ""
    if not isinstance(value, _Object):
        raise _InvalidToken(
            f"{_INVALID}: json: cannot unmarshal {_json_kind(value)} "
            "into Go value of type storage.continueToken"
        )
    fields: dict[str, Any] = {"v": "", "rv": 0, "start": ""}
    first_error = ""
    for key, item in value:
        name = key.casefold()
        if name not in fields or item is None:
            continue
        if name == "rv":
            if _is_int64(item):
                fields["rv"] = int(item)
                continue
            kind = f"number {item}" if isinstance(item, _Number) else _json_kind(item)
            first_error = first_error or _type_error(kind, "rv", "int64")
        elif isinstance(item, str) and not isinstance(item, _Number):
            fields[name] = item
        else:
            first_error = first_error or _type_error(_json_kind(item), name, "string")
    if first_error:
        raise _InvalidToken(f"{_INVALID}: {first_error}")
    return fields["v"], fields["rv"], fields["start"]


def _is_int64(item: Any) -> bool:
    if not isinstance(item, _Number) or not re.fullmatch(r"-?[0-9]+", item):
        return False
    return _INT64_MIN <= int(item) <= _INT64_MAX


def _type_error(kind: str, field: str, go_type: str) -> str:
    where = f"Go struct field continueToken.{field}"
    return f"json: cannot unmarshal {kind} into {where} of type {go_type}"


def _json_kind(value: Any) -> str:
    if isinstance(value, _Number):
        return "number"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _Object):
        return "object"
    return "array"


_GO_CONTEXTS = {
    "Expecting value": "looking for beginning of value",
    "Unexpected UTF-8 BOM": "looking for beginning of value",
    "Extra data": "after top-level value",
    "Expecting ':' delimiter": "after object key",
    "Expecting property name": "looking for beginning of object key string",
    "Invalid control character at": "in string literal",
    "Invalid \\escape": "in string escape code",
}


def _go_syntax_error(text: str, err: Exception) -> str:
    """Go's json.SyntaxError text for the common cases; approximate otherwise."""
    if isinstance(err, _Constant):
        # Go stops at the constant's first letter ("-Infinity": at the "I").
        where = (
            "in numeric literal" if str(err).startswith("-") else _GO_CONTEXTS["Expecting value"]
        )
        return f"invalid character '{str(err).lstrip('-')[0]}' {where}"
    if not isinstance(err, json.JSONDecodeError) or err.pos >= len(text):
        return "unexpected end of JSON input"
    if err.msg.startswith("Unterminated string"):
        return "unexpected end of JSON input"
    context = next(
        (ctx for msg, ctx in _GO_CONTEXTS.items() if err.msg.startswith(msg)),
        "after object key:value pair" if err.msg.startswith("Expecting ','") else "",
    )
    first_byte = text[err.pos].encode("utf-8", "surrogatepass")[0]
    return f"invalid character {_go_quote_char(chr(first_byte))} {context}".rstrip()


def _go_quote_char(ch: str) -> str:
    """encoding/json's quoteChar: a byte in single quotes, Go-escaped."""
    if ch == "'":
        return "'\\''"
    if ch == '"':
        return "'\"'"
    if ch.isprintable():
        return f"'{ch}'"
    escapes = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    escapes["\v"] = "\\v"
    if ch in escapes:
        return f"'{escapes[ch]}'"
    code = ord(ch)
    return f"'\\x{code:02x}'" if code < 0x80 else f"'\\u{code:04x}'"


def _go_json_string(value: str) -> str:
    """encoding/json's string encoding: HTML-safe, \\b/\\f short forms (Go 1.22+)."""
    out = ['"']
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t\b\f":
            out.append(json.dumps(ch)[1:-1])
        elif code < 0x20 or ch in "<>&" or code in (0x2028, 0x2029):
            out.append(f"\\u{code:04x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_path_clean(rooted: str) -> str:
    """path.Clean for a path starting with "/"."""
    stack: list[str] = []
    for element in rooted.split("/"):
        if element in ("", "."):
            continue
        if element == "..":
            if stack:
                stack.pop()
            continue
        stack.append(element)
    return "/" + "/".join(stack)
