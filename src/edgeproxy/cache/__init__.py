"""Scopes, their stores and reflectors: what the proxy knows of the cluster."""
