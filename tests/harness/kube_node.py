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
from collections.abc import Sequence
from pathlib import Path

from tests.harness.apiserver import KUBE_VERSION, cache_root, in_guest
from tests.harness.cri import NETNS_DIR, NSENTER, RUN_BASE, Containerd, unmount_below
from tests.harness.lifecycle import Service

STOP_TIMEOUT = 30.0
# Persistent mount namespaces of lab nodes, one file each; a private mount so that
# `unshare --mount=FILE` may bind a namespace there.
MOUNTNS_DIR = Path("/run/lab-mntns")
# What `make images` builds (scripts/build-images), by image name.
IMAGES_DIR = "images"
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


def ensure_cpu_mhz(work: Path, enter: Sequence[str] = ()) -> None:
    """Bind-mount a /proc/cpuinfo with `cpu MHz` over the guest's (idempotent), in the
    mount namespace `enter` (an nsenter prefix) or this process's."""
    if not enter:
        text = CPUINFO.read_text()
    else:
        seen = subprocess.run(
            [*enter, "cat", str(CPUINFO)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
            stdin=subprocess.DEVNULL,
        )
        text = seen.stdout
    if "cpu MHz" in text:
        return
    if not in_guest():
        raise KubeletError(
            "/proc/cpuinfo has no 'cpu MHz' line and this is not a test guest: refusing "
            "to bind-mount over the host's (run the test under scripts/run-in-vrf-kernel)"
        )
    copy = work / "cpuinfo"
    copy.write_text(cpuinfo_with_mhz(text))
    subprocess.run([*enter, "mount", "--bind", str(copy), str(CPUINFO)], check=True, timeout=30)


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


def release_image_archives() -> list[Path]:
    """The oci-archives of the daemon and FRR images `make images` built, or KubeletError."""
    found = []
    for name in ("pyroute2-cni", "pyroute2-cni-frr"):
        archives = sorted(
            (cache_root() / IMAGES_DIR).glob(f"{name}-[0-9]*.oci.tar"),
            key=lambda p: p.stat().st_mtime,
        )
        if not archives:
            raise KubeletError(
                f"no {name} image under {cache_root() / IMAGES_DIR}: run `make images` on the host"
            )
        found.append(archives[-1])
    return found


def _run(argv: list[str]) -> None:
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=30, check=False, stdin=subprocess.DEVNULL
    )
    if proc.returncode != 0:
        raise KubeletError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


def _is_mount_point(path: Path) -> bool:
    """Whether something is mounted at `path` (os.path.ismount misses a bind mount of a
    directory onto itself: same device, and its parent is on it too)."""
    text = Path("/proc/self/mountinfo").read_text()
    return any(line.split()[4] == str(path) for line in text.splitlines())


class NodeMountNamespace(Service):
    """A lab node's own mount namespace, kept in a file so that its containerd, its
    kubelet and the containers they run share it.

    Each bind makes a per-node directory appear at the path a real node has (the
    DaemonSet's hostPath volumes: /opt/cni/bin, /etc/cni/net.d, /run/pyroute2-cni).
    Propagation from the root namespace is one way (slave): the lab's node network
    namespaces under /run/netns are seen here, while the pods' namespaces containerd
    mounts here, and these binds, stay in the node (and reach its containers).
    """

    def __init__(self, node: str, binds: dict[Path, Path]) -> None:
        self.node = node
        self.binds = dict(binds)
        self.path = MOUNTNS_DIR / node

    def nsenter(self) -> list[str]:
        """The argv prefix that runs a command in this namespace."""
        return [NSENTER, f"--mount={self.path}"]

    def start(self) -> None:
        MOUNTNS_DIR.mkdir(parents=True, exist_ok=True)
        if not _is_mount_point(MOUNTNS_DIR):
            _run(["mount", "--bind", str(MOUNTNS_DIR), str(MOUNTNS_DIR)])
        _run(["mount", "--make-private", str(MOUNTNS_DIR)])
        self.stop()  # a namespace a killed run left
        self.path.touch()
        _run(["unshare", f"--mount={self.path}", "--propagation", "slave", "true"])
        # Shared as well as slave, as / is on a systemd host: the kubelet's HostToContainer
        # volumes (the DaemonSet's /var/run/netns) need a shared or slave source, and the
        # pods' namespaces containerd mounts here must propagate into the daemon's
        # container, which a mount that is only a slave would not pass on.
        _run([*self.nsenter(), "mount", "--make-rshared", "/"])
        for target, source in self.binds.items():
            source.mkdir(parents=True, exist_ok=True)
            script = 'mkdir -p "$2" && mount --bind "$1" "$2"'
            _run([*self.nsenter(), "sh", "-c", script, "bind", str(source), str(target)])

    def stop(self) -> None:
        if self.path.exists():
            subprocess.run(
                ["umount", "--lazy", str(self.path)],
                capture_output=True,
                timeout=30,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            self.path.unlink(missing_ok=True)


class _KubeProcess(Service):
    """One Kubernetes component as a process: work dir, log, start, liveness, stop.
    A context manager that stops it and removes what it left."""

    def __init__(self, name: str, log_dir: Path | None) -> None:
        self.name = name
        RUN_BASE.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=RUN_BASE))
        self.log_file = (log_dir or self.work) / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

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
        mountns: NodeMountNamespace | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(f"kubelet-{node}", log_dir)
        self.mountns = mountns
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
        ensure_cpu_mhz(self.work, self.mountns.nsenter() if self.mountns is not None else ())
        for sub in ("root", "pki", "volume-plugins"):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
        prefix = self.mountns.nsenter() if self.mountns is not None else [NSENTER]
        self._spawn([*prefix, f"--net={NETNS_DIR / self.netns}", "--", *self.argv(binary)])


class ControlPlaneComponent(_KubeProcess):
    """kube-scheduler or kube-controller-manager in the guest's root network namespace
    (the API server's), with no listener of its own and no leader election."""

    def __init__(
        self,
        command: str,
        *,
        kubeconfig: Path,
        service_account_key: Path | None = None,
        root_ca: Path | None = None,
        log_dir: Path | None = None,
    ) -> None:
        super().__init__(command, log_dir)
        self.command = command
        self.kubeconfig = kubeconfig
        self.service_account_key = service_account_key
        self.root_ca = root_ca

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
        # What workloads need.  nodelifecycle takes off the not-ready taint a kubelet
        # registers its node with (else nothing but DaemonSet pods is scheduled).
        controllers = [
            "deployment",
            "replicaset",
            "daemonset",
            "serviceaccount",
            "garbagecollector",
            "nodelifecycle",
        ]
        tokens: list[str] = []
        if self.service_account_key is not None:
            # Service account tokens for pods that talk to the API (the DaemonSet's).
            controllers.append("serviceaccount-token")
            tokens.append(f"--service-account-private-key-file={self.service_account_key}")
            if self.root_ca is not None:
                tokens.append(f"--root-ca-file={self.root_ca}")
        return [
            *common,
            f"--controllers={','.join(controllers)}",
            *tokens,
            # A fixed host path by default; kept inside the work dir.
            f"--flex-volume-plugin-dir={self.work / 'flex'}",
            "--use-service-account-credentials=false",
        ]

    def start(self) -> None:
        self._spawn(self.argv(kube_binary(self.command)))
