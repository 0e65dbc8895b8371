"""Hollow nodes for the scale bench (issue 20): the real daemon minus the node under it.

A hollow node runs the daemon's actor graph as `pyroute2-cni daemon` builds it
(`wiring.build_actor_specs`: CRD watcher, IPAM, CNI server, FRR model and rendering,
node state and condition, events) under the real supervisor, against the real API
server.  Only the data plane is fake (`wiring.DataPlane`): an in-memory kernel
(tests.harness.fake_netlink) with one uplink, an FRR that accepts every rendered
configuration and reports each configured neighbour Established, no EVPN tables, and
peers that always answer.  So every request the API server sees is one a real daemon
would make.

Many hollow nodes share a process (`run_group`); `python -m tests.harness.hollow` runs one
group until SIGTERM and writes one JSON line per FRR apply and per readiness change to
``--events``, which the bench reads to time cluster-wide changes.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import IO, Any

from pyroute2_cni.daemon.wiring import DataPlane, build_actor_specs
from pyroute2_cni.frr.control import CommandResult, FrrState
from pyroute2_cni.runtime.config import (
    DaemonSection,
    FrrSection,
    NetlinkSection,
    Settings,
    parse_settings,
)
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import Supervisor
from pyroute2_cni.values.evpn_hold import EvpnEntry, PeerSession
from tests.harness.fake_netlink import FakeKernel, FakeNetlink

NEIGHBOR = re.compile(r"^ neighbor (\d+\.\d+\.\d+\.\d+) peer-group ", re.MULTILINE)
VRF_VNI = re.compile(r"^vrf (\S+)\n vni (\d+)", re.MULTILINE)
UPLINK = "eth0"


@dataclass(frozen=True, slots=True)
class HollowNode:
    name: str
    address: str  # the Node's InternalIP: the uplink's address, FRR's router id

    @property
    def gateway(self) -> str:
        return self.address.rsplit(".", 1)[0] + ".1"


Report = Callable[[dict[str, Any]], None]


class HollowFrr:
    """An FrrControl that runs whatever it is given: every neighbour of the last applied
    configuration is Established (up since that apply), every VRF's VNI is known."""

    def __init__(self, node: str, report: Report, clock: Callable[[], float] = time.monotonic):
        self._node = node
        self._report = report
        self._clock = clock
        self._lock = threading.Lock()
        self._running: str | None = None
        self._up_since: dict[str, float] = {}
        self._l3vnis: dict[str, int] = {}
        self._started = clock()

    def available(self) -> str | None:
        return None

    def validate(self, text: str) -> CommandResult:
        return CommandResult(ok=True, output="")

    def apply(self, text: str, vrf_bindings: str) -> CommandResult:
        now = self._clock()
        neighbors = NEIGHBOR.findall(text)
        vnis = {name: int(vni) for name, vni in VRF_VNI.findall(vrf_bindings or text)}
        with self._lock:
            self._running = text
            self._up_since = {a: self._up_since.get(a, now) for a in neighbors}
            self._l3vnis = vnis
        self._report(
            {
                "event": "frr-apply",
                "node": self._node,
                "time": time.time(),
                "bytes": len(text),
                "neighbors": len(neighbors),
                "vrfs": sorted(vnis),
            }
        )
        return CommandResult(ok=True, output="")

    def restore(self, text: str | None) -> CommandResult:
        with self._lock:
            if text is not None:
                self._running = text
        return CommandResult(ok=True, output="")

    def running_config(self) -> str | None:
        with self._lock:
            return self._running

    def state(self) -> FrrState:
        now = self._clock()
        with self._lock:
            return FrrState(
                sessions={a: "Established" for a in self._up_since},
                uptimes={a: now - t for a, t in self._up_since.items()},
                l3vnis=dict(self._l3vnis),
                l2vnis=frozenset(),
                zebra_uptime=now - self._started,
            )

    def close(self) -> None:
        pass


class HollowEvpn:
    """No EVPN entries in the kernel: the route keeper has nothing to hold."""

    def entries(self) -> list[EvpnEntry]:
        return []

    def restore_all(self, entries: Sequence[EvpnEntry]) -> list[OSError | None]:
        return [None] * len(entries)

    def release(self, entry: EvpnEntry) -> None:
        pass

    def close(self) -> None:
        pass


class HollowMonitor:
    def __init__(self, on_events: Callable[..., None], on_lost: Callable[[str], None]) -> None:
        pass

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


