"""The proxy's own upstream credentials, from a kubeconfig or `--server-addr` flags.

Like YurtHub, the proxy talks to kube-apiserver under its own identity (see
ARCHITECTURE.md sec. 6). This module turns a kubeconfig (read the way kubectl
reads it) or explicit flags into one `Credentials` value, builds the client TLS
context, and supplies the Authorization header. Every mistake is a ConfigError
naming the kubeconfig and the exact entry, so a bad node setup fails at start
with a message an operator can act on, not as a 401 an hour later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import secrets
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from edgeproxy.errors import ConfigError

log = logging.getLogger(__name__)

# client-go re-reads a bearer token file every minute (transport/token_source.go);
# the kubelet refreshes projected service-account tokens long before they expire.
TOKEN_REFRESH_SECONDS = 60.0
# Fields that would silently change who we are or how we connect if ignored.
_UNSUPPORTED_USER = ("exec", "auth-provider", "as", "as-uid", "as-groups", "as-user-extra")
_UNSUPPORTED_CLUSTER = ("proxy-url",)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Where upstream is and how to prove who we are to it."""

    servers: tuple[str, ...]
    ca_pem: bytes | None
    insecure_skip_verify: bool
    tls_server_name: str | None
    client_cert_pem: bytes | None
    client_key_pem: bytes | None
    token: str | None
    token_file: Path | None
    source: str
    username: str | None = None
    password: str | None = None
    # Where the client certificate and key came from, when they are files: a
    # rotating certificate (the kubelet's) is followed there (certreload.py).
    client_cert_file: Path | None = None
    client_key_file: Path | None = None


def from_kubeconfig(path: Path, context: str | None = None) -> Credentials:
    """Credentials of `context` (default: current-context) in the kubeconfig at `path`."""
    where = f"kubeconfig {path}"
    try:
        doc = yaml.safe_load(path.read_bytes())
    except OSError as err:
        raise ConfigError(f"{where}: cannot read: {err.strerror or err}") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: not a kubeconfig (expected a mapping at the top)")
    if context is None:
        context = doc.get("current-context") or None
        if not isinstance(context, str):
            raise ConfigError(f"{where}: current-context is not set; name a context")
    ctx_label, ctx = _named(doc, "contexts", "context", context, where)
    cluster_name, user_name = ctx.get("cluster"), ctx.get("user")
    if not isinstance(cluster_name, str) or not cluster_name:
        raise ConfigError(f"{ctx_label}: cluster is missing")
    cl, cluster = _named(doc, "clusters", "cluster", cluster_name, where)
    user: dict[str, Any] = {}
    us = ""
    if user_name:  # kubectl allows a context without a user: anonymous requests
        if not isinstance(user_name, str):
            raise ConfigError(f"{ctx_label}: user is not a string")
        us, user = _named(doc, "users", "user", user_name, where)
    base = path.parent  # relative file paths are relative to the kubeconfig, as in kubectl

    _reject_unsupported(cluster, _UNSUPPORTED_CLUSTER, cl)
    server = _opt_str(cluster, "server", cl)
    if server is None:
        raise ConfigError(f"{cl}: server is missing")
    server = _server_url(server, f"{cl}: server")
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if not isinstance(insecure, bool):
        raise ConfigError(f"{cl}: insecure-skip-tls-verify must be true or false")
    ca = _pem(cluster, "certificate-authority", base, cl)
    if ca is not None and insecure:
        raise ConfigError(
            f"{cl}: certificate-authority with insecure-skip-tls-verify is not allowed"
        )

    _reject_unsupported(user, _UNSUPPORTED_USER, us)
    cert = _pem(user, "client-certificate", base, us)
    key = _pem(user, "client-key", base, us)
    if cert is not None and key is None:
        raise ConfigError(f"{us}: client-certificate is set but client-key is not")
    if key is not None and cert is None:
        raise ConfigError(f"{us}: client-key is set but client-certificate is not")
    token = _opt_str(user, "token", us)
    token_file = _path(user, "tokenFile", base, us)
    username, password = _opt_str(user, "username", us), _opt_str(user, "password", us)
    if (token or token_file) and (username or password):
        raise ConfigError(f"{us}: more than one auth method (token and basic auth)")
    if token is None and token_file is not None:
        token = _read_token(token_file, f"{us}: tokenFile {token_file}")
    return Credentials(
        servers=(server,),
        ca_pem=ca,
        insecure_skip_verify=insecure,
        tls_server_name=_opt_str(cluster, "tls-server-name", cl),
        client_cert_pem=cert,
        client_key_pem=key,
        token=token,
        token_file=token_file,
        source=f"{where} context {context}",
        username=username,
        password=password,
        client_cert_file=_path(user, "client-certificate", base, us),
        client_key_file=_path(user, "client-key", base, us),
    )


