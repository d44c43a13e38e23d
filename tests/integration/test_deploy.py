"""What an operator installs on a node: the wheel, the systemd unit, the manifests.

The wheel is built from this checkout as `make dist` builds it and
installed into a fresh venv; `edge-proxy serve` from that venv must serve.
The unit must pass `systemd-analyze verify` with its ExecStart pointed at
that install, and the static-pod and DaemonSet manifests must pass the real
kube-apiserver's validation and admission (`kubectl apply --dry-run=server`).
"""

from __future__ import annotations

import email.parser
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeproxy import config as cfg
from edgeproxy.controlplane import ControlPlane
from edgeproxy.testing import SimProcess, free_port, stop_process

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
IMAGE = "registry.example.com/edge-proxy:0.1.0"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out),
         str(REPO)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("edgeproxy-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv with the wheel installed; returns its bin directory.

    The wheel itself is installed without its dependencies, which come from
    this test's environment through a .pth file, so the test needs no package
    index; the wheel's declared dependencies are checked separately.
    """
    root = tmp_path_factory.mktemp("venv") / "edge-proxy"
    venv.create(root, with_pip=True)
    bin_dir = root / "bin"
    subprocess.run(
        [str(bin_dir / "pip"), "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    site = subprocess.run(
        [str(bin_dir / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "deps-from-test-env.pth").write_text(sysconfig.get_path("purelib") + "\n")
    yield bin_dir


def test_wheel_declares_its_dependencies(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        (meta_name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        meta = email.parser.Parser().parsestr(zf.read(meta_name).decode())
        entry_points = zf.read(meta_name.replace("METADATA", "entry_points.txt")).decode()
    required = {r.split(">")[0].split(";")[0].strip() for r in meta.get_all("Requires-Dist", [])}
    assert {"aiohttp", "msgspec", "pyyaml", "cryptography", "prometheus-client"} <= required
    assert "edge-proxy = edgeproxy.cli:main" in entry_points


def test_installed_wheel_serves(installed: Path, sim: SimProcess, tmp_path: Path) -> None:
    where = subprocess.run(
        [str(installed / "python"), "-c", "import edgeproxy; print(edgeproxy.__file__)"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(installed.parent)), where  # the wheel's copy, not the checkout's
    port, admin = free_port(), free_port()
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(installed / "edge-proxy"), "serve", f"--kubeconfig={sim.kubeconfig}",
         f"--listen=127.0.0.1:{port}", f"--admin-listen=127.0.0.1:{admin}",
         f"--cache-dir={tmp_path / 'cache'}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/namespaces") as r:
                    assert b'"NamespaceList"' in r.read()
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz") as r:
            assert r.status == 200
    finally:
        stop_process(proc)
        log.close()
    assert proc.returncode == 0


def test_systemd_unit_verifies(installed: Path, tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "edge-proxy.service").read_text()
    assert "ExecStart=/opt/edge-proxy/bin/edge-proxy serve" in unit
    # verify checks that ExecStart's program exists: point it at the fresh install.
    copy = tmp_path / "edge-proxy.service"
    copy.write_text(unit.replace("/opt/edge-proxy/bin/edge-proxy", str(installed / "edge-proxy")))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0].isalpha()
    )
    assert settings["StateDirectory"] == "edge-proxy"
    assert settings["Restart"] in ("always", "on-failure")
    assert int(settings["LimitNOFILE"]) >= 65536


def test_example_config_loads() -> None:
    settings = cfg.load_file(DEPLOY / "config.yaml")
    assert settings["kubeconfig"] == Path("/etc/edge-proxy/upstream.kubeconfig")
    assert settings["max_cache_bytes"] == 1024**3


@pytest.mark.kubectl
@pytest.mark.parametrize("manifest", ["static-pod.yaml", "daemonset.yaml"])
def test_manifest_passes_server_side_dry_run(
    real: ControlPlane, manifest: str, tmp_path: Path
) -> None:
    text = (DEPLOY / "kubernetes" / manifest).read_text()
    assert "${EDGE_PROXY_IMAGE}" in text  # the documented parameter
    filled = tmp_path / manifest
    filled.write_text(text.replace("${EDGE_PROXY_IMAGE}", IMAGE))
    done = subprocess.run(
        ["kubectl", f"--kubeconfig={real.kubeconfig}", "apply", "--dry-run=server",
         "-o", "yaml", "-f", str(filled)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"image: {IMAGE}" in done.stdout
    assert "hostNetwork: true" in done.stdout
