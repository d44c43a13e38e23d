"""Pure Kubernetes API semantics shared by the proxy and the simulator.

Nothing in this package performs I/O or imports the rest of the project: it
parses requests, selectors and objects, and encodes lists, watch events and
Status errors exactly as kube-apiserver does (docs/consistency.md states the contract).
"""