def from_server_addrs(
    addrs: Sequence[str],
    *,
    ca_file: Path | None = None,
    token_file: Path | None = None,
    client_cert: Path | None = None,
    client_key: Path | None = None,
    insecure: bool = False,
) -> Credentials:
    """Credentials from `--server-addr URL[,URL...]` and its companion flags."""
    servers = tuple(
        _server_url(a.strip(), f"--server-addr {a.strip()!r}")
        for arg in addrs
        for a in arg.split(",")
        if a.strip()
    )
    if not servers:
        raise ConfigError("--server-addr: no server URL given")
    if (client_cert is None) != (client_key is None):
        raise ConfigError("--client-cert and --client-key must be given together")
    if ca_file is not None and insecure:
        raise ConfigError("--ca-file with --insecure-skip-tls-verify is not allowed")
    return Credentials(
        servers=servers,
        ca_pem=None if ca_file is None else _read_pem(ca_file, f"--ca-file {ca_file}"),
        insecure_skip_verify=insecure,
        tls_server_name=None,
        client_cert_pem=None
        if client_cert is None
        else _read_pem(client_cert, f"--client-cert {client_cert}"),
        client_key_pem=None
        if client_key is None
        else _read_pem(client_key, f"--client-key {client_key}"),
        token=None if token_file is None else _read_token(token_file, f"--token-file {token_file}"),
        token_file=token_file,
        source="--server-addr",
        client_cert_file=client_cert,
        client_key_file=client_key,
    )


def ssl_context(
    creds: Credentials, key_dir: Path, *, client_cert: bool = True
) -> ssl.SSLContext | None:
    """Client TLS context for `creds`, or None when every server is plain http.

    `load_cert_chain` only takes files, so the client cert and key are written
    to `key_dir` (0700, files 0600) under a content hash and reused. Callers
    pass `creds.tls_server_name` as `server_hostname` when it is set. Without
    `client_cert` the context trusts the same servers but presents no
    certificate: the one client-token requests use (docs/identity.md).
    """
    if not any(s.startswith("https://") for s in creds.servers):
        return None
    try:
        cadata = None if creds.ca_pem is None else creds.ca_pem.decode("ascii", "replace")
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cadata)
    except ssl.SSLError as err:
        raise ConfigError(f"{creds.source}: certificate authority is not usable: {err}") from err
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if creds.insecure_skip_verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if client_cert and creds.client_cert_pem is not None and creds.client_key_pem is not None:
        cert_file, key_file = _key_files(creds.client_cert_pem, creds.client_key_pem, key_dir)
        try:
            ctx.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as err:
            raise ConfigError(
                f"{creds.source}: client certificate and key do not match or are invalid: {err}"
            ) from err
    return ctx


class TokenSource:
    """The Authorization header for `creds`, following a rotating token file.

    The file is re-read at most every `refresh` seconds; a failed or empty
    re-read keeps the last good token (with a warning) so a kubelet swapping
    the file never leaves us sending nothing.
    """

    def __init__(
        self,
        creds: Credentials,
        *,
        clock: Callable[[], float] = time.monotonic,
        refresh: float = TOKEN_REFRESH_SECONDS,
    ) -> None:
        self._creds = creds
        self._clock = clock
        self._refresh = refresh
        self._token = creds.token
        self._read_at = clock()

    def headers(self, now: float | None = None) -> dict[str, str]:
        creds = self._creds
        if creds.username is not None or creds.password is not None:
            pair = f"{creds.username or ''}:{creds.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        now = self._clock() if now is None else now
        if creds.token_file is not None and now - self._read_at >= self._refresh:
            self._read_at = now
            try:
                self._token = _read_token(creds.token_file, f"token file {creds.token_file}")
            except ConfigError as err:
                log.warning("%s; keeping the previous token", err)
        return {} if not self._token else {"Authorization": f"Bearer {self._token}"}