def hollow_plane(node: HollowNode, report: Report) -> DataPlane:
    kernel = FakeKernel()
    kernel.add_uplink(UPLINK, node.address, 24, node.gateway, mtu=1500)
    frr = HollowFrr(node.name, report)
    return DataPlane(
        netlink=lambda: FakeNetlink(kernel),
        frr=lambda: frr,
        evpn_kernel=HollowEvpn,
        evpn_monitor=HollowMonitor,
        # Every peer daemon answers and reports its sessions up.
        probe_livez=lambda _address: True,
        probe_bgp=lambda _address: PeerSession(state="Established", uptime=3600.0),
        hostname=node.name,
    )


def hollow_settings(node: HollowNode, kubeconfig: str, workdir: Path, ini: str = "") -> Settings:
    """The daemon's defaults (server.ini text `ini` on top), with paths under workdir."""
    base = parse_settings(ini, env={"NODE_NAME": node.name})
    state = workdir / node.name
    state.mkdir(parents=True, exist_ok=True)
    daemon: DaemonSection = replace(
        base.daemon,
        kubeconfig=kubeconfig,
        socket=f"ipc://{state}/cni.sock",
        install_cni=False,
        state_dir=str(state),
        netns_dir=str(state / "netns"),
        cni_conf_dir=str(state / "net.d"),
        cni_bin_dir=str(state / "bin"),
    )
    frr: FrrSection = replace(base.frr, config_file=str(state / "frr.conf"))
    netlink: NetlinkSection = replace(base.netlink, vtep_interface=UPLINK)
    return replace(base, daemon=daemon, frr=frr, netlink=netlink)


class HollowDaemon:
    """One hollow node: its own settings, metrics and supervisor, as one daemon has."""

    def __init__(self, node: HollowNode, kubeconfig: str, workdir: Path, report: Report):
        self.node = node
        self.settings = hollow_settings(node, kubeconfig, workdir)
        self.metrics = Metrics()
        self.plane = hollow_plane(node, report)
        holder: list[Supervisor] = []

        def readiness() -> HealthReport:
            return holder[0].report()

        specs = build_actor_specs(self.settings, self.metrics, readiness, self.plane)
        self.supervisor = Supervisor(specs, self.settings.supervisor, self.metrics)
        holder.append(self.supervisor)
        self._thread: threading.Thread | None = None
        self.exit_code: int | None = None

    def start(self, stop: threading.Event) -> None:
        self.supervisor.start()

        def run() -> None:
            self.exit_code = self.supervisor.run(stop)

        self._thread = threading.Thread(target=run, name=f"hollow-{self.node.name}", daemon=True)
        self._thread.start()

    def ready(self) -> bool:
        return self.supervisor.report().ready

    def stop(self) -> None:
        self.supervisor.stop()
        if self._thread is not None:
            self._thread.join(timeout=30)


def run_group(
    nodes: Sequence[HollowNode],
    kubeconfig: str,
    workdir: Path,
    report: Report,
    stop: threading.Event,
    stagger: float = 0.05,
) -> list[HollowDaemon]:
    """Start one hollow daemon per node; returns them running (stop them with .stop())."""
    daemons: list[HollowDaemon] = []
    for node in nodes:
        daemon = HollowDaemon(node, kubeconfig, workdir, report)
        daemon.start(stop)
        daemons.append(daemon)
        # A real cluster's daemons do not start in the same millisecond either.
        stop.wait(stagger)
    return daemons


def parse_nodes(text: str) -> list[HollowNode]:
    """'name=address,name=address' -> nodes."""
    nodes = []
    for item in filter(None, text.split(",")):
        name, _, address = item.partition("=")
        nodes.append(HollowNode(name=name, address=address))
    return nodes


class _EventFile:
    def __init__(self, stream: IO[str]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, sort_keys=True)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", required=True, help="name=address,name=address,...")
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--events", type=Path, required=True)
    parser.add_argument("--ready-poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with args.events.open("a") as stream:
        report = _EventFile(stream)
        daemons = run_group(parse_nodes(args.nodes), args.kubeconfig, args.workdir, report, stop)
        seen: dict[str, bool] = {}
        try:
            while not stop.is_set():
                for daemon in daemons:
                    ready = daemon.ready()
                    if seen.get(daemon.node.name) != ready:
                        seen[daemon.node.name] = ready
                        report(
                            {
                                "event": "ready",
                                "node": daemon.node.name,
                                "ready": ready,
                                "time": time.time(),
                            }
                        )
                if any(d.exit_code is not None for d in daemons):
                    failed = [d.node.name for d in daemons if d.exit_code is not None]
                    print(f"hollow: supervisors gave up on {failed}", file=sys.stderr)
                    return 1
                stop.wait(args.ready_poll)
        finally:
            for daemon in daemons:
                daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
