"""`edge-proxy serve` runs with its memory settings (src/edgeproxy/footprint.py)."""

from __future__ import annotations

from pathlib import Path

from edgeproxy.testing import ProxyProcess, SimProcess


def test_serve_maps_no_compiled_frozenlist(sim: SimProcess, tmp_path: Path) -> None:
    proxy = ProxyProcess(sim.kubeconfig, workdir=tmp_path / "proxy")
    try:
        assert proxy.proc is not None
        maps = Path(f"/proc/{proxy.proc.pid}/maps").read_text()
        assert "aiohttp" in maps  # the server's own extensions are mapped...
        assert "frozenlist" not in maps  # ...frozenlist's C++ one is not
        # cryptography (8 MB) is for a serving certificate the cluster issues: none here.
        assert "cryptography" not in maps
    finally:
        proxy.close()
