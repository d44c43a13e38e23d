"""kubemark's hollow kubelet as a child process, for tests and demos.

The hollow kubelet is the kubelet's own code on a fake container runtime:
it registers its Node, renews its Lease, lists and watches its Pods and the
ConfigMaps and Secrets they mount, and reports pod status. Pointed at the
proxy through a kubeconfig, it is the most faithful node client we can run
without a container runtime. The binary comes from `k8s/build.sh`
(controlplane.binaries).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from edgeproxy.controlplane import binaries
from edgeproxy.testing import free_port, stop_process


class HollowKubelet:
    """`kubemark --morph=kubelet` in a child process, registering Node `name`."""

    def __init__(self, kubeconfig: Path, workdir: Path, name: str = "hollow-edge-1") -> None:
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_path = workdir / "kubemark-0.log"

    def start(self) -> None:
        args = [
            str(binaries(build=False) / "kubemark"),
            "--morph=kubelet",
            f"--name={self.name}",
            f"--kubeconfig={self.kubeconfig}",
            f"--kubelet-port={self.port}",
            "--kubelet-read-only-port=0",
            "--use-host-image-service=false",
            "--v=2",
        ]
        self.starts += 1
        self.log_path = self.workdir / f"kubemark-{self.starts}.log"  # one per run
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
            )

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]
