"""Real Kubernetes nodes in the lab: a kubelet per node, kube-scheduler, kube-controller-manager.

``Kubelet`` runs the kubelet built by ``scripts/build-kube.sh kubelet`` (``make
kube-node``) in a lab node's network namespace, on a private containerd
(:class:`tests.harness.cri.Containerd`, whose CRI plugin runs our shim from the node's
CNI bin and conf dirs).  It registers its Node, reports ``Ready=False`` with the
runtime's "network plugin not ready" until a conflist exists, runs the pods the API
assigns to it and tears them down (CNI DEL) when they are deleted.

What User-Mode Linux needs (measured; see /work/shared/notes/test-infra.md):

- the guest's ``/proc/cpuinfo`` has no ``cpu MHz`` line and cAdvisor refuses to start
  without one: a copy with the line is bind-mounted over it, in the guest only;
- ``DevicePlugins=false`` keeps the kubelet from writing the fixed path
  ``/var/lib/kubelet/device-plugins``; every other directory is under the work dir;
- no eviction and no image GC: the guest's filesystem stats are not a node's, and the
  images were imported, not pulled.

    with Containerd(tools, cni_bin_dir=..., cni_conf_dir=..., netns="lab-n1") as ctrd:
        with Kubelet(node="lab-n1", node_ip="192.0.2.1", kubeconfig=..., runtime=ctrd):
            ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.harness.apiserver import KUBE_VERSION, cache_root, in_guest
from tests.harness.cri import NETNS_DIR, NSENTER, RUN_BASE, Containerd, unmount_below

STOP_TIMEOUT = 30.0
CPUINFO = Path("/proc/cpuinfo")
# A clock speed for cAdvisor; its value is not used for anything here.
CPU_MHZ_LINE = "cpu MHz\t\t: 2000.000"


class KubeletError(RuntimeError):
    """The kubelet is not built, or it died."""


def kube_binary(command: str) -> Path:
    """A command built by scripts/build-kube.sh (`make kube-node`), or KubeletError."""
    path = cache_root() / f"{command}-{KUBE_VERSION}" / command
    if not os.access(path, os.X_OK):
        raise KubeletError(
            f"{command} {KUBE_VERSION} is not built ({path}): run `make kube-node` on the host"
        )
    return path


def cpuinfo_with_mhz(text: str) -> str:
    """`text` (a /proc/cpuinfo) with a `cpu MHz` line in every processor block."""
    blocks = text.strip("\n").split("\n\n")
    out = []
    for block in blocks:
        lines = block.splitlines()
        if not any(line.startswith("cpu MHz") for line in lines):
            lines.append(CPU_MHZ_LINE)
        out.append("\n".join(lines))
    return "\n\n".join(out) + "\n"


def ensure_cpu_mhz(work: Path) -> None:
    """Bind-mount a /proc/cpuinfo with `cpu MHz` over the guest's (idempotent)."""
    text = CPUINFO.read_text()
    if "cpu MHz" in text:
        return
    if not in_guest():
        raise KubeletError(
            "/proc/cpuinfo has no 'cpu MHz' line and this is not a test guest: refusing "
            "to bind-mount over the host's (run the test under scripts/run-in-vrf-kernel)"
        )
    copy = work / "cpuinfo"
    copy.write_text(cpuinfo_with_mhz(text))
    subprocess.run(["mount", "--bind", str(copy), str(CPUINFO)], check=True, timeout=30)


def stop_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the process's group, SIGKILL after STOP_TIMEOUT; wait for it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT)


class _KubeProcess:
    """One Kubernetes component as a process: work dir, log, start, liveness, stop.
    A context manager that stops it and removes what it left."""

    def __init__(self, name: str, log_dir: Path | None) -> None:
        self.name = name
        RUN_BASE.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=RUN_BASE))
        self.log_file = (log_dir or self.work) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        raise NotImplementedError

    def _spawn(self, argv: list[str]) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(self.work), "LANG": "C.UTF-8"}
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise KubeletError(
                f"{self.name} exited with {self.proc.returncode}; "
                f"see {self.log_file}:\n{self.log_tail()}"
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        stop_process_group(self.proc)
        self.proc = None
        # A kubelet's secret and projected volumes are tmpfs mounts under its root dir.
        unmount_below(self.work)
        shutil.rmtree(self.work, ignore_errors=True)


class Kubelet(_KubeProcess):
    """One kubelet in a node's network namespace (its pods stay to containerd, which
    removes them itself when it stops)."""

    def __init__(
        self,
        *,
        node: str,
        node_ip: str,
        kubeconfig: Path,
        runtime: Containerd,
        netns: str | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(f"kubelet-{node}", log_dir)
        self.node = node
        self.node_ip = node_ip
        self.kubeconfig = kubeconfig
        self.runtime = runtime
        self.netns = node if netns is None else netns

    def argv(self, binary: Path) -> list[str]:
        work = self.work
        return [
            str(binary),
            "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{self.runtime.socket}",
            "--runtime-request-timeout=2m",
            f"--kubeconfig={self.kubeconfig}",
            f"--hostname-override={self.node}",
            f"--node-ip={self.node_ip}",
            "--register-node=true",
            f"--root-dir={work / 'root'}",
            f"--cert-dir={work / 'pki'}",
            f"--volume-plugin-dir={work / 'volume-plugins'}",
            "--cgroup-driver=cgroupfs",
            "--cgroups-per-qos=false",
            "--enforce-node-allocatable=",
            "--fail-swap-on=false",
            "--read-only-port=0",
            "--healthz-bind-address=127.0.0.1",
            "--feature-gates=DevicePlugins=false",
            "--eviction-hard=",
            "--image-gc-high-threshold=100",
            "--image-gc-low-threshold=99",
            "--v=1",
        ]

    def start(self) -> None:
        binary = kube_binary("kubelet")
        ensure_cpu_mhz(self.work)
        for sub in ("root", "pki", "volume-plugins"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        self._spawn([NSENTER, f"--net={NETNS_DIR / self.netns}", "--", *self.argv(binary)])


class ControlPlaneComponent(_KubeProcess):
    """kube-scheduler or kube-controller-manager in the guest's root network namespace
    (the API server's), with no listener of its own and no leader election."""

    def __init__(self, command: str, *, kubeconfig: Path, log_dir: Path | None = None) -> None:
        super().__init__(command, log_dir)
        self.command = command
        self.kubeconfig = kubeconfig

    def argv(self, binary: Path) -> list[str]:
        common = [
            str(binary),
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--port=0",  # no insecure listener
            "--secure-port=0",  # nor a serving certificate written somewhere
            "--v=2",  # bindings and controller decisions in the log
        ]
        if self.command != "kube-controller-manager":
            return common
        return [
            *common,
            # What workloads need.  nodelifecycle takes off the not-ready taint a kubelet
            # registers its node with (else nothing but DaemonSet pods is scheduled); no
            # token controller (no signing key here).
            "--controllers=deployment,replicaset,daemonset,serviceaccount,garbagecollector,"
            "nodelifecycle",
            # A fixed host path by default; kept inside the work dir.
            f"--flex-volume-plugin-dir={self.work / 'flex'}",
            "--use-service-account-credentials=false",
        ]

    def start(self) -> None:
        self._spawn(self.argv(kube_binary(self.command)))
