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

Command line (``scripts/lab`` is a thin wrapper around ``python -m tests.harness.lab``)::

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
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.harness.apiserver import ApiServer, kube_apiserver_path, missing_build_message
from tests.harness.kube_objects import register_node
from tests.harness.lifecycle import Service
from tests.harness.waiting import wait_for

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
DAEMON_BIN = VENV_BIN / "pyroute2-cni"
# A different daemon command (e.g. a locally patched one) for debugging; forwarded into
# the UML guest like every PYROUTE2_CNI_* variable.
DAEMON_ENV = "PYROUTE2_CNI_LAB_DAEMON"
PYTHON = VENV_BIN / "python"
SHIM = REPO / "build" / "pyroute2-cni"
CRD_DIR = REPO / "kubernetes" / "crds" / "0.1"
FRR_DAEMONS_FILE = REPO / "frr" / "daemons"
DEFAULT_STATE_DIR = REPO / "lab-state"

IP = "/usr/bin/ip"
PING = "/usr/bin/ping"
VTYSH = "/usr/bin/vtysh"
FRR_BIN = Path("/usr/lib/frr")
FRR_DAEMONS = ("zebra", "bgpd", "staticd")
# The metric of the RouteKeeperActor's route copies (pyroute2_cni.netlink.evpn_kernel.HOLD_METRIC;
# not imported: the lab's host side does not load pyroute2).
HOLD_METRIC = 60000
CNI_PLUGINS_DIR = "/usr/lib/cni"
NETNS_DIR = Path("/run/netns")
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
CALL_TIMEOUT = 60.0
FRR_START_TIMEOUT = 60.0
DAEMON_READY_TIMEOUT = 240.0
DAEMON_STOP_TIMEOUT = 15.0
POD_ADD_TIMEOUT = 120.0
CONVERGE_TIMEOUT = 90.0
# Until every daemon has seen a VRFDomain or binding just applied (a watch event).
VIEW_TIMEOUT = 30.0
UML_MEM = "3000M"
# Real nodes: the images unpacked on each node's containerd live in the guest's tmpfs.
KUBELETS_UML_MEM = "6000M"
DEFAULT_LIFETIME = 7200.0
UP_TIMEOUT = 900.0
DOWN_TIMEOUT = 180.0

T = TypeVar("T")


class LabError(RuntimeError):
    """The lab could not do what was asked; the message says what and where to look."""


class PrerequisiteError(LabError):
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


# -- small helpers ---------------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``probe`` until it returns a truthy value; LabError naming ``what`` on timeout."""
    return wait_for(probe, timeout, what, interval, error=LabError)


