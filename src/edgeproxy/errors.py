"""The project's error hierarchy (API errors are `kube.status.StatusError`).

Kept small and purposeful: configuration mistakes stop startup with a message
naming the bad entry; an unreachable upstream triggers the cache; a broken
journal is reported and the proxy carries on from memory.
"""

from __future__ import annotations


class EdgeProxyError(Exception):
    """Root of every edge-proxy error that is not an API Status."""


class ConfigError(EdgeProxyError):
    """A bad flag, config-file entry or kubeconfig; the message names it."""


class UpstreamUnreachable(EdgeProxyError):
    """No upstream answered in time (refused, reset, black-holed, TLS failure)."""


class StorageError(EdgeProxyError):
    """The durable journal could not be read or written."""
