"""One settings tree for `edge-proxy serve`, read from a YAML file and flags.

Every flag has a config-file key (camelCase, as Kubernetes component configs
spell them); flags win over the file. A bad value anywhere is a
`ConfigError` naming the flag or key, raised before anything starts.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NewType

import yaml

from edgeproxy.cache import budget
from edgeproxy.errors import ConfigError
from edgeproxy.filters.base import FilterSet
from edgeproxy.filters.registry import build_filters
from edgeproxy.kube.quantity import parse_bytes

# A size in bytes: an integer or a Kubernetes quantity (`512Mi`, `1Gi`, `500M`).
ByteSize = NewType("ByteSize", int)


# Where a daemon run as root keeps its cache: state that must survive a reboot,
# not a per-user cache a cleaner may empty (FHS /var/lib).
SYSTEM_CACHE_DIR = Path("/var/lib/edge-proxy")


def default_cache_dir() -> Path:
    """systemd's StateDirectory=, else /var/lib/edge-proxy as root, else the user's cache."""
    state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state)
    if os.geteuid() == 0:
        return SYSTEM_CACHE_DIR
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-proxy"


@dataclass(frozen=True, slots=True)
class ServeConfig:
    server_addrs: tuple[str, ...] = ()
    kubeconfig: Path | None = None
    context: str | None = None
    ca_file: Path | None = None
    token_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None
    insecure_skip_tls_verify: bool = False
    # Loopback only by default: clients on the node, never the network.
    listen: str = "127.0.0.1:10261"
    admin_listen: str = "127.0.0.1:10267"
    cache_dir: Path = field(default_factory=default_cache_dir)
    # This node's name, for filters that read the local Node (default: the
    # host name, lower-cased, as kubelet defaults --hostname-override).
    node_name: str = ""
    drop_name_prefixes: tuple[str, ...] = ()
    # Filter chain entries (filters/registry.py): names or {name, components, ...}.
    filters: tuple[Any, ...] = ()
    # The Node label naming a node's pool (OpenYurt's; SuperEdge users set theirs).
    pool_label: str = "apps.openyurt.io/nodepool"
    # HOST:PORT clients in pods reach this proxy's apiserver at (masterservice,
    # forwardkubesvctraffic).
    master_service_addr: str = ""
    # strict: resourceVersion="" lists go upstream; cache-first: served from a synced reflector.
    consistency: str = "strict"
    cache_first_resources: tuple[str, ...] = ()
    # Disk budget of the journal and memory budget of the cache; least recently
    # used idle scopes are evicted past them (cache/budget.py: why these defaults).
    max_cache_bytes: ByteSize = ByteSize(budget.DEFAULT_DISK_BYTES)
    max_memory_cache_bytes: ByteSize = ByteSize(budget.DEFAULT_MEMORY_BYTES)
    # What one client watch, and all of them together, may have queued before
    # the slowest is disconnected (it re-watches from its last RV).
    max_watcher_queue_bytes: ByteSize = ByteSize(budget.DEFAULT_WATCHER_BYTES)
    # Protobuf forms of cached objects for clients that prefer protobuf (protoforms.py).
    max_protobuf_cache_bytes: ByteSize = ByteSize(32 * 1024 * 1024)
    serve_protobuf: bool = True
    max_watcher_queues_total_bytes: ByteSize = ByteSize(budget.DEFAULT_WATCHERS_BYTES)
    # Client connections open at once (server/connections.py; lowered to fit the
    # open-file limit). A node's components use tens; 4,096 leaves ample room
    # and bounds what a local process can make the proxy hold.
    max_connections: int = 4096
    # Seconds a client connection has to send a complete request head (Go's
    # ReadHeaderTimeout; server/connections.py says why 10).
    request_header_timeout: float = 10.0
    upstream_strategy: str = "failover"
    # Reflectors sync with watch-list requests, which kube-apiserver gzips
    # (cache/watchlist.py); false: list, then watch (uncompressed).
    upstream_watch_list: bool = True
    # Seconds between /readyz probes; black-hole detection takes about 2 probe timeouts.
    probe_interval: float = 0.5
    # Reads wait this long for upstream before answering from the cache when the
    # link is in doubt.
    fallback_after: float = 1.0
    bookmark_interval: float = 60.0
    # The HTTPS listener for pods (docs/identity.md): empty means none. Its
    # serving certificate and key are re-read when the files change.
    secure_listen: str = ""
    tls_cert_file: Path | None = None
    tls_private_key_file: Path | None = None
    # Whether a request without credentials on the secure listener is served
    # with the proxy's own identity (true) or refused with a 401 (false).
    secure_anonymous_auth: bool = False
    # Without tlsCertFile the serving certificate comes from the cluster (a CSR)
    # and is renewed at 80% of its life, or when less than this many seconds
    # are left if that comes first (0: the 80% rule only).
    serving_cert_renew_before: float = 0.0


# config-file key -> (attribute, converter name)
_KEYS: Mapping[str, str] = {
    "serverAddr": "server_addrs",
    "kubeconfig": "kubeconfig",
    "context": "context",
    "caFile": "ca_file",
    "tokenFile": "token_file",
    "clientCert": "client_cert",
    "clientKey": "client_key",
    "insecureSkipTLSVerify": "insecure_skip_tls_verify",
    "listen": "listen",
    "adminListen": "admin_listen",
    "cacheDir": "cache_dir",
    "nodeName": "node_name",
    "dropNamePrefix": "drop_name_prefixes",
    "filters": "filters",
    "poolLabel": "pool_label",
    "masterServiceAddr": "master_service_addr",
    "consistency": "consistency",
    "cacheFirstResources": "cache_first_resources",
    "maxCacheBytes": "max_cache_bytes",
    "maxMemoryCacheBytes": "max_memory_cache_bytes",
    "maxWatcherQueueBytes": "max_watcher_queue_bytes",
    "maxProtobufCacheBytes": "max_protobuf_cache_bytes",
    "serveProtobuf": "serve_protobuf",
    "maxWatcherQueuesTotalBytes": "max_watcher_queues_total_bytes",
    "maxConnections": "max_connections",
    "requestHeaderTimeout": "request_header_timeout",
    "upstreamStrategy": "upstream_strategy",
    "upstreamWatchList": "upstream_watch_list",
    "probeInterval": "probe_interval",
    "fallbackAfter": "fallback_after",
    "bookmarkInterval": "bookmark_interval",
    "secureListen": "secure_listen",
    "tlsCertFile": "tls_cert_file",
    "tlsPrivateKeyFile": "tls_private_key_file",
    "secureAnonymousAuth": "secure_anonymous_auth",
    "servingCertRenewBefore": "serving_cert_renew_before",
}
_FLAG_OF = {
    attr: "--" + "".join("-" + c.lower() if c.isupper() else c for c in key).replace("t-l-s", "tls")
    for key, attr in _KEYS.items()
}


def convert(attr: str, value: Any, where: str) -> Any:
    kind = {f.name: f.type for f in fields(ServeConfig)}[attr]
    try:
        if kind == "tuple[Any, ...]":  # filter entries: checked by filters.registry
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list):
                raise ValueError("must be a list of filter names or {name: ...} mappings")
            return tuple(value)
        if kind in ("tuple[str, ...]",):
            if isinstance(value, str):
                value = [v for v in value.split(",") if v]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("must be a list of strings")
            return tuple(value)
        if kind in ("Path | None", "Path"):
            if not isinstance(value, str) or not value:
                raise ValueError("must be a path")
            return Path(value).expanduser()
        if kind == "bool":
            if not isinstance(value, bool):
                raise ValueError("must be true or false")
            return value
        if kind == "ByteSize":
            try:
                size = parse_bytes(value) if isinstance(value, str | int) else 0
            except ValueError:
                size = 0
            if size <= 0:
                raise ValueError("must be a positive integer or quantity such as 512Mi, 1Gi, 500M")
            return ByteSize(size)
        if kind == "int":
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError("must be a positive integer")
            return value
        if kind == "float":
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError("must be a positive number")
            return float(value)
        if kind in ("str", "str | None"):
            if not isinstance(value, str):
                raise ValueError("must be a string")
            return value
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc} (got {value!r})") from None
    raise ConfigError(f"{where}: unsupported setting type {kind}")


def load_file(path: Path) -> dict[str, Any]:
    """The config file's settings as attribute -> value."""
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path}: not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path}: must be a mapping of settings")
    out: dict[str, Any] = {}
    for key, value in doc.items():
        attr = _KEYS.get(str(key))
        if attr is None:
            known = ", ".join(sorted(_KEYS))
            raise ConfigError(f"config file {path}: unknown setting {key!r} (known: {known})")
        out[attr] = convert(attr, value, f"config file {path}: {key}")
    return out