def run(
    argv: Sequence[str],
    *,
    timeout: float = CALL_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a bound; LabError (with its output) when it fails and ``check``."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{shlex.join(argv)}: no exit within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise LabError(
            f"{shlex.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = [IP, *(["-n", netns] if netns else []), *args]
    return run(argv, check=check).stdout


def ip_batch(commands: Sequence[str], netns: str | None = None) -> None:
    """Many iproute2 commands in one process (a process start is expensive under UML)."""
    argv = [IP, *(["-n", netns] if netns else []), "-batch", "-"]
    run(argv, input="".join(c + "\n" for c in commands))


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return [IP, "netns", "exec", netns, *argv] if netns else list(argv)


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    out = run([IP, "netns", "pids", name], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_pids(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait (bounded), SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def remove_netns(name: str) -> None:
    """Kill what runs in the namespace, delete its links, then the namespace itself."""
    if not netns_exists(name):
        return
    kill_pids(netns_pids(name))
    links = run([IP, "-n", name, "-j", "link", "show"], check=False).stdout.strip()
    with contextlib.suppress(ValueError):
        names = [
            str(link["ifname"]) for link in json.loads(links or "[]") if link["ifname"] != "lo"
        ]
        if names:
            run(
                [IP, "-n", name, "-batch", "-"],
                input="".join(f"link del {n}\n" for n in names),
                check=False,
            )
    run([IP, "netns", "del", name], check=False)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_socket(
    netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A socket that lives in ``netns``: made by a short-lived thread that entered it.

    Cheaper than a process (``ip netns exec``) under UML; the socket keeps its namespace
    after the thread went back.
    """
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(NETNS_DIR / netns, os.O_RDONLY)
                try:
                    _setns(target)
                    try:
                        made.append(socket.socket(family, kind))
                    finally:
                        _setns(own)
                finally:
                    os.close(target)
            finally:
                os.close(own)
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return made[0]


def http_get(netns: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path inside ``netns``; (status, body)."""
    with netns_socket(netns) as sock:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"bad HTTP response from {netns}:{port}{path}: {head[:80]!r}")
    return int(status_line[1]), body.decode(errors="replace")


class ApiRelay:
    """127.0.0.1:<port> inside each node namespace, relayed to the API server's loopback.

    On a real node the daemon reaches the API server over the node's network; here the
    API server listens on the root namespace's loopback (its certificate names 127.0.0.1),
    so each node namespace gets a TCP relay on the same address and port and the one
    kubeconfig works everywhere.  TLS passes through untouched.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self._listeners: list[socket.socket] = []
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def add(self, netns: str, port: int | None = None) -> None:
        """Listen in `netns` on 127.0.0.1:`port` (the API server's own port by default)."""
        listener = netns_socket(netns)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port if port is None else port))
        listener.listen(64)
        self._listeners.append(listener)
        threading.Thread(
            target=self._accept, args=(listener,), name=f"api-relay-{netns}", daemon=True
        ).start()

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            with self._lock:
                for sock in (src, dst):
                    if sock in self._conns:
                        self._conns.discard(sock)
                        sock.close()

    def close(self) -> None:
        self._closed.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        self._listeners.clear()
        with self._lock:
            conns = list(self._conns)
            self._conns.clear()
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def _write_atomic(path: Path, text: str) -> None:
    """Write, fsync, rename: the other side (host or guest, through hostfs) sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def daemon_command() -> list[str]:
    """The DaemonSet's command, `pyroute2-cni` from the venv (or $PYROUTE2_CNI_LAB_DAEMON)."""
    override = os.environ.get(DAEMON_ENV, "").strip()
    return shlex.split(override) if override else [str(DAEMON_BIN)]


def _frr_options() -> dict[str, list[str]]:
    """The daemon options the FRR container uses (frr/daemons), so the lab runs FRR the same."""
    options = {d: ["-P", "0"] for d in FRR_DAEMONS}
    options["watchfrr"] = []
    if FRR_DAEMONS_FILE.is_file():
        for line in FRR_DAEMONS_FILE.read_text().splitlines():
            m = re.match(r'^(\w+)_options="(.*)"\s*$', line.strip())
            if m and m.group(1) in options:
                options[m.group(1)] = shlex.split(m.group(2))
    return options


FRR_BASE_CONFIG = """\
frr defaults traditional
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
!
end
"""

# The route reflector of `scenario rr`: plain FRR, not a node; accepts any node of the
# underlay subnet as a client and reflects EVPN routes between them.
RR_CONFIG = f"""\
frr defaults traditional
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
!
router bgp {ASN}
 bgp router-id {RR_ADDRESS}
 bgp cluster-id {RR_ADDRESS}
 no bgp default ipv4-unicast
 timers bgp 3 9
 neighbor fabric peer-group
 neighbor fabric remote-as internal
 neighbor fabric timers connect 2
 bgp listen range {SUBNET}.0/24 peer-group fabric
 !
 address-family l2vpn evpn
  neighbor fabric activate
  neighbor fabric route-reflector-client
 exit-address-family
exit
!
end
"""


# -- FRR -----------------------------------------------------------------------------------


@contextlib.contextmanager
def frr_in_new_netns(name: str, config: str | None = None) -> Iterator[FrrInstance]:
    """A namespace of its own (lo up) with FRR in it, as kernel tests want it; the daemons,
    their directories and the namespace are gone afterwards."""
    ip("netns", "add", name)
    frr = FrrInstance(name)
    try:
        ip("link", "set", "lo", "up", netns=name)
        frr.start(config)
        yield frr
    finally:
        frr.remove()
        remove_netns(name)


class FrrInstance:
    """zebra + bgpd + staticd in network namespace ``name`` with FRR pathspace ``name``.

    Config in /etc/frr/<name>/frr.conf, vty sockets and pid files in /run/frr/<name>/, both
    owned by user frr (see notes/test-infra.md).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.conf_dir = Path("/etc/frr") / name
        self.run_dir = Path("/run/frr") / name
        self.config_file = self.conf_dir / "frr.conf"
        self.watchfrr_log = self.run_dir / "watchfrr.log"
        self._watchfrr: subprocess.Popen[bytes] | None = None

    def start(self, config: str | None = None) -> None:
        """Start the daemons; ``config`` replaces frr.conf, else the last one (or the base)."""
        if self.running():
            raise LabError(f"FRR {self.name} is already running")
        for directory in (self.conf_dir, self.run_dir, Path("/var/tmp/frr")):
            directory.mkdir(parents=True, exist_ok=True)
            shutil.chown(directory, "frr", "frr")
        if config is not None or not self.config_file.exists():
            self.config_file.write_text(config if config is not None else FRR_BASE_CONFIG)
        vtysh_conf = self.conf_dir / "vtysh.conf"
        vtysh_conf.write_text("service integrated-vtysh-config\n")
        for path in (self.config_file, vtysh_conf):
            shutil.chown(path, "frr", "frr")
        # watchfrr.sh (frrcommon.sh) reads the daemon list and options from here.
        daemons = self.conf_dir / "daemons"
        shutil.copyfile(FRR_DAEMONS_FILE, daemons)
        shutil.chown(daemons, "frr", "frr")
        for daemon in FRR_DAEMONS:
            (self.run_dir / f"{daemon}.vty").unlink(missing_ok=True)
        # As frr/entrypoint.sh does in the FRR container: only watchfrr is started.  It
        # finds no daemon, runs `watchfrr.sh restart all` (start each, then `vtysh -b`),
        # and restarts any daemon that dies, loading its part of frr.conf (`vtysh -b -d`).
        argv = [
            str(FRR_BIN / "watchfrr"),
            "-N",
            self.name,
            *_frr_options()["watchfrr"],
            *FRR_DAEMONS,
        ]
        with self.watchfrr_log.open("ab") as log:
            self._watchfrr = subprocess.Popen(
                in_netns(self.name, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: self.running() and not self._starting(),
            FRR_START_TIMEOUT,
            f"FRR {self.name} started by watchfrr (see {self.watchfrr_log})",
            0.2,
        )

    def _starting(self) -> bool:
        """watchfrr still runs a start or restart command (a child process)."""
        watchfrr = self._watchfrr
        if watchfrr is None or watchfrr.poll() is not None:
            return False
        children = Path(f"/proc/{watchfrr.pid}/task/{watchfrr.pid}/children")
        try:
            return bool(children.read_text().split())
        except OSError:
            return False

    def pids(self) -> list[int]:
        pids = []
        for daemon in FRR_DAEMONS:
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.run_dir / f"{daemon}.pid").read_text().strip())
                if self._is_ours(pid):
                    pids.append(pid)
        return pids

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"-N" in argv and self.name.encode() in argv and _alive(pid)

    def running(self) -> bool:
        return len(self.pids()) == len(FRR_DAEMONS)

    def daemon_pid(self, daemon: str) -> int | None:
        """The live pid of one of this instance's daemons (its pid file), else None."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.run_dir / f"{daemon}.pid").read_text().strip())
            if self._is_ours(pid):
                return pid
        return None

    def kill(self, daemon: str) -> int:
        """SIGKILL one daemon (a crash); returns the pid it had."""
        pid = self.daemon_pid(daemon)
        if pid is None:
            raise LabError(f"{daemon} of FRR {self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid) or None, 10, f"{daemon} of FRR {self.name} gone")
        return pid

    def _stop_watchfrr(self, hard: bool) -> None:
        """watchfrr exits (its daemons stay): nothing restarts them any more."""
        watchfrr, self._watchfrr = self._watchfrr, None
        if watchfrr is None:
            return
        if hard:
            watchfrr.kill()
        else:
            watchfrr.terminate()
        try:
            watchfrr.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchfrr.kill()
            watchfrr.wait()

    def stop_daemon(self, daemon: str) -> None:
        """Stop one daemon for good (SIGTERM), as an operator or a crash loop would:
        watchfrr goes first, or it would start it again.  stop() then start() brings
        all back."""
        self._stop_watchfrr(hard=False)
        pid = self.daemon_pid(daemon)
        if pid is None:
            raise LabError(f"{daemon} of FRR {self.name} is not running")
        kill_pids([pid])

    def stop(self, hard: bool = False) -> None:
        """SIGTERM (or SIGKILL when ``hard``) the daemons, zebra first, as the FRR
        container's entrypoint does: zebra (--retain) leaves the kernel routes, and
        bgpd's shutdown then cannot withdraw them.  watchfrr goes first, or it would
        start them again."""
        self._stop_watchfrr(hard)
        pids = self.pids()
        if hard:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(
                lambda: not any(_alive(p) for p in pids) or None, 10, f"FRR {self.name} gone"
            )
            return
        for pid in pids:
            kill_pids([pid])

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def reload(self, mode: str, path: Path) -> subprocess.CompletedProcess[str]:
        """``frr-reload.py MODE --stdout`` (--test or --reload) of the file at ``path``."""
        argv = [str(FRR_BIN / "frr-reload.py"), mode, "--stdout", "-N", self.name, str(path)]
        return run(argv, check=False, timeout=120)

    def vtysh(self, *commands: str, check: bool = True) -> str:
        argv = [VTYSH, "-N", self.name]
        for command in commands:
            argv += ["-c", command]
        return run(argv, check=check).stdout

    def vtysh_json(self, command: str) -> Any:
        out = self.vtysh(command, check=False)
        try:
            return json.loads(out or "null")
        except json.JSONDecodeError:
            return None

    def bgp_sessions(self) -> dict[str, str]:
        """Neighbour -> state from ``show bgp l2vpn evpn summary json``."""
        data = self.vtysh_json("show bgp l2vpn evpn summary json")
        peers = data.get("peers") if isinstance(data, dict) else None
        if not isinstance(peers, dict):
            return {}
        return {str(k): str(v.get("state", "?")) for k, v in peers.items() if isinstance(v, dict)}


# -- nodes and pods ------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    name: str
    ok: bool
    lines: tuple[str, ...]
    pods: tuple[Pod, ...]
    matrix: dict[tuple[str, str], bool]
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def text(self) -> str:
        verdict = f"result: {'PASS' if self.ok else 'FAIL'} ({self.seconds:.1f} s)"
        return "\n".join([*self.lines, verdict])


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
            raise LabError(f"nodes must be 1..200, got {self.options.nodes}")
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
            raise LabError("the lab needs root (network namespaces, FRR)")
        probe = run([str(REPO / "scripts" / "kernel-has-vrf"), "--verbose"], check=False)
        if probe.returncode != 0:
            raise LabError(f"this kernel has no VRF: {probe.stderr.strip()}; use scripts/lab up")

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
        for frr in [n.frr for n in self.nodes.values()] + ([self.rr] if self.rr else []):
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
            self._add_underlay_host(node.name, node.address, f"ul-n{node.index}")

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

    def _add_underlay_host(self, netns: str, address: str, port: str) -> None:
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
                raise LabError("the API server is not running")
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
            raise LabError(f"the daemon of {name} is already running")
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
            raise LabError(
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
            raise LabError(f"/metrics of {name} answered {status}")
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
        except LabError as exc:
            raise LabError(
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
        """Node failure: its daemon and its FRR stop (the kernel state stays)."""
        self.stop_daemon(name)
        self.nodes[name].frr.stop()

    def start_node(self, name: str) -> None:
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
                raise LabError(
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
            raise LabError(f"CNI DEL of {pod.label} failed: {output.strip()}")

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
        except LabError as exc:
            raise LabError(f"{exc}; missing: {last}") from None
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
        except LabError as exc:
            raise LabError(f"{exc}; last seen: {state}") from None

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
        with contextlib.suppress(LabError):
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
        except LabError:
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

    def _scenario_pods(self, namespace: str, prefix: str) -> list[Pod]:
        existing = self.pods_in(namespace)
        if existing:
            return existing
        specs = [(n, namespace, f"{prefix}-n{self.nodes[n].index}") for n in self.nodes]
        self.add_pods(specs)
        return self.pods_in(namespace)

    def scenario_tenant(self) -> ScenarioResult:
        """VRFDomain vrf-200 bound to test02: tenant pods reach each other, not the system VRF."""
        self.apply_object(self.domain_object("vrf-200", 200, 10200, "10.1.0.0", 60200, "l3vni"))
        self.apply_object(self.binding_object("test02-vrf-200", "test02", "vrf-200"))
        self.wait_cluster_view()
        pods = self._scenario_pods("test02", "tenant")
        in_prefix = all(p.address.startswith("10.1.") for p in pods)
        inside, seconds = self.wait_matrix(pods)
        system = self.system_pods()
        leaks = {**self.ping_pairs(pods, system), **self.ping_pairs(system, pods)}
        isolated = not any(leaks.values())
        green = bool(inside) and all(inside.values())
        lines = [
            "VRFDomain vrf-200 (table 10200, 10.1.0.0/16, /26 blocks, l3vni 60200) "
            "bound to namespace test02",
            "pods: "
            + ", ".join(f"{p.name}@{p.node}={p.address}" for p in pods)
            + ("" if in_prefix else "  (NOT in 10.1.0.0/16)"),
            f"tenant <-> tenant: {sum(inside.values())}/{len(inside)} replied"
            + (f" (all green {seconds:.1f} s after the pods were added)" if green else ""),
            self.render_matrix(pods, inside),
            f"tenant <-> system VRF: {sum(leaks.values())}/{len(leaks)} replied "
            f"({'isolated' if isolated else 'NOT isolated'})",
        ]
        return ScenarioResult(
            name="tenant",
            ok=in_prefix and green and isolated,
            lines=tuple(lines),
            pods=tuple(pods),
            matrix=inside,
            extra={"in_prefix": in_prefix, "leaks": leaks, "seconds": seconds},
        )

    def scenario_l2vni(self) -> ScenarioResult:
        """VRFDomain vrf-300 with an l2vni bound to test03: one subnet across the nodes."""
        self.apply_object(self.domain_object("vrf-300", 300, 10300, "10.30.0.0", 60300, "l2vni"))
        self.apply_object(self.binding_object("test03-vrf-300", "test03", "vrf-300"))
        self.wait_cluster_view()
        pods = self._scenario_pods("test03", "l2")
        nets = {ipaddress.ip_interface(f"{p.address}/{p.prefixlen}").network for p in pods}
        one_subnet = len(nets) == 1 and all(p.prefixlen == 16 for p in pods)
        matrix, seconds = self.wait_matrix(pods)
        green = bool(matrix) and all(matrix.values())
        lines = [
            "VRFDomain vrf-300 (table 10300, 10.30.0.0/16, l2vni 60300) bound to namespace test03",
            "pods: " + ", ".join(f"{p.name}@{p.node}={p.address}/{p.prefixlen}" for p in pods),
            "one stretched subnet: "
            + ("yes" if one_subnet else "NO: " + ", ".join(sorted(map(str, nets)))),
            f"ping: {sum(matrix.values())}/{len(matrix)} replied"
            + (f" (all green {seconds:.1f} s after the pods were added)" if green else ""),
            self.render_matrix(pods, matrix),
        ]
        return ScenarioResult(
            name="l2vni",
            ok=one_subnet and green,
            lines=tuple(lines),
            pods=tuple(pods),
            matrix=matrix,
            extra={"subnets": sorted(map(str, nets)), "seconds": seconds},
        )

    def scenario_frr_restart(self) -> ScenarioResult:
        """FRR on the first node restarts (zebra first) while pods ping within and across."""
        node = next(iter(self.nodes))
        return self._restart_under_ping(
            "frr-restart",
            f"FRR on {node} stopped (zebra first) and started",
            lambda: self.restart_frr(node),
        )

    def scenario_rr_restart(self) -> ScenarioResult:
        """The route reflector's FRR restarts while pods ping within and across nodes."""
        rr = self.rr
        if rr is None or not rr.running():
            raise LabError("scenario rr-restart needs the route reflector: run scenario rr first")

        def restart() -> None:
            rr.stop()
            rr.start()

        return self._restart_under_ping(
            "rr-restart", f"route reflector {RR_NAME} stopped and started", restart
        )

    def _restart_under_ping(
        self, name: str, what: str, restart: Callable[[], None]
    ) -> ScenarioResult:
        """Pings on the first node and from another node to it while ``restart`` runs."""
        node = next(iter(self.nodes))
        pods = self.system_pods()
        here = [p for p in pods if p.node == node][:2]
        there = next(p for p in pods if p.node != node)
        held_before = self.metric(there.node, "pyroute2_cni_evpn_released_total")
        with (
            ContinuousPing(here[0], here[1].address) as local,
            ContinuousPing(there, here[0].address) as cross,
        ):
            local.wait_replies(5, timeout=30)
            cross.wait_replies(5, timeout=30)
            began = time.monotonic()
            restart()
            self.wait_sessions()
            self.wait_converged()
            back = time.monotonic() - began
            cross.wait_replies(10, timeout=90)
            local.wait_replies(10, timeout=30)
            local_lost, cross_lost = local.lost(), cross.lost()
        held = self.metric(there.node, "pyroute2_cni_evpn_released_total") - held_before
        lines = [
            f"{what}; sessions and routes back in {back:.1f} s",
            f"echoes lost (one every 0.2 s): {here[0].name} -> {here[1].name}: "
            f"{len(local_lost)}, {there.name} -> {here[0].name}: {len(cross_lost)}",
            f"entries {there.node} held meanwhile: {held:.0f}",
        ]
        return ScenarioResult(
            name=name,
            ok=len(local_lost) <= 1 and len(cross_lost) <= 1,
            lines=tuple(lines),
            pods=tuple(pods),
            matrix={},
            extra={"local_lost": local_lost, "cross_lost": cross_lost, "held": held},
        )

    def start_route_reflector(self) -> FrrInstance:
        """A 4th FRR, not a Kubernetes node: an EVPN route reflector at 192.168.124.254."""
        if self.rr is not None and self.rr.running():
            return self.rr
        if not netns_exists(RR_NAME):
            self._add_underlay_host(RR_NAME, RR_ADDRESS, "ul-rr")
        self.rr = FrrInstance(RR_NAME)
        self.rr.start(RR_CONFIG)
        return self.rr

    def node_config(self, name: str, reflectors: Sequence[str]) -> dict[str, Any]:
        node = self.nodes[name]
        return {
            "apiVersion": f"{CNI_GROUP}/{CNI_VERSION}",
            "kind": "VRFNodeConfig",
            "metadata": {"name": f"{name}-vrnc"},
            "spec": {
                "nodeRef": {"name": name},
                "routerId": node.address,
                "routeReflectors": list(reflectors),
                "interfaces": [{"name": UPLINK, "local": node.address}],
            },
        }

    def sessions(self) -> dict[str, dict[str, str]]:
        return {n: node.frr.bgp_sessions() for n, node in self.nodes.items()}

    def scenario_rr(self) -> ScenarioResult:
        """Route-reflector mode through VRFNodeConfig: every node peers only with the RR."""
        began = time.monotonic()
        rr = self.start_route_reflector()
        for name in self.nodes:
            self.apply_object(self.node_config(name, [RR_ADDRESS]))
        want = {n: {RR_ADDRESS: "Established"} for n in self.nodes}
        try:
            wait_until(lambda: self.sessions() == want, CONVERGE_TIMEOUT, "RR-only peering", 0.5)
            peering = True
        except LabError:
            peering = False
        with contextlib.suppress(LabError):
            self.wait_converged()
        pods = self.system_pods()
        matrix, _ = self.wait_matrix(pods, timeout=60)
        seconds = time.monotonic() - began
        green = bool(matrix) and all(matrix.values())
        sessions = self.sessions()
        lines = [
            f"route reflector {RR_NAME} at {RR_ADDRESS} (FRR only, not a node); VRFNodeConfig "
            f"routeReflectors=[{RR_ADDRESS}] for {', '.join(self.nodes)}",
            "node sessions: "
            + "; ".join(
                f"{n}: " + ", ".join(f"{a} {s}" for a, s in peers.items())
                for n, peers in sessions.items()
            )
            + ("" if peering else "  (NOT only the RR)"),
            "RR sessions: " + ", ".join(f"{a} {s}" for a, s in rr.bgp_sessions().items()),
            f"ping (system VRF): {sum(matrix.values())}/{len(matrix)} replied"
            + (f" ({seconds:.1f} s after the VRFNodeConfigs)" if green else ""),
            self.render_matrix(pods, matrix),
        ]
        return ScenarioResult(
            name="rr",
            ok=peering and green,
            lines=tuple(lines),
            pods=tuple(pods),
            matrix=matrix,
            extra={"sessions": sessions, "seconds": seconds},
        )

    def revert_rr(self) -> None:
        """Back to the full mesh: VRFNodeConfigs deleted, RR stopped."""
        for name in self.nodes:
            self.delete_object("vrfnodeconfigs", f"{name}-vrnc")
        mesh = {n.address for n in self.nodes.values()}
        want = {
            n: dict.fromkeys(sorted(mesh - {node.address}), "Established")
            for n, node in self.nodes.items()
        }
        wait_until(lambda: self.sessions() == want, CONVERGE_TIMEOUT, "the full mesh back", 0.5)
        if self.rr is not None:
            self.rr.remove()
            self.rr = None
        remove_netns(RR_NAME)
        self.scenarios.pop("rr", None)

    def scenario(self, name: str) -> list[ScenarioResult]:
        """Run one scenario (or all); each result is also kept for the summary."""
        runners: dict[str, Callable[[], ScenarioResult]] = {
            "tenant": self.scenario_tenant,
            "l2vni": self.scenario_l2vni,
            "rr": self.scenario_rr,
            "frr-restart": self.scenario_frr_restart,
            "rr-restart": self.scenario_rr_restart,
        }
        if name == "all":
            return [r for each in runners for r in self.scenario(each)]
        if name not in runners:
            raise LabError(f"unknown scenario {name!r}: one of {', '.join(runners)}, all")
        began = time.monotonic()
        self.progress(f"scenario {name}")
        result = runners[name]()
        result = dataclasses.replace(result, seconds=time.monotonic() - began)
        self.scenarios[name] = result.text()
        self.progress(
            f"scenario {name}: {'PASS' if result.ok else 'FAIL'} in {result.seconds:.1f} s"
        )
        return [result]


class ContinuousPing(Service):
    """``ping -i INTERVAL`` from a pod until stopped, counting replies that went missing.

    A reply is missing when its sequence number is absent below the last one that came
    back, so the packet in flight when the ping stops does not count as lost.
    """

    SEQ = re.compile(r"icmp_seq=(\d+)")

    def __init__(self, src: Pod, address: str, interval: float = 0.2) -> None:
        self.src = src
        self.address = address
        self.interval = interval
        self._seqs: set[int] = set()
        self._cond = threading.Condition()
        self._proc: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None
        self.started = 0.0  # wall clock of the first echo request

    def start(self) -> None:
        self.started = time.time()
        argv = [PING, "-n", "-i", f"{self.interval:g}", "-W", "1", self.address]
        self._proc = subprocess.Popen(
            in_netns(self.src.netns, argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name="ping-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            m = self.SEQ.search(line)
            if m and "bytes from" in line:
                with self._cond:
                    self._seqs.add(int(m.group(1)))
                    self._cond.notify_all()

    def replies(self) -> int:
        with self._cond:
            return len(self._seqs)

    def wait_replies(self, count: int, timeout: float) -> None:
        """Until ``count`` more replies than now came back (LabError after ``timeout``)."""
        with self._cond:
            target = len(self._seqs) + count
            if not self._cond.wait_for(lambda: len(self._seqs) >= target, timeout):
                raise LabError(
                    f"ping {self.src.label} -> {self.address}: fewer than {count} replies "
                    f"in {timeout:.0f} s"
                )

    def latest(self) -> int:
        """The highest sequence number answered so far (0 before the first reply)."""
        with self._cond:
            return max(self._seqs, default=0)

    def lost(self) -> list[int]:
        """Sequence numbers missing below the last reply."""
        with self._cond:
            if not self._seqs:
                return []
            return sorted(set(range(1, max(self._seqs) + 1)) - self._seqs)

    def when(self, seq: int) -> str:
        """The wall-clock time echo ``seq`` was sent (to read next to the daemons' logs)."""
        sent = self.started + (seq - 1) * self.interval
        return time.strftime("%H:%M:%S", time.localtime(sent)) + f".{int(sent * 10) % 10}"

    def stop(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None


# -- the guest side: serve the lab and the command channel -----------------------------------


class Channel:
    """Requests and replies as files in the state directory (host fs, seen by both sides)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.requests = state_dir / "agent" / "requests"
        self.replies = state_dir / "agent" / "replies"
        self.status_file = state_dir / "status.json"
        self.summary_file = state_dir / "summary.txt"

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def set_status(self, phase: str, **extra: Any) -> None:
        _write_atomic(self.status_file, json.dumps({"phase": phase, "time": time.time(), **extra}))

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Host side: drop a request, wait (bounded) for the reply."""
        rid = uuid.uuid4().hex
        _write_atomic(self.requests / f"{rid}.json", json.dumps({**payload, "timeout": timeout}))
        reply = self.replies / f"{rid}.json"

        def answered() -> dict[str, Any] | None:
            if not reply.exists():
                return None
            try:
                data = json.loads(reply.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return data if isinstance(data, dict) else None

        try:
            return wait_until(
                answered, timeout + 30, f"the lab agent to answer ({self.state_dir})", 0.1
            )
        finally:
            (self.requests / f"{rid}.json").unlink(missing_ok=True)
            reply.unlink(missing_ok=True)


def _guest_exec(lab: Lab, request: dict[str, Any]) -> dict[str, Any]:
    """Run one host request inside the guest; returns rc/stdout/stderr."""
    op = request.get("op")
    timeout = float(request.get("timeout", 120))
    if op in ("kubectl", "exec"):
        if op == "kubectl":
            argv = ["kubectl", "--kubeconfig", str(lab.kubeconfig), *request["args"]]
        else:
            netns, *cmd = request["args"]
            argv = in_netns(None if netns in ("-", "guest") else str(netns), cmd)
        # The host's working directory (the guest sees the host fs), for relative paths.
        cwd = str(request.get("cwd") or REPO)
        stdin = request.get("stdin")
        try:
            proc = run(
                argv,
                check=False,
                timeout=timeout,
                cwd=cwd if os.path.isdir(cwd) else REPO,
                input=str(stdin) if stdin is not None else None,
            )
        except LabError as exc:
            return {"rc": 124, "stdout": "", "stderr": str(exc) + "\n"}
        except OSError as exc:
            return {"rc": 127, "stdout": "", "stderr": f"{argv[0]}: {exc}\n"}
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    if op == "scenario":
        if lab.options.real_nodes:
            return {
                "rc": 2,
                "stdout": "",
                "stderr": "scenarios run on the process-mode lab: `scripts/lab up` without "
                "--kubelets\n",
            }
        results = lab.scenario(str(request["args"][0]))
        text = "\n\n".join(f"scenario {r.name}:\n{r.text()}" for r in results)
        ok = all(r.ok for r in results)
        return {"rc": 0 if ok else 1, "stdout": text + "\n", "stderr": ""}
    if op == "summary":
        text, green = lab.summary()
        return {"rc": 0 if green else 1, "stdout": text + "\n", "stderr": ""}
    return {"rc": 2, "stdout": "", "stderr": f"unknown request {op!r}\n"}


def serve(
    state_dir: Path,
    nodes: int,
    pods: int,
    lifetime: float,
    scenarios: Sequence[str],
    daemons: bool = True,
    kubelets: bool = False,
) -> int:
    """The guest's main: start the lab, publish the summary, answer requests until down.
    With `kubelets`, the nodes are real nodes and the product is installed on them
    (tests/harness/kube_lab.py)."""
    channel = Channel(state_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for d in (channel.requests, channel.replies):
        d.mkdir(parents=True, exist_ok=True)
    lab = Lab(LabOptions(state_dir=state_dir, nodes=nodes, pods_per_node=pods, real_nodes=kubelets))
    channel.set_status("starting", pid=os.getpid())
    rc = 0
    failure = ""
    kube: Any = None
    try:
        try:
            if kubelets:
                from tests.harness.kube_lab import KubeLab  # it imports this module

                lab.start(daemons=False, pods=False)
                kube = KubeLab(lab, pods)
                lab.summarizer = kube.summary
                kube.start()
            else:
                lab.start(daemons=daemons)
            for name in scenarios:
                lab.scenario(name)
            text, green = lab.summary()
            lab._mark("summary")
            timings = ", ".join(f"{k} {v:.1f}s" for k, v in lab.timings.items())
            text += f"\nlab up in {lab.timings['summary']:.1f} s (inside the lab: {timings})"
            _write_atomic(channel.summary_file, text + "\n")
            print(text, flush=True)
            channel.set_status("ready", green=green, timings=lab.timings, pid=os.getpid())
        except Exception as exc:
            import traceback

            if not isinstance(exc, PrerequisiteError):  # one line says it all
                traceback.print_exc()
            print(
                f"lab: FAILED: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                flush=True,
            )
            failure = f"{type(exc).__name__}: {exc}"
            channel.set_status("failed", message=failure, pid=os.getpid())
            rc = 1
            return rc
        deadline = time.monotonic() + lifetime
        workers: list[threading.Thread] = []
        while not stop.is_set() and time.monotonic() < deadline:
            for entry in sorted(channel.requests.glob("*.json")):
                try:
                    request = json.loads(entry.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # being written; seen again next round
                entry.unlink(missing_ok=True)
                if request.get("op") == "down":
                    _write_atomic(
                        channel.replies / entry.name,
                        json.dumps({"rc": 0, "stdout": "", "stderr": ""}),
                    )
                    stop.set()
                    break
                worker = threading.Thread(
                    target=_answer, args=(lab, channel, entry.name, request), daemon=True
                )
                worker.start()
                workers.append(worker)
            workers = [w for w in workers if w.is_alive()]
            stop.wait(0.2)
        if not stop.is_set():
            print(f"lab: lifetime of {lifetime:.0f} s reached; stopping", flush=True)
        return rc
    finally:
        channel.set_status("stopping", pid=os.getpid(), message=failure)
        try:
            if kube is not None:
                kube.stop()
            lab.stop()
        finally:
            channel.set_status("stopped", rc=rc, message=failure)


def _answer(lab: Lab, channel: Channel, name: str, request: dict[str, Any]) -> None:
    try:
        reply = _guest_exec(lab, request)
    except Exception as exc:  # the host gets it as a failed command
        reply = {"rc": 1, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}\n"}
    _write_atomic(channel.replies / name, json.dumps(reply))


# -- the host side -----------------------------------------------------------------------------


def _state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE_DIR", str(DEFAULT_STATE_DIR))).resolve()


def _launcher_pid(state_dir: Path) -> int | None:
    """The pid of uml-run (or of the direct `serve`) if it is still ours and alive."""
    try:
        pid = int((state_dir / "launcher.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if str(state_dir).encode() not in cmdline or not _alive(pid):
        return None
    return pid


# The guest mounts tmpfs on these (scripts/uml-run's GUEST_TMPFS; a unit test keeps the two
# equal); the host files below them are hidden from it, so uml-run refuses a work dir there.
GUEST_TMPFS = ("/run", "/tmp", "/etc/frr", "/var/log", "/var/tmp", "/dev/shm")


def _uml_workdir(state_dir: Path) -> Path:
    """uml-run's work dir for the lab: ``<state>/uml``; when the checkout is below a guest
    tmpfs (a clone in /tmp), one keyed by the state dir in the user's cache instead."""
    text = str(state_dir)
    if not any(text == t or text.startswith(t + "/") for t in GUEST_TMPFS):
        return state_dir / "uml"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    return base / "pyroute2-cni" / "uml" / f"lab-{key}"


def _uml_pids(state_dir: Path) -> list[int]:
    """linux.uml processes whose uml_dir is our work dir (other users' guests are not ours)."""
    marker = f"uml_dir={_uml_workdir(state_dir)}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def _vrf_kernel() -> bool:
    if os.environ.get("PYROUTE2_CNI_FORCE_UML") == "1":
        return False
    return run([str(REPO / "scripts" / "kernel-has-vrf")], check=False).returncode == 0


# What `up` creates in the state directory besides the logs (console.log, logs/,
# uml/console.log); other users of lab-state/ (the e2e tier, the benchmark) keep theirs.
UP_STATE_FILES = ("agent", "status.json", "summary.txt", "launcher.pid", "kubeconfig")


def _clean_state(state_dir: Path) -> None:
    """Remove what `up` left in the state directory, except the logs."""
    if not state_dir.is_dir():
        return
    for name in UP_STATE_FILES:
        _remove(state_dir / name)
    uml = _uml_workdir(state_dir)
    if uml.is_dir():
        for sub in uml.iterdir():
            if sub.name != "console.log":
                _remove(sub)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    channel = Channel(state_dir)
    if _launcher_pid(state_dir) is not None:
        print(
            f"lab: already running (state in {state_dir}); `scripts/lab down` first",
            file=sys.stderr,
        )
        return 1
    if args.kubelets and (args.scenario or args.no_daemons):
        print(
            "lab: --kubelets runs the product as installed; --scenario and --no-daemons are "
            "for the process-mode lab",
            file=sys.stderr,
        )
        return 2
    problem = missing_prerequisites(daemons=not args.no_daemons)
    if problem:
        print(f"lab: {problem}", file=sys.stderr)
        return 2
    _clean_state(state_dir)
    shutil.rmtree(state_dir / "logs", ignore_errors=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for d in (channel.requests, channel.replies):
        d.mkdir(parents=True, exist_ok=True)
    lifetime = float(os.environ.get("LAB_LIFETIME", DEFAULT_LIFETIME))
    serve_argv = [
        str(PYTHON),
        "-m",
        "tests.harness.lab",
        "serve",
        "--state-dir",
        str(state_dir),
        "--nodes",
        str(args.nodes),
        "--pods",
        str(args.pods),
        "--lifetime",
        str(lifetime),
        *(f"--scenario={s}" for s in args.scenario),
        *(["--no-daemons"] if args.no_daemons else []),
        *(["--kubelets"] if args.kubelets else []),
    ]
    uml = not _vrf_kernel()
    if uml:
        argv = [
            str(REPO / "scripts" / "uml-run"),
            "--mem",
            os.environ.get("LAB_UML_MEM", KUBELETS_UML_MEM if args.kubelets else UML_MEM),
            "--timeout",
            str(int(lifetime + 900)),
            "--workdir",
            str(_uml_workdir(state_dir)),
            "--",
            *serve_argv,
        ]
        where = "a User-Mode Linux guest (the host kernel lacks VRF)"
    else:
        argv = serve_argv
        where = "this kernel"
    began = time.monotonic()
    console = state_dir / "console.log"
    with console.open("wb") as out:
        launcher = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir / "launcher.pid").write_text(f"{launcher.pid}\n")
    print(
        f"lab: starting {args.nodes} nodes x {args.pods} pods in {where}; console: {console}",
        flush=True,
    )
    offset = 0
    deadline = began + UP_TIMEOUT
    phase = ""
    try:
        while True:
            offset = _follow(console, offset)
            phase = str(channel.status().get("phase", ""))
            if phase in ("ready", "failed", "stopping", "stopped") or launcher.poll() is not None:
                break
            if time.monotonic() > deadline:
                print(f"lab: not up after {UP_TIMEOUT:.0f} s; see {console}; cleaning up")
                _down(state_dir, quiet=True)
                return 1
            time.sleep(0.3)
    except KeyboardInterrupt:
        print("lab: interrupted; stopping the lab", flush=True)
        _down(state_dir, quiet=True)
        return 130
    _follow(console, offset)
    if phase != "ready":
        status = channel.status()
        print(f"lab: failed to start: {status.get('message') or 'the lab process exited'}")
        print(f"lab: console: {console}; logs: {state_dir / 'logs'}/; cleaning up", flush=True)
        _down(state_dir, quiet=True)
        return 1
    wall = time.monotonic() - began
    green = bool(channel.status().get("green"))
    with contextlib.suppress(OSError):
        print()
        print(channel.summary_file.read_text(), flush=True)
    print(
        f"lab: up in {wall:.1f} s (host wall clock); "
        f"ping matrix {'all green' if green else 'NOT all green'}"
    )
    print(
        "lab: scripts/lab kubectl ... | exec NETNS CMD ... "
        "| scenario tenant|l2vni|rr|frr-restart|rr-restart | down"
    )
    launcher.returncode = 0  # detached on purpose: it keeps the guest running
    return 0 if green else 1


def _follow(path: Path, offset: int) -> int:
    """Print the lab's progress lines from the console log after ``offset``."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for raw in data[:end].splitlines():
        line = raw.decode(errors="replace").rstrip("\r")
        if line.startswith(("lab:", "uml-run:")):
            print(line, flush=True)
    return offset + end


def _down(state_dir: Path, quiet: bool = False) -> int:
    channel = Channel(state_dir)
    pid = _launcher_pid(state_dir)
    say: Callable[[str], None] = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    problems: list[str] = []
    if pid is not None:
        if channel.status().get("phase") in ("ready", "starting"):
            with contextlib.suppress(LabError):
                channel.request({"op": "down"}, timeout=20)
        say("lab: asked the lab to stop; waiting")
        try:
            wait_until(lambda: not _alive(pid), DOWN_TIMEOUT, "the lab to stop", 0.3)
        except LabError:
            say("lab: the lab did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            with contextlib.suppress(LabError):
                wait_until(lambda: not _alive(pid), 20, "the launcher to exit", 0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    # A guest that outlived its launcher (uml-run SIGKILLed): kill its process groups.
    for upid in _uml_pids(state_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(upid), signal.SIGKILL)
    with contextlib.suppress(LabError):
        wait_until(lambda: not _uml_pids(state_dir), 20, "the UML processes to exit", 0.2)
    if _uml_pids(state_dir):
        problems.append(f"UML processes left: {_uml_pids(state_dir)}")
    if _vrf_kernel():
        # Direct mode: the lab ran in this kernel; remove whatever a killed lab left.
        Lab(LabOptions(state_dir=state_dir))._cleanup_kernel()
        left = (
            [n for n in os.listdir(NETNS_DIR) if n.startswith(("lab-", "pod-lab-"))]
            if NETNS_DIR.is_dir()
            else []
        )
        if left:
            problems.append(f"namespaces left: {left}")
    _clean_state(state_dir)
    if problems:
        print("lab: " + "; ".join(problems), file=sys.stderr)
        return 1
    say(f"lab: down; logs kept in {state_dir}/console.log and {state_dir}/logs/")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    return _down(_state_dir())


def _relay(payload: dict[str, Any], timeout: float) -> int:
    state_dir = _state_dir()
    channel = Channel(state_dir)
    if _launcher_pid(state_dir) is None or channel.status().get("phase") != "ready":
        print(f"lab: not running (state in {state_dir}); `scripts/lab up` first", file=sys.stderr)
        return 1
    payload = {**payload, "cwd": os.getcwd()}
    if "-" in payload.get("args", ()) and not sys.stdin.isatty():
        payload["stdin"] = sys.stdin.read()  # kubectl apply -f - < file.yaml
    try:
        reply = channel.request(payload, timeout)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(str(reply.get("stdout", "")))
    sys.stderr.write(str(reply.get("stderr", "")))
    return int(reply.get("rc", 1))


def cmd_kubectl(args: argparse.Namespace) -> int:
    # `scripts/lab kubectl -- -n NS ...`: kubectl options first need the `--`, which is
    # ours, not kubectl's.
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return _relay({"op": "kubectl", "args": rest}, args.timeout)


def cmd_exec(args: argparse.Namespace) -> int:
    return _relay({"op": "exec", "args": [args.netns, *args.args]}, args.timeout)


def cmd_scenario(args: argparse.Namespace) -> int:
    rc = 0
    for name in args.names:
        rc = max(rc, _relay({"op": "scenario", "args": [name]}, args.timeout))
    return rc


def cmd_summary(args: argparse.Namespace) -> int:
    return _relay({"op": "summary"}, args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    status = Channel(state_dir).status()
    pid = _launcher_pid(state_dir)
    print(json.dumps({"state_dir": str(state_dir), "launcher": pid, **status}, indent=2))
    return 0 if pid is not None and status.get("phase") == "ready" else 1


def cmd_logs(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    path = (
        state_dir / "logs" / f"{args.node}-daemon.log" if args.node else state_dir / "console.log"
    )
    try:
        sys.stdout.write(path.read_text(errors="replace"))
    except OSError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_run_e2e(args: argparse.Namespace) -> int:
    argv = [
        str(REPO / "scripts" / "run-in-vrf-kernel"),
        "--",
        str(REPO / "scripts" / "pytest-tier"),
        "e2e",
        *args.args,
    ]
    return subprocess.run(argv, cwd=REPO, check=False).returncode


def cmd_serve(args: argparse.Namespace) -> int:
    return serve(
        Path(args.state_dir).resolve(),
        args.nodes,
        args.pods,
        args.lifetime,
        args.scenario,
        daemons=not args.no_daemons,
        kubelets=args.kubelets,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/lab",
        description="A multi-node pyroute2-cni cluster on one machine (see tests/harness/lab.py).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nodes = int(os.environ.get("LAB_NODES", "3"))
    pods = int(os.environ.get("LAB_PODS", "2"))

    up = sub.add_parser("up", help="start the lab in the background and print its summary")
    up.add_argument("--nodes", type=int, default=nodes, help="nodes (LAB_NODES, default 3)")
    up.add_argument("--pods", type=int, default=pods, help="pods per node (LAB_PODS, default 2)")
    up.add_argument(
        "--scenario",
        action="append",
        default=[],
        choices=["tenant", "l2vni", "rr", "frr-restart", "rr-restart", "all"],
        help="also run these scenarios",
    )
    up.add_argument(
        "--no-daemons",
        action="store_true",
        help="infrastructure only: API server, namespaces, FRR (to debug the lab itself)",
    )
    up.add_argument(
        "--kubelets",
        action="store_true",
        default=os.environ.get("LAB_KUBELETS", "") == "1",
        help="real nodes: a kubelet and containerd per node, the product installed as the "
        "README says, a Deployment's pods (LAB_KUBELETS=1; needs make kube-node images)",
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop the lab and clean up").set_defaults(func=cmd_down)

    for name, func, helptext in (
        ("kubectl", cmd_kubectl, "kubectl against the lab's API server"),
        ("exec", cmd_exec, "run a command in a lab namespace (e.g. lab-n1; '-' = guest root)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
        if name == "exec":
            p.add_argument("netns")
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)

    sc = sub.add_parser(
        "scenario",
        help="run scenarios in the running lab: tenant l2vni rr frr-restart rr-restart all",
    )
    sc.add_argument("--timeout", type=float, default=600.0)
    sc.add_argument(
        "names", nargs="+", choices=["tenant", "l2vni", "rr", "frr-restart", "rr-restart", "all"]
    )
    sc.set_defaults(func=cmd_scenario)

    sm = sub.add_parser("summary", help="print the summary again (fresh ping matrix)")
    sm.add_argument("--timeout", type=float, default=300.0)
    sm.set_defaults(func=cmd_summary)

    sub.add_parser("status", help="the lab's phase as JSON").set_defaults(func=cmd_status)

    lg = sub.add_parser("logs", help="the console log, or a node's daemon log")
    lg.add_argument("node", nargs="?")
    lg.set_defaults(func=cmd_logs)

    e2e = sub.add_parser("run-e2e", help="the e2e tier (its own lab, inside the VRF kernel)")
    e2e.add_argument("args", nargs=argparse.REMAINDER)
    e2e.set_defaults(func=cmd_run_e2e)

    sv = sub.add_parser("serve", help="(internal) run the lab in this kernel; what up starts")
    sv.add_argument("--state-dir", required=True)
    sv.add_argument("--nodes", type=int, default=nodes)
    sv.add_argument("--pods", type=int, default=pods)
    sv.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME)
    sv.add_argument("--scenario", action="append", default=[])
    sv.add_argument("--no-daemons", action="store_true")
    sv.add_argument("--kubelets", action="store_true")
    sv.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
