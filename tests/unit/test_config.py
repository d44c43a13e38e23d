"""The settings tree: config file, flags, and validation messages.

Every mistake stops startup with a `ConfigError` naming the flag or key, so
an operator can find the bad line; flags win over the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeproxy import config as cfg
from edgeproxy.config import ServeConfig, build, convert, flag_name, load_file, validate
from edgeproxy.errors import ConfigError, EdgeProxyError

SERVER = {"server_addrs": ("https://10.0.0.1:6443",)}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_full_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
serverAddr: [https://a:6443, https://b:6443]
caFile: ~/ca.crt
insecureSkipTLSVerify: true
listen: 127.0.0.1:9000
adminListen: 127.0.0.1:9001
cacheDir: /var/cache/ep
nodeName: node-1
dropNamePrefix: [secret-, tmp-]
consistency: cache-first
cacheFirstResources: [pods, services]
maxCacheBytes: 1048576
upstreamStrategy: round-robin
probeInterval: 1
fallbackAfter: 0.25
bookmarkInterval: 30
""",
    )
    settings = load_file(path)
    config = build(settings, {})
    assert config.server_addrs == ("https://a:6443", "https://b:6443")
    assert config.ca_file == Path.home() / "ca.crt"
    assert config.insecure_skip_tls_verify is True
    assert config.listen == "127.0.0.1:9000"
    assert config.cache_dir == Path("/var/cache/ep")
    assert config.drop_name_prefixes == ("secret-", "tmp-")
    assert config.consistency == "cache-first"
    assert config.max_cache_bytes == 1048576
    assert config.upstream_strategy == "round-robin"
    assert config.probe_interval == 1.0 and isinstance(config.probe_interval, float)
    assert config.fallback_after == 0.25
    assert config.bookmark_interval == 30.0


@pytest.mark.parametrize("text", ["", "# only a comment\n", "~\n"])
def test_empty_file_is_no_settings(tmp_path: Path, text: str) -> None:
    assert load_file(write(tmp_path, text)) == {}


def test_flags_win_over_the_file(tmp_path: Path) -> None:
    file_settings = load_file(
        write(tmp_path, "serverAddr: https://file:6443\nlisten: 127.0.0.1:1\nnodeName: from-file\n")
    )
    flags = {"listen": convert("listen", "127.0.0.1:2", "--listen")}
    config = build(file_settings, flags)
    assert config.listen == "127.0.0.1:2"
    assert config.node_name == "from-file"
    assert config.server_addrs == ("https://file:6443",)


def test_defaults() -> None:
    config = build({}, SERVER)
    assert config.listen.startswith("127.0.0.1:")
    assert config.admin_listen.startswith("127.0.0.1:")
    assert config.consistency == "strict"
    assert config.upstream_strategy == "failover"
    # Bounded by default (cache/budget.py): 1 GiB of disk, 256 MiB of memory.
    assert config.max_cache_bytes == 1024**3
    assert config.max_memory_cache_bytes == 256 * 1024**2
    assert config.max_watcher_queue_bytes == 16 * 1024**2
    assert config.max_watcher_queues_total_bytes == 64 * 1024**2


