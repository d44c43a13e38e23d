"""What `edge-proxy serve` does as a daemon without being told: cache place, log lines."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from edgeproxy import config as cfg
from edgeproxy import logs


def test_cache_dir_is_systemds_state_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/edge-proxy:/var/lib/other")
    assert cfg.default_cache_dir() == Path("/var/lib/edge-proxy")


def test_cache_dir_as_root_is_var_lib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert cfg.default_cache_dir() == Path("/var/lib/edge-proxy")


def test_cache_dir_as_a_user_is_their_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cfg.default_cache_dir() == tmp_path / "edge-proxy"


def _record(msg: str, exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad\nthing")
        except ValueError:
            import sys

            exc_info = sys.exc_info()
    return logging.LogRecord("edgeproxy.x", logging.WARNING, __file__, 1, msg, (), exc_info)


def test_text_lines_are_one_line_even_with_a_traceback() -> None:
    line = logs.TextFormatter().format(_record("two\nlines", exc=True))
    assert "\n" not in line
    assert " WARNING edgeproxy.x: two | lines | Traceback" in line
    assert "ValueError: bad | thing" in line


def test_json_lines_parse_and_carry_the_exception() -> None:
    line = logs.JSONFormatter().format(_record("cut off", exc=True))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["level"] == "warning" and doc["logger"] == "edgeproxy.x"
    assert doc["msg"] == "cut off"
    assert doc["ts"].endswith("Z")
    assert "ValueError" in doc["exc"]
