"""metav1.Duration's JSON text round-trips through nanoseconds as Go writes it."""

from __future__ import annotations

import pytest

from edgeproxy.kube.goduration import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("0s", 0),
        ("1h0m0s", 3_600_000_000_000),
        ("1.5s", 1_500_000_000),
        ("300ms", 300_000_000),
        ("1µs", 1_000),
        ("15ns", 15),
        ("2m30.25s", 150_250_000_000),
        ("-5s", -5_000_000_000),
    ],
)
def test_go_duration_text(text: str, nanos: int) -> None:
    assert parse_duration(text) == nanos
    assert format_duration(nanos) == text


def test_other_spellings_parse() -> None:
    assert parse_duration("90m") == 5_400_000_000_000
    with pytest.raises(ValueError):
        parse_duration("soon")
