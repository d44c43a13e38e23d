"""The real control plane fixture survives a port taken between picking it and binding it.

`free_port()` picks a port by binding and releasing it; another process of a
shared machine can take it before kube-apiserver binds it (seen in CI: the
peers bench's kube-apiserver exited with "address already in use", and the
etcd it left running failed the next test). ControlPlane retries on new ports
and leaves nothing running when it gives up.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproxy import controlplane
from edgeproxy.controlplane import ControlPlane
from edgeproxy.testing import free_port


def test_a_port_taken_before_kube_apiserver_binds_it_is_retried_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # etcd's client and peer ports, then kube-apiserver's: the taken one.
        first: Iterator[int] = iter([free_port(), free_port(), busy])

        def pick() -> int:
            return next(first, None) or free_port()

        monkeypatch.setattr(controlplane, "free_port", pick)
        with ControlPlane(workdir=tmp_path / "cp") as cp:
            assert cp.port != busy
            status, _ = cp.request("GET", "/readyz")
            assert status == 200
            assert "address already in use" in (tmp_path / "cp" / "kube-apiserver.log").read_text()
