"""Pod plumbing latency: the NetlinkActor against Debian's bridge CNI plugin, same run.

    scripts/run-in-vrf-kernel -- .venv/bin/python -m tests.harness.plumb_bench [--pods 100]

Builds a "node" network namespace and one namespace per pod, then re-runs itself inside the
node namespace (one ``ip netns exec`` for the whole run, none per pod) and measures, one pod
at a time:

- pyroute2-cni: ``PlumbPod`` / ``UnplumbPod`` asked of a NetlinkActor (KernelNetlink, VRF 42,
  l3vni bridge) — the daemon's own path minus the CNI socket;
- reference: ``/usr/lib/cni/bridge`` with ``host-local`` IPAM, executed the way kubelet's
  runtime does (CNI_* environment, network config on stdin), ADD then DEL.

Prints p50/p99 per operation and the ratio ours/reference.  Timings under User-Mode Linux
only compare with timings of the same run; that is why the reference runs alongside.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

CNI_BIN = "/usr/lib/cni"
IP = "/usr/bin/ip"
TIMEOUT = 60.0


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def measure(count: int, op: Callable[[int], None]) -> list[float]:
    timings: list[float] = []
    for i in range(count):
        started = time.perf_counter()
        op(i)
        timings.append(time.perf_counter() - started)
    return timings


def ours(pods: Sequence[str]) -> dict[str, list[float]]:
    import pykka

    from pyroute2_cni.actors.base import ActorHooks
    from pyroute2_cni.actors.netlink_actor import NetlinkActor
    from pyroute2_cni.messages.base import Ok
    from pyroute2_cni.messages.crd import AttachmentType
    from pyroute2_cni.messages.ipam import BlockInfo, NodeBlocksChanged
    from pyroute2_cni.messages.netlink import (
        BringUpVrfDomain,
        DomainState,
        EnsureVrfDomain,
        PlumbPod,
        PodPlumbed,
        UnplumbPod,
    )
    from pyroute2_cni.netlink.sessions import KernelNetlink
    from pyroute2_cni.runtime.config import NetlinkSection, Settings
    from pyroute2_cni.runtime.metrics import Metrics
    from tests.harness.domains import SYSTEM_DOMAIN

    domain = replace(SYSTEM_DOMAIN, name="bench", prefix="10.42.0.0", ipblocklen=24)
    actor = NetlinkActor.start(
        ActorHooks(name="netlink", generation=1, on_crash=lambda *a: None),
        node="bench",
        settings=Settings(netlink=NetlinkSection(reconcile_interval=3600)),
        backend_factory=KernelNetlink,
        metrics=Metrics(),
    )

    def ask(message: Any) -> Any:
        return actor.ask(message, timeout=TIMEOUT)

    try:
        assert isinstance(ask(EnsureVrfDomain(domain=domain, system=True)), DomainState)
        blocks = (BlockInfo(vrf=42, cidr="10.42.0.0/24", gateway="10.42.0.1"),)
        assert ask(NodeBlocksChanged(blocks=blocks)) == Ok()
        assert isinstance(ask(BringUpVrfDomain(vrf=42)), DomainState)

        def add(i: int) -> None:
            reply = ask(
                PlumbPod(
                    container_id=f"bench{i:04d}",
                    ifname="eth0",
                    netns=f"/run/netns/{pods[i]}",
                    vrf=42,
                    attachment=AttachmentType.L3VNI,
                    address=f"10.42.0.{i + 2}",
                    prefixlen=24,
                    gateway="10.42.0.1",
                )
            )
            assert isinstance(reply, PodPlumbed), reply

        def delete(i: int) -> None:
            reply = ask(UnplumbPod(container_id=f"bench{i:04d}", ifname="eth0", netns=""))
            assert reply == Ok(), reply

        return {"ADD": measure(len(pods), add), "DEL": measure(len(pods), delete)}
    finally:
        actor.stop()
        pykka.ActorRegistry.stop_all()


def reference(pods: Sequence[str], data_dir: str) -> dict[str, list[float]]:
    config = json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "bench",
            "type": "bridge",
            "bridge": "cni-bench0",
            "isGateway": True,
            "mtu": 1450,
            "ipam": {
                "type": "host-local",
                "subnet": "10.88.0.0/16",
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": data_dir,
            },
        }
    )

    def call(command: str, i: int) -> None:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": f"ref{i:04d}",
            "CNI_NETNS": f"/run/netns/{pods[i]}",
            "CNI_IFNAME": "eth0",
            "CNI_PATH": CNI_BIN,
        }
        done = subprocess.run(
            [f"{CNI_BIN}/bridge"],
            input=config,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bridge {command} {i}: {done.stdout} {done.stderr}")

    return {
        "ADD": measure(len(pods), lambda i: call("ADD", i)),
        "DEL": measure(len(pods), lambda i: call("DEL", i)),
    }


def inside(pods: Sequence[str]) -> int:
    """Runs inside the node namespace."""
    subprocess.run([IP, "link", "set", "lo", "up"], check=True, timeout=TIMEOUT)
    results: dict[str, dict[str, list[float]]] = {}
    results["pyroute2-cni"] = ours(pods)
    with tempfile.TemporaryDirectory(prefix="plumb-bench-") as data_dir:
        results["bridge+host-local"] = reference(pods, data_dir)
    print(f"\npod plumbing, {len(pods)} pods one at a time, kernel {os.uname().release}")
    header = f"{'':20s} {'ADD p50':>9s} {'ADD p99':>9s} {'DEL p50':>9s} {'DEL p99':>9s}"
    print(header)
    print("-" * len(header))
    rows: dict[str, list[float]] = {}
    for name, timing in results.items():
        rows[name] = [percentile(timing[op], q) * 1e3 for op in ("ADD", "DEL") for q in (0.5, 0.99)]
        print(f"{name:20s} " + " ".join(f"{v:7.1f}ms" for v in rows[name]))
    ratio = [a / b for a, b in zip(rows["pyroute2-cni"], rows["bridge+host-local"], strict=True)]
    print(f"{'ratio ours/ref':20s} " + " ".join(f"{v:8.2f}x" for v in ratio))
    add_mean = statistics.mean(results["pyroute2-cni"]["ADD"]) * 1e3
    print(f"(pyroute2-cni ADD mean {add_mean:.1f} ms)")
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.plumb_bench")
    parser.add_argument("--pods", type=int, default=100)
    parser.add_argument("--inside", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.inside is not None:
        return inside(args.inside)
    if os.geteuid() != 0:
        print("plumb_bench: needs root", file=sys.stderr)
        return 2
    tag = f"pb{os.getpid()}"
    node = f"{tag}-node"
    pods = [f"{tag}-{i}" for i in range(args.pods)]
    made: list[str] = []
    try:
        for name in (node, *pods):
            subprocess.run([IP, "netns", "add", name], check=True, timeout=TIMEOUT)
            made.append(name)
        argv_inside = [sys.executable, "-m", "tests.harness.plumb_bench", "--inside", *pods]
        return subprocess.run(
            [IP, "netns", "exec", node, *argv_inside], check=False, timeout=3600
        ).returncode
    finally:
        for name in reversed(made):
            subprocess.run([IP, "netns", "del", name], check=False, timeout=TIMEOUT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
