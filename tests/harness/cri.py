"""containerd's CRI, privately: the runtime that calls the CNI plugin for the kubelet.

``Containerd`` runs ``/usr/bin/containerd`` (Debian's 1.6, CRI plugin built in) with its
own root, state and socket under a temporary directory, the CNI bin and conf dirs of a
node (where the daemon installs the shim and its conflist), the local pause image as the
sandbox image, ``restrict_oom_score_adj = true`` (the test runs without
CAP_SYS_RESOURCE over its own limits under User-Mode Linux) and runc.  It imports the
images built by ``scripts/build-tools.sh`` with ``ctr`` and waits until the CRI sees them
and reports NetworkReady.  ``CriClient`` is a small client for the CRI gRPC API
(runtime.v1) over the stubs build-tools generated from the api.proto in the installed
containerd's source package.

The containerd process runs in the node's network namespace (``nsenter --net``, not
``ip netns exec``: it must stay in the root mount namespace, since it bind-mounts the pod
network namespaces under /run/netns, which the daemon must see).

    tools = load_tools()
    with Containerd(tools, cni_bin_dir=..., cni_conf_dir=..., netns="lab-n1") as ctrd:
        cri = ctrd.client
        sandbox = cri.run_pod_sandbox(name="p1", namespace="default", uid="...")
        cri.pod_sandbox_status(sandbox).ip
        cri.stop_pod_sandbox(sandbox); cri.remove_pod_sandbox(sandbox)
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.harness.lifecycle import Service
from tests.harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
BUILD_TOOLS = REPO / "scripts" / "build-tools.sh"
CONTAINERD = "/usr/bin/containerd"
CTR = "/usr/bin/ctr"
RUNC = "/usr/sbin/runc"
NSENTER = "/usr/bin/nsenter"
NETNS_DIR = Path("/run/netns")
# Runtime state on tmpfs (/run is one in the UML guest; the host filesystem is not a
# place for sockets and bind mounts).
RUN_BASE = Path("/run/pyroute2-cni-test")
K8S_NAMESPACE = "k8s.io"
CGROUP_PARENT = "/pyroute2-cni-cri"

# Plugins that cannot work here, or would write outside the work dir.
DISABLED_PLUGINS = [
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.tracing.processor.v1.otlp",
]

# overlayfs, not native: native copies the whole parent into every layer's snapshot and
# every container's, which for the ~145 MB images of the DaemonSet cost ~100 s per image
# under User-Mode Linux; overlayfs on the guest's tmpfs writes each layer once.
SNAPSHOTTER = "overlayfs"

START_TIMEOUT = 90.0
CALL_TIMEOUT = 120.0
STOP_TIMEOUT = 20.0

T = TypeVar("T")


class CriError(RuntimeError):
    """containerd or a CRI call failed; the message says what and where the log is."""


def _wait(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    return wait_for(probe, timeout, what, interval, error=CriError)


# -- the tools build-tools.sh made --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Image:
    archive: Path
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Tools:
    dir: Path
    cnitool: Path
    cri_dir: Path
    cri_module: str
    pause: Image
    busybox: Image
    libcni: str
    containerd: str
    plugins: str


@functools.cache
def load_tools() -> Tools:
    """The tools of the current inputs (``scripts/build-tools.sh --print-dir``), found once
    per process: the script's version key runs dpkg-query, go and pip, which inside a busy
    User-Mode Linux guest once took over a minute (CI: a test failed on that call alone).

    Inside a User-Mode Linux guest nothing can be built (no network for the source
    package): build them on the host first (``make tools``).
    """
    proc = subprocess.run(
        [str(BUILD_TOOLS), "--print-dir"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    directory = Path(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    if proc.returncode != 0 or directory is None:
        raise CriError(
            f"the test clients are not built ({proc.stderr.strip()}): run "
            f"scripts/build-tools.sh (make tools) on the host"
        )
    data = json.loads((directory / "tools.json").read_text())
    images = data["images"]
    return Tools(
        dir=directory,
        cnitool=Path(data["cnitool"]),
        cri_dir=Path(data["cri_dir"]),
        cri_module=str(data["cri_module"]),
        pause=Image(archive=Path(images["pause"]["archive"]), name=images["pause"]["name"]),
        busybox=Image(archive=Path(images["busybox"]["archive"]), name=images["busybox"]["name"]),
        libcni=str(data["libcni"]),
        containerd=str(data["containerd"]),
        plugins=str(data["plugins"]),
    )


def _load_stubs(tools: Tools) -> tuple[Any, Any]:
    """The generated ``<module>_pb2`` and ``<module>_pb2_grpc`` modules."""
    path = str(tools.cri_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    pb2 = importlib.import_module(f"{tools.cri_module}_pb2")
    grpc_mod = importlib.import_module(f"{tools.cri_module}_pb2_grpc")
    return pb2, grpc_mod


# -- the CRI client -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class SandboxStatus:
    id: str
    name: str
    namespace: str
    uid: str
    ready: bool
    ip: str
    additional_ips: tuple[str, ...]
    netns: str  # path of the pod's network namespace ("" when not known)


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerStatus:
    id: str
    state: str  # CONTAINER_CREATED, CONTAINER_RUNNING, CONTAINER_EXITED, CONTAINER_UNKNOWN
    exit_code: int
    reason: str
    message: str


@dataclass(slots=True, kw_only=True)
class SandboxSpec:
    """What the kubelet puts in a PodSandboxConfig, reduced to what matters here."""

    name: str
    namespace: str
    uid: str
    attempt: int = 0
    hostname: str = ""
    port_mappings: Sequence[tuple[str, int, int]] = ()  # (protocol, container, host)
    labels: dict[str, str] = field(default_factory=dict)


class CriClient:
    """RuntimeService and ImageService of CRI runtime.v1 over a unix socket."""

    def __init__(self, socket_path: Path, tools: Tools, timeout: float = CALL_TIMEOUT) -> None:
        import grpc

        self._pb, grpc_mod = _load_stubs(tools)
        self._channel = grpc.insecure_channel(f"unix://{socket_path}")
        self.runtime = grpc_mod.RuntimeServiceStub(self._channel)
        self.images = grpc_mod.ImageServiceStub(self._channel)
        self.timeout = timeout
        self._configs: dict[str, Any] = {}

    def close(self) -> None:
        self._channel.close()

    @property
    def pb(self) -> Any:
        return self._pb

    def _call(self, method: Callable[..., T], request: Any, timeout: float | None = None) -> T:
        import grpc

        try:
            return method(request, timeout=timeout or self.timeout)
        except grpc.RpcError as exc:
            name = type(request).__name__.removesuffix("Request")
            raise CriError(f"CRI {name} failed: {exc.code().name}: {exc.details()}") from None

    # -- runtime -------------------------------------------------------------------
    def version(self, timeout: float = 5.0) -> str:
        reply = self._call(
            self.runtime.Version, self._pb.VersionRequest(version="v1"), timeout=timeout
        )
        return f"{reply.runtime_name} {reply.runtime_version} (CRI {reply.runtime_api_version})"

    def conditions(self) -> dict[str, tuple[bool, str]]:
        """RuntimeReady / NetworkReady: (status, reason and message)."""
        reply = self._call(self.runtime.Status, self._pb.StatusRequest(verbose=False))
        return {
            c.type: (bool(c.status), f"{c.reason}: {c.message}".strip(": "))
            for c in reply.status.conditions
        }

    def sandbox_config(self, spec: SandboxSpec) -> Any:
        pb = self._pb
        config = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(
                name=spec.name, uid=spec.uid, namespace=spec.namespace, attempt=spec.attempt
            ),
            hostname=spec.hostname or spec.name[:63],
            labels={
                "io.kubernetes.pod.name": spec.name,
                "io.kubernetes.pod.namespace": spec.namespace,
                "io.kubernetes.pod.uid": spec.uid,
                **spec.labels,
            },
            port_mappings=[
                pb.PortMapping(
                    protocol=getattr(pb, proto.upper()),
                    container_port=container,
                    host_port=host,
                )
                for proto, container, host in spec.port_mappings
            ],
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=CGROUP_PARENT,
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(
                        network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD
                    )
                ),
            ),
        )
        return config

    def run_pod_sandbox(self, spec: SandboxSpec) -> str:
        config = self.sandbox_config(spec)
        reply = self._call(self.runtime.RunPodSandbox, self._pb.RunPodSandboxRequest(config=config))
        sandbox_id = str(reply.pod_sandbox_id)
        self._configs[sandbox_id] = config
        return sandbox_id

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self._call(
            self.runtime.StopPodSandbox, self._pb.StopPodSandboxRequest(pod_sandbox_id=sandbox_id)
        )

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self._call(
            self.runtime.RemovePodSandbox,
            self._pb.RemovePodSandboxRequest(pod_sandbox_id=sandbox_id),
        )
        self._configs.pop(sandbox_id, None)

    def pod_sandbox_status(self, sandbox_id: str) -> SandboxStatus:
        reply = self._call(
            self.runtime.PodSandboxStatus,
            self._pb.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id, verbose=True),
        )
        status = reply.status
        netns = ""
        with contextlib.suppress(KeyError, ValueError, TypeError):
            info = json.loads(reply.info["info"])
            for ns in info["runtimeSpec"]["linux"]["namespaces"]:
                if ns.get("type") == "network":
                    netns = str(ns.get("path", ""))
        return SandboxStatus(
            id=str(status.id),
            name=str(status.metadata.name),
            namespace=str(status.metadata.namespace),
            uid=str(status.metadata.uid),
            ready=status.state == self._pb.SANDBOX_READY,
            ip=str(status.network.ip),
            additional_ips=tuple(str(a.ip) for a in status.network.additional_ips),
            netns=netns,
        )

    def list_pod_sandboxes(self) -> list[str]:
        reply = self._call(self.runtime.ListPodSandbox, self._pb.ListPodSandboxRequest())
        return [str(item.id) for item in reply.items]

    def create_container(
        self, sandbox_id: str, name: str, image: str, command: Sequence[str]
    ) -> str:
        pb = self._pb
        sandbox_config = self._configs.get(sandbox_id)
        if sandbox_config is None:
            raise CriError(f"no sandbox config known for {sandbox_id} (not run by this client)")
        config = pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name=name, attempt=0),
            image=pb.ImageSpec(image=image),
            command=list(command),
            linux=pb.LinuxContainerConfig(
                security_context=pb.LinuxContainerSecurityContext(
                    namespace_options=pb.NamespaceOption(
                        network=pb.POD, pid=pb.CONTAINER, ipc=pb.POD
                    )
                )
            ),
        )
        reply = self._call(
            self.runtime.CreateContainer,
            pb.CreateContainerRequest(
                pod_sandbox_id=sandbox_id, config=config, sandbox_config=sandbox_config
            ),
        )
        return str(reply.container_id)

    def start_container(self, container_id: str) -> None:
        self._call(
            self.runtime.StartContainer, self._pb.StartContainerRequest(container_id=container_id)
        )

    def container_status(self, container_id: str) -> ContainerStatus:
        reply = self._call(
            self.runtime.ContainerStatus,
            self._pb.ContainerStatusRequest(container_id=container_id),
        )
        status = reply.status
        return ContainerStatus(
            id=str(status.id),
            state=str(self._pb.ContainerState.Name(status.state)),
            exit_code=int(status.exit_code),
            reason=str(status.reason),
            message=str(status.message),
        )

    def remove_container(self, container_id: str) -> None:
        self._call(
            self.runtime.RemoveContainer,
            self._pb.RemoveContainerRequest(container_id=container_id),
        )

    def wait_container_exit(self, container_id: str, timeout: float) -> ContainerStatus:
        def exited() -> ContainerStatus | None:
            status = self.container_status(container_id)
            return status if status.state == "CONTAINER_EXITED" else None

        return _wait(exited, timeout, f"container {container_id[:12]} to exit", 0.2)

    # -- images --------------------------------------------------------------------
    def has_image(self, name: str) -> bool:
        reply = self._call(
            self.images.ImageStatus,
            self._pb.ImageStatusRequest(image=self._pb.ImageSpec(image=name)),
        )
        return bool(reply.image.id)


# -- containerd -----------------------------------------------------------------------------


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def unmount_below(directory: Path) -> None:
    """Lazily unmount everything mounted below `directory`, deepest first."""
    prefix = str(directory) + "/"
    mounts: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)


# One release image (~145 MB unpacked) under User-Mode Linux takes 20-60 s.
IMPORT_TIMEOUT = 600.0


class Containerd(Service):
    """A private containerd with the CRI plugin; a context manager that leaves nothing."""

    def __init__(
        self,
        tools: Tools,
        *,
        cni_bin_dir: Path,
        cni_conf_dir: Path,
        netns: str | None = None,
        mountns: Sequence[str] = (),
        images: Sequence[Path] = (),
        seed: Path | None = None,
        log_dir: Path | None = None,
        env_path: Sequence[Path] = (),
    ) -> None:
        self.tools = tools
        # A root with every image already unpacked (see seeded_root): copied instead of
        # importing, which under User-Mode Linux costs ~45 s of CPU per node.
        self.seed = seed
        # An nsenter prefix that enters a node's mount namespace (NodeMountNamespace).
        self.mountns = tuple(mountns)
        # oci-archives to import besides pause and busybox.
        self.images = tuple(images)
        self.cni_bin_dir = cni_bin_dir
        self.cni_conf_dir = cni_conf_dir
        self.netns = netns
        self.env_path = tuple(env_path)
        RUN_BASE.mkdir(parents=True, exist_ok=True)
        self.work = Path(tempfile.mkdtemp(prefix="containerd-", dir=RUN_BASE))
        self.root = self.work / "root"
        self.state = self.work / "state"
        self.socket = self.work / "containerd.sock"
        self.config_file = self.work / "config.toml"
        self.log_file = (log_dir or self.work) / f"containerd-{self.work.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._client: CriClient | None = None
        self.start_seconds = 0.0

    # -- context manager -----------------------------------------------------------
    @property
    def client(self) -> CriClient:
        if self._client is None:
            raise CriError("containerd is not running")
        return self._client

    def config(self) -> str:
        cri = '[plugins."io.containerd.grpc.v1.cri"]'
        return "\n".join(
            [
                "version = 2",
                f"root = {_toml_str(str(self.root))}",
                f"state = {_toml_str(str(self.state))}",
                "disabled_plugins = " + json.dumps(DISABLED_PLUGINS),
                "",
                "[grpc]",
                f"  address = {_toml_str(str(self.socket))}",
                "[ttrpc]",
                f"  address = {_toml_str(str(self.socket) + '.ttrpc')}",
                "[debug]",
                '  level = "info"',
                "",
                '[plugins."io.containerd.internal.v1.opt"]',
                f"  path = {_toml_str(str(self.work / 'opt'))}",
                cri,
                f"  sandbox_image = {_toml_str(self.tools.pause.name)}",
                "  restrict_oom_score_adj = true",
                "  disable_apparmor = true",
                "  enable_selinux = false",
                '  stream_server_address = "127.0.0.1"',
                '  stream_server_port = "0"',
                f"{cri[:-1]}.containerd]",
                f"  snapshotter = {_toml_str(SNAPSHOTTER)}",
                '  default_runtime_name = "runc"',
                f"{cri[:-1]}.containerd.runtimes.runc]",
                '  runtime_type = "io.containerd.runc.v2"',
                f"{cri[:-1]}.containerd.runtimes.runc.options]",
                f"  BinaryName = {_toml_str(RUNC)}",
                "  SystemdCgroup = false",
                f"{cri[:-1]}.cni]",
                f"  bin_dir = {_toml_str(str(self.cni_bin_dir))}",
                f"  conf_dir = {_toml_str(str(self.cni_conf_dir))}",
                "  max_conf_num = 1",
                "",
            ]
        )

    def _env(self) -> dict[str, str]:
        path = [str(p) for p in self.env_path] + [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        return {"PATH": ":".join(path), "HOME": str(self.work), "LANG": "C.UTF-8"}

    def start(self) -> None:
        began = time.monotonic()
        for path in (CONTAINERD, CTR, RUNC, NSENTER):
            if not os.access(path, os.X_OK):
                raise CriError(f"{path} is missing (apt-get install containerd runc util-linux)")
        if self.seed is not None:
            # cp keeps the snapshots' ownership, modes and xattrs (overlayfs whiteouts).
            subprocess.run(
                ["cp", "-a", str(self.seed), str(self.root)], check=True, timeout=START_TIMEOUT
            )
        else:
            self.root.mkdir(parents=True)
        self.state.mkdir(parents=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self.config())
        argv = [CONTAINERD, "--config", str(self.config_file)]
        if self.netns:
            argv = [*(self.mountns or [NSENTER]), f"--net={NETNS_DIR / self.netns}", "--", *argv]
        elif self.mountns:
            argv = [*self.mountns, "--", *argv]
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._env(),
                start_new_session=True,
            )
        self._client = CriClient(self.socket, self.tools)

        def answering() -> str | None:
            self._check_alive()
            if not self.socket.exists():
                return None
            try:
                return self.client.version(timeout=2.0)
            except CriError:
                return None

        _wait(answering, START_TIMEOUT, f"containerd's CRI on {self.socket} ({self.log_file})")
        if self.seed is None:
            for image in (self.tools.pause, self.tools.busybox):
                self.ctr("images", "import", "--snapshotter", SNAPSHOTTER, str(image.archive))
            for archive in self.images:
                self.ctr(
                    "images",
                    "import",
                    "--snapshotter",
                    SNAPSHOTTER,
                    str(archive),
                    timeout=IMPORT_TIMEOUT,
                )
        for image in (self.tools.pause, self.tools.busybox):
            self._wait_image(image.name)
        self.start_seconds = time.monotonic() - began

    def _wait_image(self, name: str) -> None:
        _wait(lambda: self.client.has_image(name), START_TIMEOUT, f"the CRI to see {name}", 0.2)

    def wait_network_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Until the CRI has loaded a CNI network config from conf_dir."""
        last: dict[str, tuple[bool, str]] = {}

        def ready() -> bool:
            nonlocal last
            self._check_alive()
            last = self.client.conditions()
            return last.get("NetworkReady", (False, ""))[0]

        try:
            _wait(ready, timeout, "the CRI's NetworkReady condition", 0.2)
        except CriError as exc:
            raise CriError(f"{exc}: {last}") from None

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise CriError(
                f"containerd exited with {self.proc.returncode}; see {self.log_file}:\n"
                + self.log_tail()
            )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ctr(self, *args: str, timeout: float = CALL_TIMEOUT) -> str:
        argv = [CTR, "--address", str(self.socket), "--namespace", K8S_NAMESPACE, *args]
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self._env(),
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise CriError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    # -- stop ----------------------------------------------------------------------
    def stop_keeping_root(self, dest: Path) -> None:
        """Stop, but move the root (content store, snapshots, metadata) to ``dest`` first,
        once containerd has exited and its databases are closed."""
        self._stop_process()
        shutil.move(str(self.root), str(dest))
        self.stop()

    def stop(self) -> None:
        """Remove the sandboxes left, stop containerd and its shims, unmount, delete."""
        self._stop_process()
        self._kill_shims()
        unmount_below(self.work)
        shutil.rmtree(self.work, ignore_errors=True)
        self._remove_cgroups()

    def _stop_process(self) -> None:
        client = self._client
        if client is not None and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(CriError):
                for sandbox in client.list_pod_sandboxes():
                    with contextlib.suppress(CriError):
                        client.stop_pod_sandbox(sandbox)
                        client.remove_pod_sandbox(sandbox)
        if client is not None:
            client.close()
            self._client = None
        if self.proc is not None:
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGTERM)
                try:
                    self.proc.wait(timeout=STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    self.proc.wait(timeout=STOP_TIMEOUT)
            self.proc = None

    def _kill_shims(self) -> None:
        """containerd-shim-runc-v2 processes started for our socket (never anyone else's)."""
        marker = str(self.socket).encode()
        pids: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if argv and argv[0].endswith(b"containerd-shim-runc-v2") and marker in argv:
                    pids.append(int(entry.name))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    @staticmethod
    def _remove_cgroups() -> None:
        base = Path("/sys/fs/cgroup") / CGROUP_PARENT.strip("/")
        if not base.is_dir():
            return
        dirs = sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*dirs, base]:
            with contextlib.suppress(OSError):
                d.rmdir()


@contextlib.contextmanager
def seeded_root(
    tools: Tools, images: Sequence[Path], log_dir: Path | None = None
) -> Iterator[Path]:
    """A containerd root with pause, busybox and ``images`` unpacked, made once for several
    nodes (``Containerd(seed=...)`` copies it); removed on exit."""
    RUN_BASE.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix="containerd-seed-", dir=RUN_BASE))
    (holder / "bin").mkdir()
    (holder / "conf").mkdir()
    importer = Containerd(
        tools,
        cni_bin_dir=holder / "bin",
        cni_conf_dir=holder / "conf",
        images=images,
        log_dir=log_dir,
    )
    try:
        importer.start()
        importer.stop_keeping_root(holder / "root")
    except BaseException:
        importer.stop()
        shutil.rmtree(holder, ignore_errors=True)
        raise
    try:
        yield holder / "root"
    finally:
        shutil.rmtree(holder, ignore_errors=True)
