"""Log lines an operator can grep and a collector can parse: one event, one line.

A daemon's log ends up in journald or a container runtime's log file, read
line by line. So every record is one line: a message or traceback that
spans several lines is folded (newlines become ` | `), and
`--logging-format=json` (the name Kubernetes components use) writes one
JSON object per line, with the time, level, logger and message, and the
exception when there is one.
"""

from __future__ import annotations

import datetime
import json
import logging
import sys
from typing import Any

FORMATS = ("text", "json")


def _fold(text: str) -> str:
    return " | ".join(part for part in text.splitlines() if part.strip())


def _timestamp(record: logging.LogRecord) -> str:
    when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class TextFormatter(logging.Formatter):
    """`2026-12-05T08:59:29.790Z INFO edgeproxy.cache.manager: message`, one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            line += " | " + self.formatException(record.exc_info)
        return _fold(line)


class JSONFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, ensure_ascii=False)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever `sys.stderr` is when a record is emitted, not at setup.

    Whoever swaps stderr (a test harness capturing output, an embedding
    process) and closes the old one does not leave logging writing to a
    closed file.
    """

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup(verbosity: int, fmt: str = "text") -> None:
    """Root logging to stderr: INFO by default, -v WARNING..DEBUG as before, in `fmt`."""
    level = logging.WARNING - 10 * min(verbosity, 2) if verbosity else logging.INFO
    handler = StderrHandler()
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
