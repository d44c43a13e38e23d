"""Talking to kube-apiserver: credentials, connections, health and failover.

The only package that opens connections to the cloud apiserver.
"""
