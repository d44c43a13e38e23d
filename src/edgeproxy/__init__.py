"""edge-proxy: a node-local Kubernetes API proxy that keeps answering offline."""

__version__ = "0.1.0"
