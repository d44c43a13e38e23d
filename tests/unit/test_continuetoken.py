"""Continue tokens: kube-apiserver's wire format and its error texts."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeproxy.kube.continuetoken import (
    ContinueExpired,
    continue_after,
    decode_continue,
    encode_continue,
    expired_continue,
)
from edgeproxy.kube.status import StatusError


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _token(v: object = "meta.k8s.io/v1", rv: object = 5, start: object = "default/a\x00") -> str:
    return _b64(json.dumps({"v": v, "rv": rv, "start": start}, separators=(",", ":")).encode())


def test_encoding_matches_the_apiserver_byte_for_byte() -> None:
    token = continue_after(10245, "default/pod-1")
    assert "=" not in token
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    assert raw == b'{"v":"meta.k8s.io/v1","rv":10245,"start":"default/pod-1\\u0000"}'
    assert token.startswith("eyJ2IjoibWV0YS5rOHMuaW8vdjEiLCJydiI6")


@pytest.mark.parametrize(
    ("key", "encoded"),
    [
        ("a<b>&c", '"a\\u003cb\\u003e\\u0026c"'),
        ('q"\\', '"q\\"\\\\"'),
        ("\n\r\t\b\f\x01", '"\\n\\r\\t\\b\\f\\u0001"'),
        ("é\u2028\u2029", '"é\\u2028\\u2029"'),
    ],
)
def test_start_key_is_encoded_like_go_encoding_json(key: str, encoded: str) -> None:
    raw = base64.urlsafe_b64decode(encode_continue(7, key) + "===")
    assert raw.decode() == '{"v":"meta.k8s.io/v1","rv":7,"start":' + encoded + "}"


def test_continue_after_starts_just_after_the_last_key() -> None:
    assert decode_continue(continue_after(3, "ns/b")) == (3, "ns/b\x00")
    assert "ns/b\x00" > "ns/b" and "ns/b\x00" < "ns/b-"


_segment = st.text(
    alphabet=st.characters(exclude_characters="/", exclude_categories=["Cs"]), min_size=1
).filter(lambda s: s not in (".", ".."))
_keys = st.lists(_segment, min_size=1, max_size=3).map("/".join)
_rvs = st.integers(min_value=-(2**63), max_value=2**63 - 1).filter(lambda rv: rv != 0)


@given(_rvs, _keys)
def test_round_trip(rv: int, key: str) -> None:
    assert decode_continue(encode_continue(rv, key)) == (rv, key)
    assert decode_continue(continue_after(rv, key)) == (rv, key + "\x00")


@given(_rvs, _keys)
def test_python_json_reads_our_tokens(rv: int, key: str) -> None:
    token = encode_continue(rv, key)
    assert json.loads(base64.urlsafe_b64decode(token + "===")) == {
        "v": "meta.k8s.io/v1",
        "rv": rv,
        "start": key,
    }


def test_decoding_accepts_what_go_accepts() -> None:
    # Go's json matches keys case-insensitively, last one wins, ignores
    # unknown keys and nulls; base64 skips CR/LF.
    raw = b'{"V":"meta.k8s.io/v1","Rv":1,"rv":9,"START":"x","start":null,"rc":3}'
    assert decode_continue(_b64(raw)) == (9, "x")
    token = _token()
    assert decode_continue(token[:5] + "\r\n" + token[5:]) == (5, "default/a\x00")
    assert decode_continue(_token(start="/abs")) == (5, "abs")
    assert decode_continue(_token(rv=-1)) == (-1, "default/a\x00")
    assert decode_continue(_token(start="/")) == (5, "")


PREFIX = "invalid continue token: continue key is not valid: "

INVALID_ROWS = [
    ("abc!", "illegal base64 data at input byte 3"),
    ("a", "illegal base64 data at input byte 0"),
    ("abcde", "illegal base64 data at input byte 4"),
    (_token() + "==", f"illegal base64 data at input byte {len(_token())}"),
    ("ab+c", "illegal base64 data at input byte 2"),
    ("", "unexpected end of JSON input"),
    (_b64(b'{"v":'), "unexpected end of JSON input"),
    (_b64(b'{"v":"x'), "unexpected end of JSON input"),
    (_b64(b"xyz"), "invalid character 'x' looking for beginning of value"),
    (_b64(b"{} x"), "invalid character 'x' after top-level value"),
    (_b64(b'{"v" 1}'), "invalid character '1' after object key"),
    (_b64(b"{'v':1}"), "invalid character '\\'' looking for beginning of object key string"),
    (_b64(b'{"rv":NaN}'), "invalid character 'N' looking for beginning of value"),
    (_b64(b'{"rv":-Infinity}'), "invalid character 'I' in numeric literal"),
    (_b64(b'{"rv":1,}'), "invalid character '}' looking for beginning of object key string"),
    (_b64(b"\xef\xbb\xbf{}"), "invalid character '\u00ef' looking for beginning of value"),
    (_b64(b"[1]"), "json: cannot unmarshal array into Go value of type storage.continueToken"),
    (_b64(b'"s"'), "json: cannot unmarshal string into Go value of type storage.continueToken"),
    (_b64(b"12"), "json: cannot unmarshal number into Go value of type storage.continueToken"),
    (
        _token(rv="5"),
        "json: cannot unmarshal string into Go struct field continueToken.rv of type int64",
    ),
    (
        _token(rv=1.5),
        "json: cannot unmarshal number 1.5 into Go struct field continueToken.rv of type int64",
    ),
    (
        _token(rv=2**63),
        "json: cannot unmarshal number 9223372036854775808 into Go struct field "
        "continueToken.rv of type int64",
    ),
    (
        _token(v=1),
        "json: cannot unmarshal number into Go struct field continueToken.v of type string",
    ),
    (
        _token(start=["a"]),
        "json: cannot unmarshal array into Go struct field continueToken.start of type string",
    ),
    (
        _token(start={"a": 1}),
        "json: cannot unmarshal object into Go struct field continueToken.start of type string",
    ),
    (_b64(b"null"), "server does not recognize this encoded version "),
    (_b64(b"{}"), "server does not recognize this encoded version "),
    (_token(v="meta.k8s.io/v2"), "server does not recognize this encoded version meta.k8s.io/v2"),
    (_token(rv=0), "incorrect encoded start resourceVersion (version meta.k8s.io/v1)"),
    (_token(rv=None), "incorrect encoded start resourceVersion (version meta.k8s.io/v1)"),
    (_token(start=""), "encoded start key empty (version meta.k8s.io/v1)"),
    (_token(start="../key"), "../key"),
    (_token(start="./key"), "./key"),
    (_token(start="./../key"), "./../key"),
    (_token(start="key/../.."), "key/../.."),
    (_token(start="a//b"), "a//b"),
    (_token(start="a/"), "a/"),
    (_token(start="//a"), "//a"),
]


@pytest.mark.parametrize(("token", "reason"), INVALID_ROWS)
def test_invalid_tokens(token: str, reason: str) -> None:
    with pytest.raises(StatusError) as err:
        decode_continue(token)
    assert err.value.to_dict() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": PREFIX + reason,
        "reason": "BadRequest",
        "code": 400,
    }


@given(st.text(max_size=40))
def test_any_text_decodes_or_is_a_bad_request(token: str) -> None:
    try:
        rv, _ = decode_continue(token)
    except StatusError as err:
        assert err.code == 400 and err.message.startswith(PREFIX)
    else:
        assert rv != 0


@given(st.binary(max_size=60))
def test_any_payload_decodes_or_is_a_bad_request(raw: bytes) -> None:
    try:
        decode_continue(_b64(raw))
    except StatusError as err:
        assert err.code == 400 and err.message.startswith(PREFIX)


def test_expired_continue_status() -> None:
    err = expired_continue("default/pod-7\x00")
    assert isinstance(err, ContinueExpired)
    token = err.to_dict()["metadata"]["continue"]
    assert decode_continue(token) == (-1, "default/pod-7\x00")
    assert json.loads(err.body()) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"continue": token},
        "status": "Failure",
        "message": (
            "The provided continue parameter is too old to display a consistent list result. "
            "You can start a new list without the continue parameter, or use the continue "
            "token in this response to retrieve the remainder of the results. Continuing with "
            "the provided token results in an inconsistent list - objects that were created, "
            "modified, or deleted between the time the first chunk was returned and now may "
            "show up in the list."
        ),
        "reason": "Expired",
        "code": 410,
    }
    assert err.body().startswith(b'{"kind":"Status","apiVersion":"v1","metadata":{"continue":')
    assert err.watch_event().startswith(b'{"type":"ERROR","object":{"kind":"Status"')
