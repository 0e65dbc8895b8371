"""The lab: a multi-node pyroute2-cni cluster on one kernel (``make lab``, the e2e tier).

Layout, all inside one kernel with VRF (a User-Mode Linux guest when the host lacks it)::

    etcd + kube-apiserver on loopback (tests.harness.apiserver), CRDs from kubernetes/crds/0.1/
    netns lab-fabric: bridge lab-ul, the underlay switch
        ├─ ul-n1 ── eth1 192.168.124.1/24  netns lab-n1
        ├─ ul-n2 ── eth1 192.168.124.2/24  netns lab-n2      ...  (LAB_NODES, default 3)
        └─ ul-rr ── eth1 192.168.124.254   netns lab-rr      (route reflector, `scenario rr`)
    per node lab-n<i>: FRR (zebra, bgpd, staticd; pathspace lab-n<i>, options from
        frr/daemons) and the DaemonSet's own `pyroute2-cni daemon` (NODE_NAME=lab-n<i>,
        a per-node server.ini); pods are network namespaces pod-lab-n<i>-<j> plumbed by the
        shim the daemon installed, driven the way the kubelet drives it (CNI_* env, the
        node's conflist on stdin), with a Pod object in the API for each.
    The daemons reach the API server at the same 127.0.0.1:<port> as everyone else: a TCP
    relay (ApiRelay) listens there inside each node namespace.

Measured under User-Mode Linux on 2 cores (3 nodes x 2 pods): API server ~25-35 s (FRR
and the namespaces come up meanwhile), daemons ready ~40-60 s later (imports, first
frr-reload.py), pods ~4 s, summary ~15 s: `make lab` ~2 min from a warm cache.

Use from Python (the e2e tier runs this in-process, inside the VRF kernel)::

    with Lab(LabOptions(state_dir=...)) as lab:      # start(): API, nodes, FRR, daemons, pods
        lab.ping(lab.pods[0], lab.pods[3].address)

Command line (``scripts/lab`` is a thin wrapper around ``python -m tests.harness.lab_cli``)::

    up                 start the lab in the background (one UML guest when the kernel lacks
                       VRF), print the summary (nodes, BGP sessions, IP blocks, ping matrix)
                       and return; exit 1 unless the ping matrix is all green
    down               stop everything, power the guest off, leave nothing behind
    kubectl ARGS...    kubectl against the lab's API server (runs inside the guest)
    exec NETNS CMD...  run CMD in a lab namespace (lab-n1, pod-lab-n1-1, ...; "-": guest root)
    scenario NAME...   tenant | l2vni | rr | all: add a scenario to the running lab
    summary | status | logs [NODE] | run-e2e

The host talks to the guest through files in the state directory (``lab-state/`` in the
repository by default, ``LAB_STATE_DIR``; the guest's /run, /tmp and /var/tmp are tmpfs and
invisible to the host): requests in ``agent/requests``, replies in ``agent/replies``,
``status.json``, ``summary.txt``, the guest's console in ``console.log`` and the daemons'
logs in ``logs/``.  The guest stops by itself after ``LAB_LIFETIME`` seconds (default 2 h).

Modules: this one is the topology and its operations (``Lab``); ``lab_scenarios`` what an
operator changes in it (tenant VRF, l2vni, reflectors, restarts); ``lab_cli`` the host's
commands, ``lab_agent`` the guest side (serve, the request channel), ``frr_instance`` FRR,
``api_relay`` the API relay, ``continuous_ping`` the loss counter, ``procs`` the process
and namespace helpers they share.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.api_relay import ApiRelay
from tests.harness.apiserver import ApiServer, kube_apiserver_path, missing_build_message
from tests.harness.continuous_ping import PING
from tests.harness.frr_instance import FRR_BASE_CONFIG, FRR_BIN, FRR_DAEMONS, VTYSH, FrrInstance
from tests.harness.kube_objects import register_node
from tests.harness.lifecycle import Service
from tests.harness.procs import (
    CALL_TIMEOUT,
    IP,
    NETNS_DIR,
    HarnessError,
    http_get,
    in_netns,
    ip,
    ip_batch,
    remove_netns,
    run,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DAEMON_BIN = VENV_BIN / "pyroute2-cni"
# A different daemon command (e.g. a locally patched one) for debugging; forwarded into
# the UML guest like every PYROUTE2_CNI_* variable.
DAEMON_ENV = "PYROUTE2_CNI_LAB_DAEMON"
SHIM = REPO / "build" / "pyroute2-cni"
CRD_DIR = REPO / "kubernetes" / "crds" / "0.1"
DEFAULT_STATE_DIR = REPO / "lab-state"

# The metric of the RouteKeeperActor's route copies (pyroute2_cni.netlink.evpn_kernel.HOLD_METRIC;
# not imported: the lab's host side does not load pyroute2).
HOLD_METRIC = 60000
CNI_PLUGINS_DIR = "/usr/lib/cni"
RUN_ROOT = Path("/run/lab")

FABRIC_NS = "lab-fabric"
FABRIC_BRIDGE = "lab-ul"
UPLINK = "eth1"
SUBNET = "192.168.124"
RR_NAME = "lab-rr"
RR_ADDRESS = f"{SUBNET}.254"
# With real nodes: the guest's root namespace (the API server's) on the underlay, so the
# API server reaches each kubelet (exec, logs) and each node has a default route.
GATEWAY_LINK = "lab-gw"
GATEWAY_ADDRESS = f"{SUBNET}.250"
# With real nodes: a port the DaemonSet's pods find the API server at (the lab overlay's
# KUBERNETES_SERVICE_PORT); a test cluster has no Service network to reach it through.
NODE_API_PORT = 6443
ASN = 65000
METRICS_PORT = 24800
# Must exceed the longest FRR handler (config.frr_apply_bound: 300 s by default).
LAB_HEARTBEAT_TIMEOUT = 400
SYSTEM_VRF = 42
SYSTEM_TABLE = 42

CRD_NAMES = (
    "vrfdomains.cni.pyroute2.org",
    "vrfdomainbindings.cni.pyroute2.org",
    "vrfnodeconfigs.cni.pyroute2.org",
    "vrfnodestates.cni.pyroute2.org",
    "ipblocks.ipam.pyroute2.org",
)
CNI_GROUP, CNI_VERSION = "cni.pyroute2.org", "v1alpha1"
IPAM_GROUP, IPAM_VERSION = "ipam.pyroute2.org", "v1alpha1"

# Bounds, generous for User-Mode Linux (a process start costs ~20 ms there, an import seconds).
DAEMON_READY_TIMEOUT = 240.0
DAEMON_STOP_TIMEOUT = 15.0
POD_ADD_TIMEOUT = 120.0
CONVERGE_TIMEOUT = 90.0
# Until every daemon has seen a VRFDomain or binding just applied (a watch event).
VIEW_TIMEOUT = 30.0


class PrerequisiteError(HarnessError):
    """Something the lab needs is not installed or built; the message names the host command."""


def missing_prerequisites(*, daemons: bool = True) -> str:
    """What the lab needs but this machine lacks, as one line naming the host command that
    provides it; "" when nothing is missing.  The guest only checks: it never installs."""
    missing = [
        str(p)
        for p in [IP, PING, VTYSH, *(str(FRR_BIN / d) for d in FRR_DAEMONS)]
        if not os.access(p, os.X_OK)
    ]
    missing += [tool for tool in ("kubectl", "etcd") if shutil.which(tool) is None]
    if daemons:
        missing += [str(p) for p in (DAEMON_BIN, SHIM) if not os.access(p, os.X_OK)]
    if missing:
        return "missing: " + ", ".join(missing) + "; run `make deps venv shim` on the host first"
    if not os.access(kube_apiserver_path(), os.X_OK):
        return missing_build_message(kube_apiserver_path())
    return ""


# -- daemons ---------------------------------------------------------------------------------


def log_since(log: Path, offset: int) -> str:
    """What a daemon logged after byte ``offset`` of its log (e.g. its size before a round)."""
    with log.open(encoding="utf-8", errors="replace") as fh:
        fh.seek(offset)
        return fh.read()


def daemon_command() -> list[str]:
    """The DaemonSet's command, `pyroute2-cni` from the venv (or $PYROUTE2_CNI_LAB_DAEMON)."""
    override = os.environ.get(DAEMON_ENV, "").strip()
    return shlex.split(override) if override else [str(DAEMON_BIN)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pod:
    node: str
    namespace: str
    name: str
    uid: str
    netns: str
    container_id: str
    address: str
    prefixlen: int
    gateway: str
    result: dict[str, Any] = field(compare=False, hash=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(slots=True, kw_only=True)
class LabNode:
    index: int
    name: str
    address: str
    frr: FrrInstance
    run_dir: Path
    log_file: Path
    daemon: subprocess.Popen[bytes] | None = None

    @property
    def server_ini(self) -> Path:
        return self.run_dir / "server.ini"

    @property
    def socket_path(self) -> Path:
        return Path("/run/pyroute2-cni") / self.name / "cni.sock"

    @property
    def cni_bin_dir(self) -> Path:
        return self.run_dir / "bin"

    @property
    def cni_conf_dir(self) -> Path:
        return self.run_dir / "net.d"


@dataclass(frozen=True, slots=True, kw_only=True)
class LabOptions:
    state_dir: Path = DEFAULT_STATE_DIR
    nodes: int = 3
    pods_per_node: int = 2
    log_level: str = "info"
    # Extra server.ini lines per section, e.g. {"ipam": {"leak_grace": "30"}}.
    server_ini: dict[str, dict[str, str]] = field(default_factory=dict)
    progress: Callable[[str], None] | None = None
    # Real nodes (kubelets run the DaemonSet): no FRR, CRDs or Node objects from the lab,
    # a default route per node, the API relay also on NODE_API_PORT.
    real_nodes: bool = False


def _node_name(index: int) -> str:
    return f"lab-n{index}"


class Lab(Service):
    """A running lab; see the module docstring.  Not thread-safe except where noted."""

    def __init__(self, options: LabOptions | None = None) -> None:
        self.options = options or LabOptions()
        if not 1 <= self.options.nodes <= 200:
            raise HarnessError(f"nodes must be 1..200, got {self.options.nodes}")
        self.state_dir = self.options.state_dir.resolve()
        self.log_dir = self.state_dir / "logs"
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}
        self.api: ApiServer | None = None
        self.relay: ApiRelay | None = None
        self._client: Any = None
        self.nodes: dict[str, LabNode] = {}
        for i in range(1, self.options.nodes + 1):
            name = _node_name(i)
            self.nodes[name] = LabNode(
                index=i,
                name=name,
                address=f"{SUBNET}.{i}",
                frr=FrrInstance(name),
                run_dir=RUN_ROOT / name,
                log_file=self.log_dir / f"{name}-daemon.log",
            )
        self.pods: list[Pod] = []
        self.rr: FrrInstance | None = None
        self.border: FrrInstance | None = None  # the external scenario's (lab_external)
        self.scenarios: dict[str, str] = {}
        # What summary() reports instead, when something else runs the nodes (kube_lab).
        self.summarizer: Callable[[], tuple[str, bool]] | None = None
        self._lock = threading.Lock()

    # -- context manager ----------------------------------------------------------------

    # -- progress -------------------------------------------------------------------------

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def progress(self, message: str) -> None:
        line = f"lab: [{self.elapsed():6.1f}s] {message}"
        if self.options.progress is not None:
            self.options.progress(line)
        else:
            print(line, flush=True)

    def _mark(self, name: str) -> None:
        self.timings[name] = self.elapsed()

    # -- start / stop -------------------------------------------------------------------

    def start(self, *, daemons: bool = True, pods: bool = True) -> None:
        """API server, underlay, FRR, daemons, pods.  The API server (slowest: ~33 s under
        UML) starts in this thread (its children die with the thread that started them)
        while the namespaces and FRR come up in another."""
        self.check_prerequisites(daemons=daemons)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._cleanup_kernel()
        fabric_errors: list[BaseException] = []

        def fabric() -> None:
            try:
                self._create_fabric()
                self._mark("fabric")
                self.progress(f"underlay {FABRIC_BRIDGE} and {len(self.nodes)} node namespaces up")
                if self.options.real_nodes:
                    self._add_gateway()
                    return  # FRR runs in the DaemonSet's pods
                with ThreadPoolExecutor(len(self.nodes)) as pool:
                    list(pool.map(lambda n: n.frr.start(FRR_BASE_CONFIG), self.nodes.values()))
                self._mark("frr")
                self.progress(f"FRR running in {', '.join(self.nodes)}")
            except BaseException as exc:
                fabric_errors.append(exc)

        worker = threading.Thread(target=fabric, name="lab-fabric")
        worker.start()
        try:
            self.progress("starting etcd + kube-apiserver")
            self.api = ApiServer(log_dir=self.log_dir, kubeconfig_path=self.kubeconfig)
            self.api.start()
            self._mark("apiserver")
            self.progress(f"API server ready in {self.api.start_seconds:.1f} s at {self.api.url}")
            self._setup_api()
            self._mark("api-objects")
        finally:
            worker.join()
        if fabric_errors:
            raise fabric_errors[0]
        assert self.api is not None
        self.relay = ApiRelay(int(self.api.url.rsplit(":", 1)[1]))
        for name in self.nodes:
            self.relay.add(name)
            if self.options.real_nodes:
                self.relay.add(name, NODE_API_PORT)
        if not daemons:
            return
        self.start_daemons()
        if pods:
            self.create_pods()

    def check_prerequisites(self, *, daemons: bool = True) -> None:
        problem = missing_prerequisites(daemons=daemons)
        if problem:
            raise PrerequisiteError(problem)
        if os.geteuid() != 0:
            raise HarnessError("the lab needs root (network namespaces, FRR)")
        probe = run([str(REPO / "scripts" / "kernel-has-vrf"), "--verbose"], check=False)
        if probe.returncode != 0:
            raise HarnessError(
                f"this kernel has no VRF: {probe.stderr.strip()}; use scripts/lab up"
            )

    def stop(self) -> None:
        """Stop daemons, FRR, namespaces and the API server; leave nothing behind."""
        self.progress("stopping")
        statuses = []
        for node in self.nodes.values():
            with contextlib.suppress(Exception):
                if node.daemon is not None:
                    statuses.append(f"{node.name} {self.stop_daemon(node.name)}")
        if statuses:
            self.progress("daemons stopped with SIGTERM, exit status: " + ", ".join(statuses))
        extra = [f for f in (self.rr, self.border) if f is not None]
        for frr in [n.frr for n in self.nodes.values()] + extra:
            with contextlib.suppress(Exception):
                frr.remove()
        self._cleanup_kernel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None
        if self.relay is not None:
            self.relay.close()
            self.relay = None
        if self.api is not None:
            self.api.stop()
            self.api = None
        self.pods.clear()
        self.progress("stopped")

    def _lab_namespaces(self) -> list[str]:
        if not NETNS_DIR.is_dir():
            return []
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(("lab-", "pod-lab-")))

    def _cleanup_kernel(self) -> None:
        """Remove every lab namespace, FRR directory and per-node runtime directory."""
        for name in self._lab_namespaces():
            if name != FABRIC_NS:
                remove_netns(name)
        remove_netns(FABRIC_NS)
        for base in (Path("/etc/frr"), Path("/run/frr"), Path("/run/pyroute2-cni")):
            for path in base.glob("lab-*"):
                shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(RUN_ROOT, ignore_errors=True)

    # -- underlay ------------------------------------------------------------------------

    def _create_fabric(self) -> None:
        run([IP, "netns", "add", FABRIC_NS])
        ip_batch(
            [
                f"link add {FABRIC_BRIDGE} type bridge stp_state 0",
                f"link set {FABRIC_BRIDGE} up",
                "link set lo up",
            ],
            netns=FABRIC_NS,
        )
        for node in self.nodes.values():
            self.add_underlay_host(node.name, node.address, f"ul-n{node.index}")

    def _add_gateway(self) -> None:
        """The root namespace on the underlay (GATEWAY_ADDRESS) and a default route to it
        in every node: a real node has one, and the daemon's default VTEP is the interface
        of the default route.  The root namespace does not forward: nothing leaves."""
        ip("link", "add", GATEWAY_LINK, "type", "veth", "peer", "name", "ul-gw", "netns", FABRIC_NS)
        ip_batch([f"link set ul-gw master {FABRIC_BRIDGE}", "link set ul-gw up"], FABRIC_NS)
        ip("addr", "add", f"{GATEWAY_ADDRESS}/24", "dev", GATEWAY_LINK)
        ip("link", "set", GATEWAY_LINK, "up")
        for node in self.nodes.values():
            ip_batch([f"route replace default via {GATEWAY_ADDRESS} dev {UPLINK}"], node.name)

    def add_underlay_host(self, netns: str, address: str, port: str) -> None:
        run([IP, "netns", "add", netns])
        ip(
            "link",
            "add",
            port,
            "netns",
            FABRIC_NS,
            "type",
            "veth",
            "peer",
            "name",
            UPLINK,
            "netns",
            netns,
        )
        ip_batch([f"link set {port} master {FABRIC_BRIDGE}", f"link set {port} up"], FABRIC_NS)
        ip_batch(
            ["link set lo up", f"addr add {address}/24 dev {UPLINK}", f"link set {UPLINK} up"],
            netns,
        )
        # A Kubernetes node forwards (kubeadm's preflight insists); a fresh namespace does not.
        run(in_netns(netns, ["/usr/sbin/sysctl", "-qw", "net.ipv4.ip_forward=1"]))

    # -- API objects ---------------------------------------------------------------------

    def client(self) -> Any:
        if self._client is None:
            if self.api is None:
                raise HarnessError("the API server is not running")
            self._client = self.api.api_client()
        return self._client

    def core(self) -> Any:
        import kubernetes.client

        return kubernetes.client.CoreV1Api(self.client())

    def custom(self) -> Any:
        import kubernetes.client

        return kubernetes.client.CustomObjectsApi(self.client())

    def kubectl(self, *args: str, check: bool = True, timeout: float = CALL_TIMEOUT) -> str:
        proc = run(
            ["kubectl", "--kubeconfig", str(self.kubeconfig), *args], check=check, timeout=timeout
        )
        return proc.stdout + (proc.stderr if proc.returncode else "")

    def _setup_api(self) -> None:
        for namespace in ("default", "test02", "test03"):
            self.ensure_namespace(namespace)
        if self.options.real_nodes:
            return  # the CRDs are installed as the README says; kubelets register the nodes
        # --validate=false: kubectl cannot check the CEL rules against a 1.20 server
        # (the server drops them); see tests/api/test_crds.py.
        self.kubectl("apply", "--validate=false", "-k", str(CRD_DIR))
        self.kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{name}" for name in CRD_NAMES),
        )
        self.progress("CRDs applied and Established")
        for node in self.nodes.values():
            self.register_node(node.name, node.address)
        self.progress(f"namespaces and Node objects {', '.join(self.nodes)} registered")

    def ensure_namespace(self, name: str) -> None:
        """The namespace and its `default` ServiceAccount (no controller-manager makes it)."""
        import kubernetes.client

        core = self.core()
        try:
            core.create_namespace({"metadata": {"name": name}})
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
        try:
            core.create_namespaced_service_account(name, {"metadata": {"name": "default"}})
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise

    def register_node(self, name: str, address: str) -> None:
        register_node(self.core(), name, address, "pyroute2-cni lab node")

    def apply_object(self, obj: dict[str, Any]) -> None:
        """Create or replace a cluster-scoped custom object (VRFDomain, binding, node config)."""
        import kubernetes.client

        group, version = obj["apiVersion"].split("/")
        plural = {
            "VRFDomain": "vrfdomains",
            "VRFDomainBinding": "vrfdomainbindings",
            "VRFNodeConfig": "vrfnodeconfigs",
        }[obj["kind"]]
        custom = self.custom()
        try:
            custom.create_cluster_custom_object(group, version, plural, obj)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            current = custom.get_cluster_custom_object(
                group, version, plural, obj["metadata"]["name"]
            )
            obj = {
                **obj,
                "metadata": {
                    **obj["metadata"],
                    "resourceVersion": current["metadata"]["resourceVersion"],
                },
            }
            custom.replace_cluster_custom_object(
                group, version, plural, obj["metadata"]["name"], obj
            )

    def delete_object(self, plural: str, name: str) -> None:
        import kubernetes.client

        try:
            self.custom().delete_cluster_custom_object(CNI_GROUP, CNI_VERSION, plural, name)
        except kubernetes.client.ApiException as exc:
            if exc.status != 404:
                raise

    def ipblocks(self) -> list[dict[str, Any]]:
        items = self.custom().list_cluster_custom_object(IPAM_GROUP, IPAM_VERSION, "ipblocks")
        return list(items.get("items", []))

    def vrfdomains(self) -> dict[int, dict[str, Any]]:
        items = self.custom().list_cluster_custom_object(CNI_GROUP, CNI_VERSION, "vrfdomains")
        return {int(d["spec"]["vrf"]): d for d in items.get("items", [])}

    # -- daemons -------------------------------------------------------------------------

    def write_server_ini(self, node: LabNode) -> None:
        sections: dict[str, dict[str, str]] = {
            "logging": {"level": self.options.log_level},
            "daemon": {
                "node_name": node.name,
                "socket": f"ipc://{node.socket_path}",
                # Peers probe each other's /livez over the underlay (EVPN hold).
                "metrics_address": "0.0.0.0",
                "metrics_port": str(METRICS_PORT),
                "kubeconfig": str(self.kubeconfig),
                "cni_bin_dir": str(node.cni_bin_dir),
                "cni_conf_dir": str(node.cni_conf_dir),
                "install_cni": "true",
                "shim_source": str(SHIM),
                "netns_dir": str(NETNS_DIR),
                "state_dir": str(node.socket_path.parent),
            },
            "frr": {"config_file": str(node.frr.config_file), "pathspace": node.name},
            "netlink": {"vtep_interface": UPLINK},
            # Under UML with several nodes on 2 cores one frr-reload.py --test + --reload
            # takes 10-30 s and blocks the FRR actor that long; the default heartbeat
            # timeout (30 s) then declares it hung and restarts it mid-reload, forever.
            "supervisor": {"heartbeat_timeout": str(LAB_HEARTBEAT_TIMEOUT)},
        }
        for section, values in self.options.server_ini.items():
            sections.setdefault(section, {}).update(values)
        text = "".join(
            f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items()) + "\n"
            for name, values in sections.items()
        )
        node.run_dir.mkdir(parents=True, exist_ok=True)
        node.server_ini.write_text(text)

    def start_daemon(self, name: str) -> None:
        """Start the node's daemon the way the DaemonSet does (NODE_NAME, server.ini)."""
        node = self.nodes[name]
        if node.daemon is not None and node.daemon.poll() is None:
            raise HarnessError(f"the daemon of {name} is already running")
        self.write_server_ini(node)
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "NODE_NAME": name,
        }
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with node.log_file.open("ab") as log:
            log.write(f"--- lab: starting the daemon of {name} at {time.ctime()}\n".encode())
            log.flush()
            node.daemon = subprocess.Popen(
                in_netns(name, [*daemon_command(), "daemon", "--config", str(node.server_ini)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    def daemon_ready(self, name: str) -> bool:
        node = self.nodes[name]
        if node.daemon is None:
            return False
        if node.daemon.poll() is not None:
            raise HarnessError(
                f"the daemon of {name} exited with {node.daemon.returncode}; "
                f"last lines of {node.log_file}:\n{self.log_tail(name)}"
            )
        try:
            status, _ = http_get(name, METRICS_PORT, "/readyz", timeout=5)
        except OSError:
            return False
        return status == 200

    def metric(self, name: str, metric: str) -> float:
        """The sum of a metric's samples on a node's /metrics (0 when absent)."""
        status, body = http_get(name, METRICS_PORT, "/metrics", timeout=5)
        if status != 200:
            raise HarnessError(f"/metrics of {name} answered {status}")
        return sum(
            sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
            if sample.name == metric
        )

    def readyz(self, name: str) -> str:
        try:
            status, body = http_get(name, METRICS_PORT, "/readyz", timeout=5)
        except OSError as exc:
            return f"unreachable: {exc}"
        return f"{status} {body.strip()}"

    def wait_daemon_ready(self, name: str, timeout: float = DAEMON_READY_TIMEOUT) -> None:
        try:
            wait_until(lambda: self.daemon_ready(name), timeout, f"/readyz of {name}", 0.25)
        except HarnessError as exc:
            raise HarnessError(
                f"{exc}; /readyz says: {self.readyz(name)}; last lines of "
                f"{self.nodes[name].log_file}:\n{self.log_tail(name)}"
            ) from None

    def start_daemons(self) -> None:
        for name in self.nodes:
            self.start_daemon(name)
        self.progress(f"{len(self.nodes)} daemons started; waiting for /readyz")
        errors: list[BaseException] = []

        def wait(name: str) -> None:
            try:
                self.wait_daemon_ready(name)
                self.progress(f"daemon {name} ready")
            except BaseException as exc:
                errors.append(exc)

        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(wait, self.nodes))
        if errors:
            raise errors[0]
        self._mark("daemons")

    def stop_daemon(self, name: str, sig: signal.Signals = signal.SIGTERM) -> int | None:
        """Stop the daemon (SIGTERM, bounded, then SIGKILL); return its exit status."""
        node = self.nodes[name]
        proc = node.daemon
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=DAEMON_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=DAEMON_STOP_TIMEOUT)
        node.daemon = None
        return proc.returncode

    def restart_daemon(self, name: str) -> int | None:
        """Stop (SIGTERM), start, wait for /readyz; returns the old daemon's exit status."""
        status = self.stop_daemon(name)
        self.start_daemon(name)
        self.wait_daemon_ready(name)
        return status

    def restart_frr(self, name: str, hard: bool = False) -> None:
        frr = self.nodes[name].frr
        frr.stop(hard=hard)
        frr.start()

    def stop_node(self, name: str) -> None:
        """Node failure: the node drops off the underlay (its switch port goes down, so
        nothing of it answers any more, as when it loses power), then its daemon and its
        FRR stop.  Its namespace and kernel state stay for start_node."""
        ip("link", "set", f"ul-n{self.nodes[name].index}", "down", netns=FABRIC_NS)
        self.stop_daemon(name)
        self.nodes[name].frr.stop()

    def start_node(self, name: str) -> None:
        ip("link", "set", f"ul-n{self.nodes[name].index}", "up", netns=FABRIC_NS)
        self.nodes[name].frr.start()
        self.start_daemon(name)
        self.wait_daemon_ready(name)

    def log_tail(self, name: str, lines: int = 12) -> str:
        """The daemon log's last traceback (where the trouble usually is) and last lines."""
        try:
            text = self.nodes[name].log_file.read_text(errors="replace")
        except OSError:
            return "(no log)"
        all_lines = text.splitlines()
        out: list[str] = []
        starts = [i for i, line in enumerate(all_lines) if line.startswith("Traceback")]
        if starts:
            block = all_lines[starts[-1] : starts[-1] + 40]
            end = next((i for i, line in enumerate(block[1:], 1) if not line.startswith(" ")), 0)
            out += [*block[: end + 1], "..."]
        return "\n".join(out + all_lines[-lines:])

    # -- pods ----------------------------------------------------------------------------

    def cni_config(self, name: str) -> dict[str, Any]:
        """What the kubelet feeds the first plugin: its conf plus the list's name and version."""
        node = self.nodes[name]
        path = node.cni_conf_dir / "10-pyroute2-cni.conflist"
        conflist = wait_until(
            lambda: json.loads(path.read_text()) if path.is_file() else None,
            30,
            f"the conflist the daemon of {name} installs at {path}",
        )
        plugin = dict(conflist["plugins"][0])
        return {"cniVersion": conflist["cniVersion"], "name": conflist["name"], **plugin}

    def cni(
        self,
        name: str,
        command: str,
        *,
        container_id: str,
        netns: str,
        pod_namespace: str = "",
        pod_name: str = "",
        pod_uid: str = "",
        config: dict[str, Any] | None = None,
        ifname: str = "eth0",
        timeout: float = 60.0,
    ) -> tuple[int, dict[str, Any] | None, str]:
        """Exec the installed shim in the node's namespace as the kubelet does."""
        node = self.nodes[name]
        args = ["IgnoreUnknown=1"]
        if pod_namespace:
            args += [
                f"K8S_POD_NAMESPACE={pod_namespace}",
                f"K8S_POD_NAME={pod_name}",
                f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
                f"K8S_POD_UID={pod_uid}",
            ]
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": str(NETNS_DIR / netns) if netns else "",
            "CNI_IFNAME": ifname,
            "CNI_ARGS": ";".join(args),
            "CNI_PATH": f"{node.cni_bin_dir}:{CNI_PLUGINS_DIR}",
        }
        conf = config if config is not None else self.cni_config(name)
        shim = node.cni_bin_dir / "pyroute2-cni"
        proc = run(
            in_netns(name, [str(shim)]),
            input=json.dumps(conf),
            env=env,
            check=False,
            timeout=timeout,
        )
        result: dict[str, Any] | None = None
        with contextlib.suppress(json.JSONDecodeError):
            parsed = json.loads(proc.stdout) if proc.stdout.strip() else None
            result = parsed if isinstance(parsed, dict) else None
        return proc.returncode, result, proc.stdout + proc.stderr

    def add_pod(self, node: str, namespace: str, name: str) -> Pod:
        """Pod object, netns, then CNI ADD through the shim (retried like the kubelet does)."""
        import kubernetes.client

        core = self.core()
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {"app": "lab"}},
            "spec": {
                "nodeName": node,
                "automountServiceAccountToken": False,
                "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}],
            },
        }
        try:
            created = core.create_namespaced_pod(namespace, body)
        except kubernetes.client.ApiException as exc:
            if exc.status != 409:
                raise
            core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
            wait_until(lambda: not self._pod_exists(namespace, name), 30, f"old pod {name} gone")
            created = core.create_namespaced_pod(namespace, body)
        uid = str(created.metadata.uid)
        # pod-<node>-<i> for the system pods (pod-n1-2 on lab-n1: pod-lab-n1-2), else
        # pod-<node>-<pod name>.
        short = re.fullmatch(rf"pod-n{self.nodes[node].index}-(\d+)", name)
        netns = f"pod-{node}-{short.group(1) if short else name}"[:60]
        remove_netns(netns)
        run([IP, "netns", "add", netns])
        ip("link", "set", "lo", "up", netns=netns)
        container_id = uuid.uuid4().hex + uuid.uuid4().hex
        config = self.cni_config(node)
        deadline = time.monotonic() + POD_ADD_TIMEOUT
        attempts = 0
        while True:
            attempts += 1
            rc, result, output = self.cni(
                node,
                "ADD",
                container_id=container_id,
                netns=netns,
                pod_namespace=namespace,
                pod_name=name,
                pod_uid=uid,
                config=config,
            )
            if rc == 0 and result is not None and result.get("ips"):
                break
            # The kubelet tears a failed sandbox down with DEL before it tries again.
            self.cni(
                node,
                "DEL",
                container_id=container_id,
                netns=netns,
                pod_namespace=namespace,
                pod_name=name,
                pod_uid=uid,
                config=config,
            )
            if time.monotonic() >= deadline:
                raise HarnessError(
                    f"CNI ADD of {namespace}/{name} on {node} failed {attempts} times; "
                    f"last: exit {rc}: {output.strip()}"
                )
            time.sleep(1.0)  # the kubelet's retry backoff, not synchronisation
        address, _, plen = str(result["ips"][0]["address"]).partition("/")
        pod = Pod(
            node=node,
            namespace=namespace,
            name=name,
            uid=uid,
            netns=netns,
            container_id=container_id,
            address=address,
            prefixlen=int(plen),
            gateway=str(result["ips"][0].get("gateway", "")),
            result=result,
        )
        with contextlib.suppress(kubernetes.client.ApiException):
            core.patch_namespaced_pod_status(
                name,
                namespace,
                {
                    "status": {
                        "phase": "Running",
                        "podIP": address,
                        "podIPs": [{"ip": address}],
                        "hostIP": self.nodes[node].address,
                    }
                },
            )
        with self._lock:
            self.pods.append(pod)
        return pod

    def _pod_exists(self, namespace: str, name: str) -> bool:
        import kubernetes.client

        try:
            self.core().read_namespaced_pod(name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def delete_pod(self, pod: Pod) -> None:
        """CNI DEL, then the netns and the Pod object, as the kubelet does."""
        import kubernetes.client

        rc, _, output = self.cni(
            pod.node,
            "DEL",
            container_id=pod.container_id,
            netns=pod.netns,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            pod_uid=pod.uid,
        )
        remove_netns(pod.netns)
        with contextlib.suppress(kubernetes.client.ApiException):
            self.core().delete_namespaced_pod(pod.name, pod.namespace, grace_period_seconds=0)
        with self._lock:
            self.pods = [p for p in self.pods if p.container_id != pod.container_id]
        if rc != 0:
            raise HarnessError(f"CNI DEL of {pod.label} failed: {output.strip()}")

    def pod_has_address(self, pod: Pod, ifname: str = "eth0") -> bool:
        """Whether the pod's netns has `ifname` with the address its ADD returned."""
        out = ip("-4", "-o", "addr", "show", "dev", ifname, netns=pod.netns, check=False)
        return any(f"inet {pod.address}/" in line for line in out.splitlines())

    def add_pods(self, specs: Sequence[tuple[str, str, str]]) -> list[Pod]:
        """(node, namespace, name) in parallel; the daemon serves many ADDs at once."""
        with ThreadPoolExecutor(max(1, min(len(specs), 6))) as pool:
            return list(pool.map(lambda s: self.add_pod(*s), specs))

    def create_pods(self) -> None:
        specs = [
            (node, "default", f"pod-n{self.nodes[node].index}-{j}")
            for node in self.nodes
            for j in range(1, self.options.pods_per_node + 1)
        ]
        if not specs:
            return
        pods = self.add_pods(specs)
        self._mark("pods")
        self.progress(
            f"{len(pods)} pods added through the shim: "
            + ", ".join(f"{p.name}={p.address}" for p in pods)
        )

    def pods_in(self, namespace: str) -> list[Pod]:
        """The namespace's pods, by node, then name."""
        with self._lock:
            pods = [p for p in self.pods if p.namespace == namespace]
        return sorted(pods, key=lambda p: (self.nodes[p.node].index, p.name))

    def system_pods(self) -> list[Pod]:
        return self.pods_in("default")

    # -- data plane checks ---------------------------------------------------------------

    def ping(self, src: Pod, address: str, count: int = 1, wait: float = 1.0) -> bool:
        argv = [PING, "-n", "-q", "-c", str(count), "-W", f"{wait:g}", address]
        return (
            run(in_netns(src.netns, argv), check=False, timeout=count * wait + 30).returncode == 0
        )

    def ping_pairs(
        self, sources: Sequence[Pod], targets: Sequence[Pod]
    ) -> dict[tuple[str, str], bool]:
        """Every source pings every other target once, in parallel."""
        pairs = [(a, b) for a in sources for b in targets if a is not b]
        if not pairs:
            return {}
        with ThreadPoolExecutor(min(len(pairs), 8)) as pool:
            results = list(pool.map(lambda ab: self.ping(ab[0], ab[1].address), pairs))
        return {(a.label, b.label): ok for (a, b), ok in zip(pairs, results, strict=True)}

    def ping_matrix(self, pods: Sequence[Pod]) -> dict[tuple[str, str], bool]:
        return self.ping_pairs(pods, pods)

    def wait_matrix(
        self, pods: Sequence[Pod], timeout: float = CONVERGE_TIMEOUT
    ) -> tuple[dict[tuple[str, str], bool], float]:
        """Ping the pairs that failed again until all reply or ``timeout``; (matrix, seconds)."""
        began = time.monotonic()
        matrix = self.ping_matrix(pods)
        by_label = {p.label: p for p in pods}
        while not all(matrix.values()) and time.monotonic() - began < timeout:
            failed = [k for k, ok in matrix.items() if not ok]
            with ThreadPoolExecutor(min(len(failed), 8)) as pool:
                again = list(
                    pool.map(lambda k: self.ping(by_label[k[0]], by_label[k[1]].address), failed)
                )
            matrix.update(zip(failed, again, strict=True))
        return matrix, time.monotonic() - began

    def vrf_routes(self, node: str, table: int, protocol: str | None = "bgp") -> set[str]:
        """Destinations in a node's VRF table (by default only the ones BGP installed)."""
        out = run([IP, "-n", node, "-j", "route", "show", "table", str(table)], check=False).stdout
        try:
            routes = json.loads(out or "[]")
        except json.JSONDecodeError:
            return set()
        return {str(r["dst"]) for r in routes if protocol is None or r.get("protocol") == protocol}

    def held_copies(self, node: str, table: int) -> set[str]:
        """Destinations of the RouteKeeperActor's route copies in a node's VRF table."""
        out = run([IP, "-n", node, "-j", "route", "show", "table", str(table)], check=False).stdout
        try:
            routes = json.loads(out or "[]")
        except json.JSONDecodeError:
            return set()
        return {str(r["dst"]) for r in routes if r.get("metric") == HOLD_METRIC}

    def expected_remote_routes(
        self, vrf: int, nodes: Sequence[str] | None = None
    ) -> dict[str, set[str]]:
        """Per node: the blocks of the other given nodes in ``vrf``."""
        live = list(nodes) if nodes is not None else list(self.nodes)
        blocks = [b["spec"] for b in self.ipblocks() if int(b["spec"]["vrf"]) == vrf]
        return {
            n: {str(b["cidr"]) for b in blocks if b["node"] != n and b["node"] in live}
            for n in live
        }

    def missing_routes(
        self, vrf: int, table: int, nodes: Sequence[str] | None = None
    ) -> dict[str, set[str]]:
        expected = self.expected_remote_routes(vrf, nodes)
        missing = {n: want - self.vrf_routes(n, table) for n, want in expected.items()}
        return {n: m for n, m in missing.items() if m}

    def wait_converged(
        self,
        vrf: int = SYSTEM_VRF,
        table: int = SYSTEM_TABLE,
        nodes: Sequence[str] | None = None,
        timeout: float = CONVERGE_TIMEOUT,
    ) -> float:
        """Until every node's VRF table has a BGP route for every other node's block."""
        began = time.monotonic()
        last: dict[str, set[str]] = {}

        def probe() -> bool:
            nonlocal last
            last = self.missing_routes(vrf, table, nodes)
            return not last

        try:
            wait_until(probe, timeout, f"routes of vrf {vrf} on every node", 0.5)
        except HarnessError as exc:
            raise HarnessError(f"{exc}; missing: {last}") from None
        return time.monotonic() - began

    def wait_sessions(
        self, nodes: Sequence[str] | None = None, timeout: float = CONVERGE_TIMEOUT
    ) -> None:
        names = list(nodes) if nodes is not None else list(self.nodes)

        def established() -> bool:
            for n in names:
                sessions = self.nodes[n].frr.bgp_sessions()
                if not sessions or any(s != "Established" for s in sessions.values()):
                    return False
            return True

        wait_until(established, timeout, f"BGP sessions of {', '.join(names)} Established", 0.5)

    def cni_condition(self, node: str) -> tuple[str, str, str]:
        """(status, reason, message) of the node's Pyroute2CNIReady condition."""
        for c in self.core().read_node_status(node).status.conditions or []:
            if c.type == "Pyroute2CNIReady":
                return str(c.status), str(c.reason), str(c.message)
        return "", "", ""

    def wait_settled(self, timeout: float = CONVERGE_TIMEOUT) -> None:
        """Until every node is at rest: its Pyroute2CNIReady condition says DaemonReady (FRR
        applied, sessions up, every expected VNI known), it holds no EVPN entry, and its
        sessions are Established.  A test that measures one disturbance starts here, so it
        does not measure the tail of the previous test's (an FRR reload still running)."""
        state: dict[str, str] = {}

        def at_rest() -> bool:
            for name in self.nodes:
                reason = self.cni_condition(name)[1] or "no condition"
                held = self.metric(name, "pyroute2_cni_evpn_held_entries")
                sessions = self.nodes[name].frr.bgp_sessions()
                state[name] = f"{reason}, {held:g} held, sessions {sessions}"
                if reason != "DaemonReady" or held or not sessions:
                    return False
                if any(s != "Established" for s in sessions.values()):
                    return False
            return True

        try:
            wait_until(at_rest, timeout, "every node at rest", 0.5)
        except HarnessError as exc:
            raise HarnessError(f"{exc}; last seen: {state}") from None

    # -- summary ---------------------------------------------------------------------------

    def bgp_summary(self, name: str) -> str:
        frr = self.nodes[name].frr if name in self.nodes else self.rr
        if frr is None:
            return ""
        out = frr.vtysh("show bgp l2vpn evpn summary", check=False)
        lines = out.splitlines()
        start = next((i for i, line in enumerate(lines) if line.startswith("Neighbor")), None)
        return "\n".join(lines[start:] if start is not None else lines).strip()

    def render_matrix(self, pods: Sequence[Pod], matrix: dict[tuple[str, str], bool]) -> str:
        if not pods:
            return "  (no pods)"
        width = max(len(p.name) for p in pods)
        header = " " * (width + 18) + " ".join(f"{i + 1:>2}" for i in range(len(pods)))
        rows = [header]
        for i, src in enumerate(pods):
            cells = []
            for dst in pods:
                if src is dst:
                    cells.append(" ·")
                else:
                    cells.append(" ✓" if matrix.get((src.label, dst.label)) else " ✗")
            rows.append(f"{i + 1:>2} {src.name:<{width}} {src.address:<15}" + " ".join(cells))
        return "\n".join(rows)

    def _node_line(self, node: LabNode) -> str:
        daemon = "running" if node.daemon and node.daemon.poll() is None else "stopped"
        ready = "ready" if daemon == "running" and self._quiet_ready(node.name) else "not ready"
        frr = "FRR running" if node.frr.running() else "FRR stopped"
        return f"  {node.name}  {node.address:<15} daemon {daemon}, {ready}; {frr}"

    def summary(self) -> tuple[str, bool]:
        """The text ``scripts/lab up`` prints, and whether the ping matrix is all green.

        The slow parts (a process each under UML) run side by side."""
        if self.summarizer is not None:
            return self.summarizer()
        out: list[str] = []
        pods = self.system_pods()
        with contextlib.suppress(HarnessError):
            self.wait_converged(timeout=60)
        peers = [*self.nodes, *([RR_NAME] if self.rr else [])]
        with ThreadPoolExecutor(4) as pool:
            matrix_f = pool.submit(self.ping_matrix, pods)
            blocks_f = pool.submit(self.kubectl, "get", "ipblocks.ipam.pyroute2.org", check=False)
            states_f = pool.submit(self.kubectl, "get", "vrfnodestates", check=False)
            bgp = list(pool.map(self.bgp_summary, peers))
            nodes = list(pool.map(self._node_line, self.nodes.values()))
            blocks = blocks_f.result()
            states = states_f.result()
            matrix = matrix_f.result()
        out.append(f"pyroute2-cni lab: {len(self.nodes)} nodes, {len(self.pods)} pods")
        out.append("")
        out.append("Nodes:")
        out += nodes
        out.append("")
        out.append("BGP sessions (vtysh -N <node> -c 'show bgp l2vpn evpn summary'):")
        for name, text in zip(peers, bgp, strict=True):
            out.append(f"  {name}:")
            out += [f"    {line}".rstrip() for line in text.splitlines()]
        out.append("")
        out.append("kubectl get ipblocks.ipam.pyroute2.org:")
        out += [f"  {line}" for line in blocks.splitlines()]
        out.append("")
        out.append("kubectl get vrfnodestates (each daemon's view of its node):")
        out += [f"  {line}" for line in states.splitlines()]
        out.append("")
        green = bool(matrix) and all(matrix.values())
        ok = sum(matrix.values())
        out.append(f"Ping matrix, system VRF (row pings column once): {ok}/{len(matrix)} replied")
        out.append(self.render_matrix(pods, matrix))
        for name, text in self.scenarios.items():
            out.append("")
            out.append(f"Scenario {name}:")
            out += [f"  {line}" for line in text.splitlines()]
        out.append("")
        out.append(f"kubeconfig: {self.kubeconfig}")
        out.append(f"logs: {self.log_dir}")
        return "\n".join(out), green

    def _quiet_ready(self, name: str) -> bool:
        try:
            return self.daemon_ready(name)
        except HarnessError:
            return False

    # -- scenarios -------------------------------------------------------------------------

    def domain_object(
        self, name: str, vrf: int, table: int, prefix: str, vni: int, kind: str
    ) -> dict[str, Any]:
        return {
            "apiVersion": f"{CNI_GROUP}/{CNI_VERSION}",
            "kind": "VRFDomain",
            "metadata": {"name": name},
            "spec": {
                "vrf": vrf,
                "table": table,
                "prefix": prefix,
                "prefixlen": 16,
                "ipblocklen": 26,
                "attachments": [{"type": kind, "vni": vni, "port": 4789}],
            },
        }

    def binding_object(self, name: str, namespace: str, domain: str) -> dict[str, Any]:
        return {
            "apiVersion": f"{CNI_GROUP}/{CNI_VERSION}",
            "kind": "VRFDomainBinding",
            "metadata": {"name": name},
            "spec": {"namespaceRef": {"name": namespace}, "vrfDomainRef": {"name": domain}},
        }

    def wait_cluster_view(self, timeout: float = VIEW_TIMEOUT) -> None:
        """Until every daemon's CNI server knows the VRFDomains and bindings in the API:
        a pod added before its namespace's binding is known joins the default domain."""
        custom = self.custom()

        def items(plural: str) -> list[dict[str, Any]]:
            found = custom.list_cluster_custom_object(CNI_GROUP, CNI_VERSION, plural)
            return list(found["items"])

        domains = len(items("vrfdomains"))
        bound = len({b["spec"]["namespaceRef"]["name"] for b in items("vrfdomainbindings")})

        def known() -> bool:
            return all(
                self.metric(n, "pyroute2_cni_vrfdomains_known") >= domains
                and self.metric(n, "pyroute2_cni_bindings_known") >= bound
                for n in self.nodes
            )

        wait_until(known, timeout, f"{domains} VRFDomains, {bound} bindings on every node", 0.2)
