"""`edge-proxy status`: what a running proxy holds, read from its admin port.

An operator on a node asks three things: is the cloud link up (and if not,
since when), what is cached and how stale it is, and will clients get
answers. The proxy already says all of it on the admin listener (/readyz and
/debug/cache, server/admin.py); this prints it as a short table, or as JSON
for a script. The exit code answers the last question for a shell: 0 ready,
1 not ready, 2 the admin port cannot be reached (the proxy is not running,
or listens elsewhere).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

READY, NOT_READY, UNREACHABLE = 0, 1, 2
# A proxy that takes longer than this to answer its admin port is as good as
# unreachable for a person waiting at a shell.
TIMEOUT_SECONDS = 5.0


def default_admin_addr() -> str:
    """Where `serve` listens for admin requests unless told otherwise."""
    from edgeproxy.config import ServeConfig

    (field,) = (f for f in dataclasses.fields(ServeConfig) if f.name == "admin_listen")
    return str(field.default)


class AdminUnreachable(Exception):
    """The admin port did not answer (refused, timed out, or not the proxy's)."""


def fetch(admin_addr: str, timeout: float = TIMEOUT_SECONDS) -> dict[str, Any]:
    """Readiness and the cache's state from the admin listener at `admin_addr`."""
    base = admin_addr if "://" in admin_addr else f"http://{admin_addr}"
    base = base.rstrip("/")
    ready, _ = _get(base + "/readyz", timeout)
    code, body = _get(base + "/debug/cache", timeout, accept="application/json")
    if code != 200:
        raise AdminUnreachable(f"{base}/debug/cache answered {code}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise AdminUnreachable(f"{base}/debug/cache is not edge-proxy's (not JSON)") from None
    if not isinstance(doc, dict) or "scopes" not in doc:
        raise AdminUnreachable(f"{base}/debug/cache is not edge-proxy's (no scopes)")
    return summarize(doc, ready == 200)


def _get(url: str, timeout: float, accept: str = "*/*") -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), bytes(resp.read())
    except urllib.error.HTTPError as err:
        with err:
            return int(err.code), bytes(err.read())
    # URLError, refused, timeout; a bad address; a port that does not speak HTTP.
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise AdminUnreachable(f"cannot reach the admin port at {url}: {reason}") from None


def summarize(doc: dict[str, Any], ready: bool) -> dict[str, Any]:
    """The status document (`--output json`): a stable subset of /debug/cache."""
    link = doc.get("link") or {}
    budgets = doc.get("budgets") or {}
    memory, disk = budgets.get("memory") or {}, budgets.get("disk") or {}
    journal = doc.get("journal") or {}
    scopes = [_scope(s) for s in doc.get("scopes") or []]
    return {
        "ready": ready,
        "link": {
            "state": link.get("state", "unknown"),
            "offlineSeconds": link.get("offlineSeconds", 0.0),
            "servers": [
                {"server": s.get("server"), "healthy": s.get("healthy")}
                for s in doc.get("upstream") or []
            ],
        },
        "cache": {
            "scopes": len(scopes),
            "scopesInMemory": sum(1 for s in scopes if s["resident"]),
            "objects": sum(s["objects"] for s in scopes),
            "memoryBytes": memory.get("usedBytes", 0),
            "memoryBudgetBytes": memory.get("budgetBytes"),
            "diskBytes": journal.get("diskBytes", 0),
            "diskBudgetBytes": disk.get("budgetBytes"),
            "journal": journal.get("state", "ok"),
        },
        "scopes": scopes,
    }


def _scope(entry: dict[str, Any]) -> dict[str, Any]:
    """One scope's fields, from its key `group/version/resource|ns=..|l=..|f=..`."""
    gvr, _, rest = str(entry.get("scope", "")).partition("|ns=")
    namespace, _, rest = rest.partition("|l=")
    labels, _, fields = rest.partition("|f=")
    return {
        "resource": gvr,
        "namespace": namespace,
        "labelSelector": labels,
        "fieldSelector": fields,
        "resident": bool(entry.get("resident")),
        "synced": bool(entry.get("synced")),
        "objects": int(entry.get("objects") or 0),
        "secondsSinceSync": entry.get("secondsSinceSync"),
    }


def render(status: dict[str, Any], out: TextIO) -> None:
    """The human form: three lines of facts, then one row per scope."""
    link, cache = status["link"], status["cache"]
    state = link["state"]
    if state == "down":
        state += f" for {_duration(link['offlineSeconds'])}"
    servers = ", ".join(
        f"{s['server']} ({'up' if s['healthy'] else 'down'})" for s in link["servers"]
    )
    out.write(f"ready:  {'yes' if status['ready'] else 'NO'}\n")
    out.write(f"link:   {state}" + (f"  [{servers}]" if servers else "") + "\n")
    out.write(
        f"cache:  {cache['scopes']} scopes ({cache['scopesInMemory']} in memory), "
        f"{cache['objects']} objects, {_size(cache['memoryBytes'])} in memory"
        + (f" of {_size(cache['memoryBudgetBytes'])}" if cache["memoryBudgetBytes"] else "")
        + f", journal {_size(cache['diskBytes'])} on disk"
        + (f" ({cache['journal']})" if cache["journal"] != "ok" else "")
        + "\n"
    )
    if not status["scopes"]:
        return
    header = ("RESOURCE", "NAMESPACE", "SELECTOR", "OBJECTS", "SYNCED")
    rows = [header] + [_row(s) for s in status["scopes"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    out.write("\n")
    for row in rows:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")


def _row(scope: dict[str, Any]) -> tuple[str, str, str, str, str]:
    selector = ",".join(s for s in (scope["labelSelector"], scope["fieldSelector"]) if s)
    since = scope["secondsSinceSync"]
    if since is None:
        synced = "from disk" if scope["synced"] else "listing"
    elif since == 0:
        synced = "live"
    else:
        synced = f"{_duration(since)} ago"
    if not scope["resident"]:
        synced = "on disk only"
    return (
        scope["resource"],
        scope["namespace"] or "(all)",
        selector or "-",
        str(scope["objects"]),
        synced,
    )


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _size(n: float | None) -> str:
    value = float(n or 0)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def run(admin_addr: str, output: str, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        status = fetch(admin_addr)
    except AdminUnreachable as exc:
        err.write(f"edge-proxy status: {exc}\n")
        return UNREACHABLE
    if output == "json":
        json.dump(status, out, indent=2)
        out.write("\n")
    else:
        render(status, out)
    return READY if status["ready"] else NOT_READY