# --- kubeconfig entries ---------------------------------------------------------


def _named(
    doc: Mapping[str, Any], section: str, field: str, name: str, where: str
) -> tuple[str, dict[str, Any]]:
    """The `field` mapping of the entry called `name` in `doc[section]`, and its label."""
    entries = doc.get(section) or []
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: {section} is not a list")
    names = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"{where}: {section}[{i}] has no name")
        names.append(entry["name"])
        if entry["name"] == name:
            label = f'{where}: {section}[{i}] "{name}"'
            body = entry.get(field) or {}
            if not isinstance(body, dict):
                raise ConfigError(f"{label}: {field} is not a mapping")
            return label, body
    have = ", ".join(names) or "none"
    raise ConfigError(f'{where}: {field} "{name}" not found in {section} (have: {have})')


def _path(entry: Mapping[str, Any], key: str, base: Path, label: str) -> Path | None:
    value = _opt_str(entry, key, label)
    return None if value is None else base / value  # an absolute value stays absolute


def _pem(entry: Mapping[str, Any], key: str, base: Path, label: str) -> bytes | None:
    """`<key>` (a file) or `<key>-data` (base64 inline), as PEM bytes."""
    data_key = f"{key}-data"
    data, file = _opt_str(entry, data_key, label), _path(entry, key, base, label)
    if data is not None and file is not None:
        raise ConfigError(f"{label}: both {key} and {data_key} are set")
    if file is not None:
        return _read_pem(file, f"{label}: {key} {file}")
    if data is None:
        return None
    try:
        pem = base64.b64decode("".join(data.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ConfigError(f"{label}: {data_key} is not valid base64") from err
    if b"-----BEGIN" not in pem:
        raise ConfigError(f"{label}: {data_key} is not PEM")
    return pem


def _reject_unsupported(entry: Mapping[str, Any], keys: Sequence[str], label: str) -> None:
    for key in keys:
        if key in entry:
            raise ConfigError(f"{label}: {key} is not supported yet")


def _opt_str(entry: Mapping[str, Any], key: str, label: str) -> str | None:
    value = entry.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{label}: {key} must be a string")
    return value


def _server_url(url: str, label: str) -> str:
    """`url` without a trailing slash, if it is scheme://host[:port][/]."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as err:
        raise ConfigError(f"{label}: {url!r} is not a valid URL: {err}") from err
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{label}: {url!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"{label}: {url!r} has no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise ConfigError(f"{label}: {url!r} must be scheme://host[:port] only (no path or user)")
    return f"{parts.scheme}://{parts.netloc}"


def _read_pem(path: Path, label: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{label}: cannot read: {err.strerror or err}") from err
    if b"-----BEGIN" not in data:
        raise ConfigError(f"{label}: not a PEM file")
    return data


def _read_token(path: Path, label: str) -> str:
    try:
        token = path.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{label}: cannot read: {err}") from err
    if not token:
        raise ConfigError(f"{label}: file is empty")
    return token


# --- private key files ----------------------------------------------------------


def _key_files(cert: bytes, key: bytes, key_dir: Path) -> tuple[Path, Path]:
    """Write (or reuse) cert and key under `key_dir`, never readable by others."""
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key_dir.chmod(0o700)
    digest = hashlib.sha256(cert + b"\0" + key).hexdigest()[:16]
    paths = (key_dir / f"client-{digest}.crt", key_dir / f"client-{digest}.key")
    for path, data in zip(paths, (cert, key), strict=True):
        try:
            reusable = path.read_bytes() == data and (path.stat().st_mode & 0o077) == 0
        except OSError:
            reusable = False
        if not reusable:
            _write_private(path, data)
    return paths


def _write_private(path: Path, data: bytes) -> None:
    """Write 0600 via a temp file and rename, so no reader ever sees half a key."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
