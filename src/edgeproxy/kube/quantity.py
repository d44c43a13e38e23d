"""Byte counts written as Kubernetes quantities (`512Mi`, `1Gi`, `500M`).

Operators write sizes the way resource requests and limits are written
(apimachinery's resource.Quantity): a number with an optional binary (Ki,
Mi, Gi, ...: powers of 1024) or decimal (k, M, G, ...: powers of 1000)
suffix. Only what a byte count needs is accepted: no exponent form (`1e9`),
no negative values, no fraction of a byte.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

# Two-letter suffixes first, so `Mi` is not read as `M` followed by a stray `i`.
_SUFFIXES = (
    ("Ki", 1024),
    ("Mi", 1024**2),
    ("Gi", 1024**3),
    ("Ti", 1024**4),
    ("Pi", 1024**5),
    ("Ei", 1024**6),
    ("k", 1000),
    ("M", 1000**2),
    ("G", 1000**3),
    ("T", 1000**4),
    ("P", 1000**5),
    ("E", 1000**6),
)


def parse_bytes(value: str | int) -> int:
    """`1073741824`, `512Mi`, `1Gi`, `1.5Gi`, `500M` -> bytes; ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("must be a byte count")
    if isinstance(value, int):
        number = Decimal(value)
    else:
        text = value.strip()
        factor = 1
        for suffix, size in _SUFFIXES:
            if text.endswith(suffix):
                text, factor = text[: -len(suffix)], size
                break
        if not text or not text.replace(".", "", 1).isdigit():
            raise ValueError("must be a byte count such as 1073741824, 512Mi, 1Gi or 500M")
        try:
            number = Decimal(text) * factor
        except InvalidOperation:
            raise ValueError("must be a byte count such as 512Mi") from None
    if number < 0:
        raise ValueError("must not be negative")
    if number != number.to_integral_value():
        raise ValueError("must be a whole number of bytes")
    return int(number)
