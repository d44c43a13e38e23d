"""The benchmark report's arithmetic and tables: pure, no processes, no matplotlib."""

from __future__ import annotations

import math

import pytest

from edgeproxy.bench import report, wrk
from edgeproxy.bench.runner import aggregate, fmt, fmt_spread, percentile, spread

META = {
    "date": "2026-01-02 03:04 UTC",
    "against": "sim",
    "runs": 3,
    "wall_s": 300.0,
    "machine": {"nproc": 2, "cpu": "Test CPU", "python": "3.11.7"},
}


def test_spread_is_median_min_max() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3}
    assert spread([4.0, 1.0, 2.0, 3.0])["median"] == 2.5


def test_spread_ignores_nan_and_rejects_nothing() -> None:
    assert spread([1.0, math.nan, 5.0]) == {"median": 3.0, "min": 1.0, "max": 5.0, "n": 2}
    with pytest.raises(ValueError):
        spread([math.nan])


def test_aggregate_keeps_order_and_drops_figures_never_measured() -> None:
    runs = [
        {"b (ms)": 2.0, "a (MB)": 10.0, "never": math.nan},
        {"b (ms)": 4.0, "a (MB)": 30.0, "never": math.nan},
        {"b (ms)": 3.0, "a (MB)": 20.0, "late": 7.0},
    ]
    out = aggregate(runs)
    assert list(out) == ["b (ms)", "a (MB)", "late"]
    assert out["b (ms)"] == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
    assert out["a (MB)"]["median"] == 20.0
    assert out["late"]["n"] == 1


def test_percentile_by_nearest_rank() -> None:
    samples = [float(x) for x in range(1, 101)]
    assert percentile(samples, 0.5) == 50.0
    assert percentile(samples, 0.99) == 99.0
    assert percentile(samples, 1.0) == 100.0
    assert math.isnan(percentile([], 0.5))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (12345.6, "12,346"),
        (123.4, "123"),
        (12.34, "12.3"),
        (1.234, "1.23"),
        (0.01234, "0.0123"),
        (0.0, "0.00"),
        (math.nan, "-"),
    ],
)
def test_fmt_three_significant_figures(value: float, text: str) -> None:
    assert fmt(value) == text


def test_fmt_spread_shows_min_and_max_unless_equal() -> None:
    assert fmt_spread({"median": 2.0, "min": 1.5, "max": 3.25}) == "2.00 [1.50..3.25]"
    assert fmt_spread({"median": 4.0, "min": 4.0, "max": 4.0}) == "4.00"


def small_results() -> dict[str, dict[str, object]]:
    runs = {
        "direct": [{"list p50 (ms)": 1.0}, {"list p50 (ms)": 2.0}, {"list p50 (ms)": 3.0}],
        "strict": [
            {"list p50 (ms)": 2.0, "peak RSS (MB)": 40.0},
            {"list p50 (ms)": 2.0, "peak RSS (MB)": 50.0},
            {"list p50 (ms)": 2.0, "peak RSS (MB)": 45.0},
        ],
    }
    return {
        "challenge": {
            "title": "the challenge",
            "figures": ["list p50 (ms)", "peak RSS (MB)"],
            "targets": {t: aggregate(r) for t, r in runs.items()},
            "skipped": {
                "nginx": "nginx is not installed; install it with `apt-get install -y nginx-light`"
            },
            "notes": ["a note"],
            "failures": [],
        }
    }


def test_markdown_table_from_a_small_results_dict() -> None:
    text = report.markdown(META, small_results())
    assert text.splitlines()[0] == (
        "2026-01-02 03:04 UTC, 2 x Test CPU, Python 3.11.7, against sim; each cell is the"
        " median [min..max] of 3 runs; wall time 5.0 min."
    )
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert table == [
        "| figure | direct | nginx | strict |",
        "|---|---:|---:|---:|",
        "| list p50 (ms) | 2.00 [1.00..3.00] | skipped | 2.00 |",
        "| peak RSS (MB) | - | skipped | 45.0 [40.0..50.0] |",
    ]
    assert (
        "- skipped nginx: nginx is not installed; install it with `apt-get install -y nginx-light`"
        in text
    )
    assert "- a note" in text


def test_markdown_marks_failures() -> None:
    results = small_results()
    results["challenge"]["failures"] = ["strict did not pass"]
    assert "- **FAILED** strict did not pass" in report.markdown(META, results)


def test_wrk_output_parsed() -> None:
    out = """Running 2s test @ http://127.0.0.1:1/x
  2 threads and 8 connections
  Latency Distribution
     50%  790.00us
     99%    2.10ms
  19500 requests in 2.00s, 21.50GB read
Requests/sec:   9750.00
"""
    parsed = wrk.parse(out)
    assert parsed["requests"] == 19500
    assert parsed["requests_per_s"] == pytest.approx(9750.0)
    assert parsed["latency_p50_s"] == pytest.approx(790e-6)
    assert parsed["latency_p99_s"] == pytest.approx(2.1e-3)
    assert parsed["errors"] == 0
