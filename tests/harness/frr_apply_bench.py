"""FRR apply on the host kernel: a cluster change -> FRR runs the new configuration.

    python -m tests.harness.frr_apply_bench [--rounds 10] [--json PATH]

The routing half of a convergence without User-Mode Linux: FRR needs no VRF device to
parse, validate and hold VRF configuration, so this runs on the host's own kernel, where
process starts cost what they cost on a node.  One FRR 8.4 (zebra, bgpd, staticd; the
lab's FrrInstance) in a namespace of its own, and the real FRRActor with the real
FrrProcessControl and the default debounce (1 s).  Per round it tells the actor one
change and times it until the actor reports the reload (the FrrApplied condition it
sends the CRD watcher):

- ``domain``: a new l3vni VRFDomain (new VRF-to-VNI bindings: ``vtysh -f`` first);
- ``peer``: a new node (bindings unchanged: no ``vtysh -f``).

It also times the actor's state read (BGP sessions, VNIs), as the actor does it -- over the
daemons' vty sockets -- next to one vtysh with the same three commands, 50 times each.

Each time splits into the debounce, ``validate`` (frr-reload.py --test) and ``reload``
(bindings + frr-reload.py --reload), from the actor's own log line.  The reference,
measured in the same run on the same configuration: one ``frr-reload.py --test``.
What this leaves out of a convergence: the watch, devices up once zebra reports the VNI
(polled every 0.25 s), BGP updates between nodes (milliseconds on a LAN).  Without VXLAN
devices zebra never reports the VNIs, so the actor keeps polling (bounded) and an apply may
wait for one ``vtysh`` state call to finish: part of the gap between the total and the sum.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.frr_actor import FRRActor
from pyroute2_cni.frr.control import FrrProcessControl
from pyroute2_cni.messages.crd import (
    Attachment,
    AttachmentType,
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NodeInfo,
    VrfDomainSpec,
)
from pyroute2_cni.messages.frr import FrrApplyReported
from pyroute2_cni.runtime.config import DaemonSection, FrrSection, Settings
from pyroute2_cni.runtime.metrics import Metrics
from tests.harness.frr_instance import FRR_BIN, FrrInstance, frr_in_new_netns
from tests.harness.lab_bench import FRR_TIMES
from tests.harness.plumb_bench import percentile
from tests.harness.procs import wait_until
from tests.harness.toy_actors import Recorder

NODE = "bench-n1"
APPLY_TIMEOUT = 120.0


class ReloadLog(logging.Handler):
    """The (validate, reload) seconds of each reload the actor logs."""

    def __init__(self) -> None:
        super().__init__()
        self.splits: list[tuple[float, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = FRR_TIMES.search(record.getMessage())
        if match:
            self.splits.append((float(match[1]), float(match[2])))


def domain(index: int) -> VrfDomainSpec:
    vrf = 500 + index
    return VrfDomainSpec(
        name=f"vrf-{vrf}",
        vrf=vrf,
        table=10000 + vrf,
        prefix=f"10.{100 + index}.0.0",
        prefixlen=16,
        ipblocklen=26,
        attachments=(Attachment(type=AttachmentType.L3VNI, vni=60000 + vrf),),
    )


def peer(index: int) -> NodeInfo:
    return NodeInfo(name=f"bench-p{index}", internal_ip=f"192.0.2.{10 + index}")


@dataclass
class Rig:
    frr: FrrInstance
    actor: pykka.ActorRef[Any]
    reports: list[Any]
    log: ReloadLog

    def change(self, obj: VrfDomainSpec | NodeInfo) -> float:
        """Tell the actor one change; seconds until it reports the reload."""
        before = len(self._reloads())
        started = time.perf_counter()
        self.actor.tell(ClusterObjectChanged(kind=ChangeKind.ADDED, obj=obj))
        wait_until(
            lambda: len(self._reloads()) > before, APPLY_TIMEOUT, "FRR reload reported", 0.005
        )
        report = self._reloads()[-1]
        if not report.ok:
            raise RuntimeError(f"FRR apply failed: {report.reason}: {report.message}")
        return time.perf_counter() - started

    def _reloads(self) -> list[FrrApplyReported]:
        return [m for m in list(self.reports) if isinstance(m, FrrApplyReported)]

    def reference(self) -> float:
        """One frr-reload.py --test of the configuration FRR runs now."""
        started = time.perf_counter()
        result = self.frr.reload("--test", self.frr.config_file)
        if result.returncode != 0:
            raise RuntimeError(f"frr-reload.py --test failed: {result.stderr[-300:]}")
        return time.perf_counter() - started


@contextmanager
def rig() -> Iterator[Rig]:
    name = f"p2cni-frrbench-{os.getpid()}"
    with frr_in_new_netns(name) as frr:
        settings = Settings(
            daemon=DaemonSection(node_name=NODE),
            frr=FrrSection(config_file=str(frr.config_file), pathspace=name),
        )
        reports: list[Any] = []
        inboxes = [
            Recorder.start(_hooks(n), seen=reports) for n in ("netlink", "watcher", "keeper")
        ]
        addresses = [Address(n) for n in ("netlink", "watcher", "keeper")]
        for address, ref in zip(addresses, inboxes, strict=True):
            address.bind(ref)
        log = ReloadLog()
        logging.getLogger("pyroute2_cni").addHandler(log)
        logging.getLogger("pyroute2_cni").setLevel(logging.INFO)
        actor = FRRActor.start(
            _hooks("frr"),
            settings=settings,
            control_factory=lambda: FrrProcessControl(settings.frr),
            netlink=addresses[0],
            watcher=addresses[1],
            keeper=addresses[2],
            metrics=Metrics(),
            hostname=os.uname().nodename,
        )
        try:
            yield Rig(frr, actor, reports, log)
        finally:
            actor.stop()
            for ref in inboxes:
                ref.stop()
            logging.getLogger("pyroute2_cni").removeHandler(log)


def _hooks(name: str) -> ActorHooks:
    return ActorHooks(name=name, generation=1, on_crash=lambda *a: None)


@dataclass
class Series:
    total: list[float] = field(default_factory=list)
    validate: list[float] = field(default_factory=list)
    reload: list[float] = field(default_factory=list)

    def add(self, total: float, split: tuple[float, float]) -> None:
        self.total.append(total)
        self.validate.append(split[0])
        self.reload.append(split[1])


def bench(rounds: int) -> dict[str, Any]:
    with rig() as r:
        start = ClusterSnapshot(
            domains=(domain(0),),
            bindings=(),
            node_configs=(),
            nodes=(NodeInfo(name=NODE, internal_ip="192.0.2.1"), peer(0)),
            namespaces=(),
        )
        r.actor.tell(start)
        wait_until(lambda: r._reloads() or None, APPLY_TIMEOUT, "first FRR reload")
        series = {"domain": Series(), "peer": Series()}
        reference: list[float] = []
        for i in range(1, rounds + 1):
            for kind, obj in (("domain", domain(i)), ("peer", peer(i))):
                elapsed = r.change(obj)
                series[kind].add(elapsed, r.log.splits[-1])
                reference.append(r.reference())
        state = state_read(r.frr, rounds=STATE_READS)
    return {
        "rounds": rounds,
        "reference_test": reference,
        **{k: vars(s) for k, s in series.items()},
        **state,
    }


STATE_READS = 50
STATE_COMMANDS = ("show bgp l2vpn evpn summary json", "show vrf vni json", "show evpn vni json")


def state_read(frr: FrrInstance, rounds: int) -> dict[str, list[float]]:
    """Seconds per state read: FrrProcessControl.state() and one vtysh doing the same."""
    control = FrrProcessControl(FrrSection(config_file=str(frr.config_file), pathspace=frr.name))
    sockets, vtysh = [], []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            if not control.state().answered:
                raise RuntimeError("bgpd did not answer on its vty socket")
            sockets.append(time.perf_counter() - started)
            started = time.perf_counter()
            frr.vtysh(*STATE_COMMANDS)
            vtysh.append(time.perf_counter() - started)
    finally:
        control.close()
    return {"state_vty_sockets": sockets, "state_vtysh": vtysh}


def _row(label: str, values: Sequence[float], ref: float) -> str:
    p50, p99 = percentile(values, 0.5), percentile(values, 0.99)
    return f"{label:<28} {p50:8.2f} {p99:8.2f} {p50 / ref:8.1f}x"


def report(result: dict[str, Any], out: Callable[[str], None] = print) -> None:
    ref = percentile(result["reference_test"], 0.5)
    out(f"FRR apply on the host kernel {os.uname().release}, {result['rounds']} rounds each")
    out(f"{'':<28} {'p50 s':>8} {'p99 s':>8} {'p50/ref':>9}")
    for kind in ("domain", "peer"):
        data = result[kind]
        out(_row(f"{kind}: change -> applied", data["total"], ref))
        out(_row(f"{kind}:   validate (--test)", data["validate"], ref))
        out(_row(f"{kind}:   reload", data["reload"], ref))
    out(_row("reference: one --test", result["reference_test"], ref))
    out("change -> applied includes the 1 s debounce (FrrSection.debounce)")
    sockets, vtysh = result["state_vty_sockets"], result["state_vtysh"]
    out(
        f"state read ({len(sockets)} each): vty sockets p50 {percentile(sockets, 0.5) * 1e3:.2f} ms"
        f" p99 {percentile(sockets, 0.99) * 1e3:.2f} ms; one vtysh with the same commands p50 "
        f"{percentile(vtysh, 0.5) * 1e3:.2f} ms p99 {percentile(vtysh, 0.99) * 1e3:.2f} ms "
        f"({percentile(vtysh, 0.5) / percentile(sockets, 0.5):.0f}x)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.frr_apply_bench", description=__doc__
    )
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if os.geteuid() != 0 or not (FRR_BIN / "frr-reload.py").exists():
        print("frr_apply_bench: needs root and FRR (apt-get install frr frr-pythontools)")
        return 2
    result = bench(args.rounds)
    report(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