def build(file_settings: Mapping[str, Any], flag_settings: Mapping[str, Any]) -> ServeConfig:
    """File settings overlaid with flags (flags already converted by the CLI), then validated."""
    config = replace(ServeConfig(), **{**file_settings, **flag_settings})
    validate(config)
    return config


def flag_name(attr: str) -> str:
    return _FLAG_OF.get(attr, attr)


def validate(config: ServeConfig) -> None:
    if bool(config.server_addrs) == bool(config.kubeconfig):
        raise ConfigError(
            "exactly one of --server-addr (serverAddr) and --kubeconfig (kubeconfig) is required"
        )
    if config.consistency not in ("strict", "cache-first"):
        raise ConfigError(
            f"--consistency (consistency): must be strict or cache-first (got {config.consistency!r})"
        )
    if config.upstream_strategy not in ("failover", "round-robin"):
        raise ConfigError(
            f"--upstream-strategy (upstreamStrategy): must be failover or round-robin (got {config.upstream_strategy!r})"
        )
    for prefix in config.drop_name_prefixes:
        if not prefix:
            raise ConfigError(
                "--drop-name-prefix (dropNamePrefix): an empty prefix would drop everything"
            )
    for attr in ("listen", "admin_listen"):
        value = getattr(config, attr)
        _, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"{flag_name(attr)}: {value!r} is not HOST:PORT")
    if config.secure_listen:
        _, sep, port = config.secure_listen.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(f"--secure-listen: {config.secure_listen!r} is not HOST:PORT")
        if (config.tls_cert_file is None) != (config.tls_private_key_file is None):
            raise ConfigError(
                "--tls-cert-file (tlsCertFile) and --tls-private-key-file (tlsPrivateKeyFile) "
                "go together (without both, the cluster issues the certificate through a CSR)"
            )
    if not config.pool_label:
        raise ConfigError("--pool-label (poolLabel): must not be empty")
    filter_set(config)  # raises ConfigError naming a bad entry


def master_service_addr(config: ServeConfig) -> tuple[str, int] | None:
    value = config.master_service_addr
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigError(f"--master-service-addr (masterServiceAddr): {value!r} is not HOST:PORT")
    return host, int(port)


def filter_set(config: ServeConfig) -> FilterSet:
    return build_filters(
        config.filters,
        master_service_addr=master_service_addr(config),
        drop_name_prefixes=config.drop_name_prefixes,
    )


def node_name(config: ServeConfig) -> str:
    return config.node_name or socket.gethostname().lower()
