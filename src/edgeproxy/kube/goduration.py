"""Go's time.Duration text form, which metav1.Duration uses in JSON.

The protobuf form of a metav1.Duration is its nanoseconds; the JSON form is
`time.Duration.String()` ("1h0m0s", "1.5s", "300ms"). The codec converts
between the two exactly as Go does, so an object round-trips unchanged.
"""

from __future__ import annotations

import re
from typing import Final

_UNITS: Final[dict[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "μs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_PART: Final = re.compile(r"(\d*\.?\d*)(ns|us|µs|μs|ms|s|m|h)")


def _fraction(value: int, precision: int) -> str:
    """Digits of value / 10**precision with Go's trailing-zero trimming."""
    whole, frac = divmod(value, 10**precision)
    digits = f"{frac:0{precision}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def format_duration(nanos: int) -> str:
    """time.Duration(nanos).String()."""
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    n = abs(nanos)
    if n < 1_000_000_000:
        if n < 1_000:
            return f"{sign}{n}ns"
        if n < 1_000_000:
            return f"{sign}{_fraction(n, 3)}µs"
        return f"{sign}{_fraction(n, 6)}ms"
    hours, rest = divmod(n, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    seconds = _fraction(rest, 9) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def parse_duration(text: str) -> int:
    """time.ParseDuration(text) in nanoseconds; ValueError if it is not one."""
    body = text.lstrip("+-")
    negative = text.startswith("-")
    if body == "0":
        return 0
    total = 0
    pos = 0
    while pos < len(body):
        match = _PART.match(body, pos)
        if not match or match.group(1) in ("", "."):
            raise ValueError(f"invalid duration {text!r}")
        number, unit = match.groups()
        whole, _, frac = number.partition(".")
        scale = _UNITS[unit]
        total += int(whole or "0") * scale
        if frac:
            total += int(frac) * scale // 10 ** len(frac)
        pos = match.end()
    if not body:
        raise ValueError(f"invalid duration {text!r}")
    return -total if negative else total


__all__ = ["format_duration", "parse_duration"]