@pytest.mark.parametrize(
    ("attr", "value", "expected"),
    [
        ("server_addrs", "https://a,https://b,", ("https://a", "https://b")),
        ("server_addrs", ["https://a"], ("https://a",)),
        ("drop_name_prefixes", "x-", ("x-",)),
        ("kubeconfig", "/k", Path("/k")),
        ("insecure_skip_tls_verify", False, False),
        ("max_cache_bytes", 10, 10),
        ("max_cache_bytes", "10", 10),
        ("max_cache_bytes", "512Mi", 512 * 1024**2),
        ("max_memory_cache_bytes", "1Gi", 1024**3),
        ("max_memory_cache_bytes", "500M", 500_000_000),
        ("max_watcher_queue_bytes", "64Ki", 65536),
        ("max_watcher_queues_total_bytes", "1.5Gi", 1610612736),
        ("probe_interval", 2, 2.0),
        ("node_name", "n", "n"),
        ("context", "ctx", "ctx"),
    ],
)
def test_convert(attr: str, value: Any, expected: Any) -> None:
    assert convert(attr, value, "where") == expected


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("serverAddr", "'5'", None),  # valid: a string is a comma-separated list
        ("serverAddr", "[1, 2]", "must be a list of strings"),
        ("serverAddr", "{a: b}", "must be a list of strings"),
        ("caFile", "''", "must be a path"),
        ("caFile", "3", "must be a path"),
        ("insecureSkipTLSVerify", "'yes'", "must be true or false"),
        ("insecureSkipTLSVerify", "1", "must be true or false"),
        ("maxCacheBytes", "0", "must be a positive integer"),
        ("maxCacheBytes", "-5", "must be a positive integer"),
        ("maxCacheBytes", "true", "must be a positive integer"),
        ("maxCacheBytes", "1.5", "must be a positive integer"),
        ("maxCacheBytes", "1.5k", None),
        ("maxCacheBytes", "0.5", "must be a positive integer"),
        ("maxCacheBytes", "1Zi", "must be a positive integer"),
        ("maxMemoryCacheBytes", "256Mi", None),
        ("maxMemoryCacheBytes", "-1Mi", "must be a positive integer"),
        ("maxWatcherQueueBytes", "lots", "must be a positive integer"),
        ("maxWatcherQueuesTotalBytes", "0Gi", "must be a positive integer"),
        ("probeInterval", "0", "must be a positive number"),
        ("probeInterval", "-1", "must be a positive number"),
        ("probeInterval", "fast", "must be a positive number"),
        ("probeInterval", "true", "must be a positive number"),
        ("nodeName", "5", "must be a string"),
        ("listen", "[a]", "must be a string"),
    ],
)
def test_bad_file_values_name_the_key(
    tmp_path: Path, key: str, value: str, message: str | None
) -> None:
    path = write(tmp_path, f"{key}: {value}\n")
    if message is None:
        load_file(path)
        return
    with pytest.raises(ConfigError) as err:
        load_file(path)
    text = str(err.value)
    assert f"config file {path}: {key}: {message}" in text
    assert "(got " in text


@pytest.mark.parametrize(
    ("attr", "value", "message"),
    [
        ("probe_interval", "abc", "--probe-interval: must be a positive number"),
        ("insecure_skip_tls_verify", "true", "--insecure-skip-tls-verify: must be true or false"),
        ("max_cache_bytes", 0, "--max-cache-bytes: must be a positive integer"),
        ("cache_dir", "", "--cache-dir: must be a path"),
    ],
)
def test_bad_flag_values_name_the_flag(attr: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        convert(attr, value, flag_name(attr))


def test_every_key_has_a_flag_and_a_setting() -> None:
    attrs = {f for f in ServeConfig.__dataclass_fields__}
    for key, attr in cfg._KEYS.items():
        assert attr in attrs, key
        assert flag_name(attr).startswith("--")
        assert flag_name(attr) == flag_name(attr).lower()
    assert flag_name("server_addrs") == "--server-addr"
    assert flag_name("insecure_skip_tls_verify") == "--insecure-skip-tls-verify"
    assert flag_name("ca_file") == "--ca-file"
    assert flag_name("drop_name_prefixes") == "--drop-name-prefix"


def test_unknown_key(tmp_path: Path) -> None:
    path = write(tmp_path, "serverAddr: https://a\nserverAdr: https://b\n")
    with pytest.raises(ConfigError) as err:
        load_file(path)
    assert f"config file {path}: unknown setting 'serverAdr'" in str(err.value)
    assert "serverAddr" in str(err.value).split("known:")[1]


def test_snake_case_key_is_unknown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown setting 'server_addrs'"):
        load_file(write(tmp_path, "server_addrs: [https://a]\n"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "must be a mapping of settings"),
        ("a: [\n", "not valid YAML"),
        ("5\n", "must be a mapping"),
    ],
)
def test_malformed_file(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as err:
        load_file(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"config file {path}: No such file"):
        load_file(path)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "exactly one of --server-addr (serverAddr) and --kubeconfig (kubeconfig)"),
        (
            {**SERVER, "kubeconfig": Path("/k")},
            "exactly one of --server-addr (serverAddr) and --kubeconfig (kubeconfig)",
        ),
        (
            {**SERVER, "consistency": "eventual"},
            "--consistency (consistency): must be strict or cache-first (got 'eventual')",
        ),
        (
            {**SERVER, "upstream_strategy": "random"},
            "--upstream-strategy (upstreamStrategy): must be failover or round-robin",
        ),
        (
            {**SERVER, "drop_name_prefixes": ("a", "")},
            "--drop-name-prefix (dropNamePrefix): an empty prefix",
        ),
        ({**SERVER, "listen": "localhost"}, "--listen: 'localhost' is not HOST:PORT"),
        ({**SERVER, "listen": "localhost:http"}, "--listen: 'localhost:http' is not HOST:PORT"),
        (
            {**SERVER, "admin_listen": "127.0.0.1:65536"},
            "--admin-listen: '127.0.0.1:65536' is not HOST:PORT",
        ),
        ({**SERVER, "admin_listen": "127.0.0.1:"}, "--admin-listen"),
    ],
)
def test_validate_messages_name_the_flag(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        build({}, settings)
    assert message in str(err.value)
    assert isinstance(err.value, EdgeProxyError)


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "[::1]:10261", ":8080", "0.0.0.0:65535"])
def test_valid_listen_addresses(listen: str) -> None:
    validate(build({}, {**SERVER, "listen": listen}))


