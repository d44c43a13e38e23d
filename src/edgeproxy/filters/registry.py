"""Filter chains from configuration: names, per-filter options, clear errors.

The config file's `filters` is a list; each entry is a filter name or a
mapping with `name` plus optional `components`, `resources`, `verbs` (which
requests it applies to, replacing the filter's defaults) and the filter's own
options (`prefixes` for drop-by-name-prefix). `--filters a,b` names the
filters with their defaults and replaces the file's list. An unknown name or
a bad option is a `ConfigError` naming the entry, raised before anything
starts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from edgeproxy.errors import ConfigError
from edgeproxy.filters.base import Applies, Filter, FilterSet
from edgeproxy.filters.dropprefix import DropNamePrefix
from edgeproxy.filters.inclusterconfig import InClusterConfig
from edgeproxy.filters.services import (
    DiscardCloudService,
    ForwardKubeSvcTraffic,
    MasterService,
    NodePortIsolation,
)
from edgeproxy.filters.topology import ServiceTopology

# name -> does it need --master-service-addr
_KNOWN: Mapping[str, bool] = {
    "drop-by-name-prefix": False,
    "servicetopology": False,
    "masterservice": True,
    "discardcloudservice": False,
    "nodeportisolation": False,
    "inclusterconfig": False,
    "forwardkubesvctraffic": True,
}
_APPLIES_KEYS = ("components", "resources", "verbs")
_VERBS = frozenset({"get", "list", "watch"})


def known_names() -> list[str]:
    return sorted(_KNOWN)


def _strings(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: must be a list of non-empty strings (got {value!r})")
    return list(value)


def build_filters(
    entries: Sequence[Any],
    *,
    master_service_addr: tuple[str, int] | None = None,
    drop_name_prefixes: Sequence[str] = (),
) -> FilterSet:
    """The configured filters, in order; `drop_name_prefixes` adds drop-by-name-prefix."""
    filters: list[Filter] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"filters[{index}]"
        name: Any
        if isinstance(entry, str):
            name, options = entry.strip(), {}
        elif isinstance(entry, Mapping):
            name, options = entry.get("name"), {k: v for k, v in entry.items() if k != "name"}
        else:
            raise ConfigError(f"{where}: must be a filter name or a mapping with a name")
        if not isinstance(name, str) or name not in _KNOWN:
            raise ConfigError(
                f"{where}: unknown filter {name!r} (known: {', '.join(known_names())})"
            )
        where = f"{where} ({name})"
        if name in seen:
            raise ConfigError(f"{where}: listed twice")
        seen.add(name)
        if _KNOWN[name] and master_service_addr is None:
            raise ConfigError(
                f"{where}: needs --master-service-addr (masterServiceAddr), "
                "the address clients should reach the proxy's apiserver at"
            )
        applies = _applies(options, where)
        filters.append(_make(name, options, applies, master_service_addr, where))
    if drop_name_prefixes and "drop-by-name-prefix" not in seen:
        filters.insert(0, DropNamePrefix(drop_name_prefixes))
    return FilterSet(filters)


def _applies(options: dict[str, Any], where: str) -> Applies | None:
    given = {k: _strings(options.pop(k), f"{where}: {k}") for k in _APPLIES_KEYS if k in options}
    if not given:
        return None
    bad = set(given.get("verbs", ())) - _VERBS
    if bad:
        raise ConfigError(
            f"{where}: verbs: filters apply to get, list and watch (got {sorted(bad)})"
        )
    return Applies.of(
        [c.lower() for c in given.get("components", ())],
        given.get("resources", ()),
        given.get("verbs", sorted(_VERBS)),
    )


def _make(
    name: str,
    options: dict[str, Any],
    applies: Applies | None,
    master: tuple[str, int] | None,
    where: str,
) -> Filter:
    prefixes: list[str] = []
    if name == "drop-by-name-prefix":
        prefixes = _strings(options.pop("prefixes", None), f"{where}: prefixes")
    if options:
        raise ConfigError(f"{where}: unknown option(s) {sorted(options)}")
    makers: dict[str, Callable[[], Filter]] = {
        "drop-by-name-prefix": lambda: DropNamePrefix(prefixes, applies=applies),
        "servicetopology": lambda: ServiceTopology(applies=applies),
        "discardcloudservice": lambda: DiscardCloudService(applies=applies),
        "nodeportisolation": lambda: NodePortIsolation(applies=applies),
        "inclusterconfig": lambda: InClusterConfig(applies=applies),
    }
    if master is not None:
        host, port = master
        makers["masterservice"] = lambda: MasterService(host, port, applies=applies)
        makers["forwardkubesvctraffic"] = lambda: ForwardKubeSvcTraffic(host, port, applies=applies)
    return makers[name]()