def test_kubeconfig_alone_is_enough() -> None:
    assert build({}, {"kubeconfig": Path("/k")}).kubeconfig == Path("/k")


# -- filters -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filters", "extra", "message"),
    [
        (["servicetopolgy"], {}, "filters[0]: unknown filter 'servicetopolgy' (known: "),
        ([{"components": ["kubelet"]}], {}, "filters[0]: unknown filter None"),
        ([42], {}, "filters[0]: must be a filter name or a mapping with a name"),
        (["masterservice"], {}, "filters[0] (masterservice): needs --master-service-addr"),
        (
            ["servicetopology", "servicetopology"],
            {},
            "filters[1] (servicetopology): listed twice",
        ),
        (
            [{"name": "servicetopology", "verbs": ["delete"]}],
            {},
            "filters[0] (servicetopology): verbs: filters apply to get, list and watch",
        ),
        (
            [{"name": "servicetopology", "components": "kube-proxy", "colour": "red"}],
            {},
            "filters[0] (servicetopology): unknown option(s) ['colour']",
        ),
        (
            [{"name": "drop-by-name-prefix"}],
            {},
            "filters[0] (drop-by-name-prefix): prefixes: must be a list of non-empty strings",
        ),
        (
            [{"name": "servicetopology", "resources": [""]}],
            {},
            "filters[0] (servicetopology): resources: must be a list of non-empty strings",
        ),
        (
            ["forwardkubesvctraffic"],
            {"master_service_addr": "169.254.2.1"},
            "--master-service-addr (masterServiceAddr): '169.254.2.1' is not HOST:PORT",
        ),
        ([], {"pool_label": ""}, "--pool-label (poolLabel): must not be empty"),
    ],
)
def test_bad_filter_config_names_the_entry(
    filters: list[Any], extra: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        build({}, {**SERVER, "filters": tuple(filters), **extra})
    assert message in str(err.value)


def test_filter_chains_from_file_and_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
serverAddr: [https://10.0.0.1:6443]
masterServiceAddr: 169.254.2.1:10268
poolLabel: superedge.io/node-unit
filters:
  - servicetopology
  - name: masterservice
    components: [kubelet, my-operator]
  - name: drop-by-name-prefix
    prefixes: [secret-]
    resources: [configmaps]
""",
    )
    config = build(load_file(path), {})
    assert config.pool_label == "superedge.io/node-unit"
    filters = cfg.filter_set(config)
    assert [f.name for f in filters.filters] == [
        "servicetopology",
        "masterservice",
        "drop-by-name-prefix",
    ]
    assert filters.chain_for("kube-proxy", "endpointslices", "watch").key == "servicetopology"
    assert filters.chain_for("my-operator", "services", "list").key == "masterservice"
    assert filters.chain_for("kubectl", "configmaps", "get").key == "drop-by-name-prefix"
    assert not filters.chain_for("kubectl", "secrets", "get")
    # --filters replaces the file's list; --drop-name-prefix adds the rule for everyone.
    flags = {"filters": convert("filters", "discardcloudservice", "--filters")}
    flags["drop_name_prefixes"] = ("tmp-",)
    overridden = cfg.filter_set(build(load_file(path), flags))
    assert [f.name for f in overridden.filters] == ["drop-by-name-prefix", "discardcloudservice"]
    assert overridden.chain_for("kubectl", "pods", "list").key == "drop-by-name-prefix"
