"""The daemon's actor graph: who starts first, who talks to whom.

    CRDWatcher ──snapshot/changes──▶ Netlink, FRR, CNIServer
    IPAM ──NodeBlocksChanged──▶ Netlink;  Netlink ──ConfirmAllocation──▶ IPAM (and back)
    FRR ──VniKnown──▶ Netlink;  FRR ──FrrApplyReported──▶ CRDWatcher
    FRR ──BgpSessionsSeen──▶ RouteKeeper (holds a restarting peer's EVPN entries)
    CNIServer ──ask──▶ IPAM, Netlink   (from its workers, never from a handler)
    NodeCondition reads the readiness of all and writes the Node's Pyroute2CNIReady
    FRR, IPAM, RouteKeeper, CNIServer ──facts──▶ NodeState (the node's VRFNodeState)
    NodeState ──NodeProblems──▶ NodeCondition (the condition's message)
    CRDWatcher, IPAM, FRR, CNIServer, NodeState ──RecordEvent──▶ Events (Kubernetes Events
    on the objects concerned)

Addresses are created first and handed to constructors, so each actor can
be restarted without the others noticing more than a dropped message; a
restarted subscriber asks the watcher for a fresh snapshot.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from pyroute2_cni import __version__
from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.messages.crd import SendSnapshot
from pyroute2_cni.messages.ipam import RepublishBlocks
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class DataPlane:
    """What the actors drive on the node: the kernel (netlink, the EVPN tables), FRR, and
    the probes of peer daemons.  The daemon uses kernel_plane(); the scale bench's hollow
    nodes (tests/harness/hollow.py) pass one with no kernel and no FRR behind it."""

    netlink: Callable[[], Any]
    frr: Callable[[], Any]
    evpn_kernel: Callable[[], Any]
    evpn_monitor: Callable[..., Any]
    probe_livez: Callable[[str], bool]
    probe_bgp: Callable[[str], Any]
    # The name FRR shows as its hostname (hostNetwork: the host's).
    hostname: str


def kernel_plane(settings: Settings) -> DataPlane:
    """The real node: rtnetlink, FRR's processes, peers' :24800 over HTTP."""
    from pyroute2_cni.actors.route_keeper_actor import probe_bgp, probe_livez
    from pyroute2_cni.frr.control import FrrProcessControl
    from pyroute2_cni.netlink.evpn_kernel import EvpnMonitor, KernelEvpn
    from pyroute2_cni.netlink.sessions import KernelNetlink

    return DataPlane(
        netlink=KernelNetlink,
        frr=lambda: FrrProcessControl(settings.frr),
        evpn_kernel=KernelEvpn,
        evpn_monitor=EvpnMonitor,
        probe_livez=probe_livez(settings.daemon.metrics_port),
        probe_bgp=probe_bgp(settings.daemon.metrics_port),
        # hostNetwork: FRR's container shares the host's UTS namespace, so FRR
        # shows this name; rendering it leaves frr-reload.py nothing to change.
        hostname=os.uname().nodename,
    )


# On SIGTERM the daemon waits at most this long for zebra to exit (the pod is being
# replaced: FRR stops too) before its actors stop; see shutdown_linger.  Within the
# DaemonSet's terminationGracePeriodSeconds (30) with the actors' stop_timeout.
SHUTDOWN_LINGER = 5.0


def shutdown_linger(settings: Settings) -> Callable[[], bool] | None:
    """What the daemon does on SIGTERM before its actors stop: wait (bounded) until zebra
    has exited, so that the RouteKeeperActor holds the EVPN entries zebra takes on its
    way out and the next instance adopts them (frr.control.wait_zebra_gone).  None when
    FRR or the EVPN hold is off."""
    if not settings.frr.enabled or settings.frr.evpn_hold <= 0:
        return None
    from pyroute2_cni.frr.control import wait_zebra_gone

    frr = settings.frr

    def linger() -> bool:
        began = time.monotonic()
        gone = wait_zebra_gone(frr, SHUTDOWN_LINGER)
        took = time.monotonic() - began
        if gone:
            log.info("zebra is gone (%.1f s): stopping the actors", took)
        else:
            log.info("zebra still runs after %.1f s (only the daemon stops): stopping", took)
        return gone

    return linger


def build_actor_specs(
    settings: Settings,
    metrics: Metrics,
    readiness: Callable[[], HealthReport],
    plane: DataPlane | None = None,
) -> Sequence[ActorSpec]:
    # Imported here so `pyroute2-cni version` does not load pyroute2, zmq or kubernetes.
    from pyroute2_cni.actors.cni_server_actor import CNIServerActor
    from pyroute2_cni.actors.crd_watcher_actor import CRDWatcherActor
    from pyroute2_cni.actors.event_actor import EventActor
    from pyroute2_cni.actors.frr_actor import FRRActor
    from pyroute2_cni.actors.ipam_actor import IPAMActor
    from pyroute2_cni.actors.netlink_actor import NetlinkActor
    from pyroute2_cni.actors.node_condition_actor import NodeConditionActor
    from pyroute2_cni.actors.node_state_actor import NodeStateActor
    from pyroute2_cni.actors.route_keeper_actor import RouteKeeperActor
    from pyroute2_cni.ipam.store import KubeBlockStore
    from pyroute2_cni.kube.client import make_api_client

    plane = plane if plane is not None else kernel_plane(settings)
    node = settings.daemon.node_name
    watcher, ipam, netlink, frr, cni, keeper, condition, events, state = (
        Address(name)
        for name in (
            "crd-watcher",
            "ipam",
            "netlink",
            "frr",
            "cni-server",
            "route-keeper",
            "node-condition",
            "events",
            "node-state",
        )
    )

    def api() -> Any:
        return make_api_client(settings.daemon.kubeconfig)

    def resync_netlink() -> None:
        watcher.tell(SendSnapshot(to=netlink))
        ipam.tell(RepublishBlocks())

    def resync(address: Address) -> Callable[[], None]:
        def ask_for_snapshot() -> None:
            watcher.tell(SendSnapshot(to=address))

        return ask_for_snapshot

    def start_watcher(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return CRDWatcherActor.start(
            hooks,
            settings=settings,
            api_factory=api,
            subscribers=[netlink, ipam, frr, cni],
            events=events,
        )

    def start_netlink(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return NetlinkActor.start(
            hooks,
            node=node,
            settings=settings,
            backend_factory=plane.netlink,
            metrics=metrics,
            ipam=ipam,
        )

    def start_ipam(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return IPAMActor.start(
            hooks,
            node=node,
            settings=settings.ipam,
            store_factory=lambda: KubeBlockStore(
                api(),
                metrics,
                request_timeout=(
                    settings.ipam.request_connect_timeout,
                    settings.ipam.request_read_timeout,
                ),
            ),
            metrics=metrics,
            netlink=netlink,
            clock=time.monotonic,
            events=events,
            state=state,
        )

    def start_frr(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return FRRActor.start(
            hooks,
            settings=settings,
            control_factory=plane.frr,
            netlink=netlink,
            watcher=watcher,
            metrics=metrics,
            keeper=keeper,
            events=events,
            state=state,
            hostname=plane.hostname,
        )

    def start_keeper(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return RouteKeeperActor.start(
            hooks,
            settings=settings,
            kernel_factory=plane.evpn_kernel,
            monitor_factory=plane.evpn_monitor,
            probe=plane.probe_livez,
            remote=plane.probe_bgp,
            metrics=metrics,
            state=state,
        )

    def start_cni(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return CNIServerActor.start(
            hooks,
            settings=settings,
            ipam=ipam,
            netlink=netlink,
            readiness=readiness,
            metrics=metrics,
            state=state,
            events=events,
        )

    def start_condition(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return NodeConditionActor.start(
            hooks,
            node=node,
            readiness=readiness,
            api_factory=api,
            interval=settings.daemon.node_condition_interval,
            metrics=metrics,
        )

    def start_state(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return NodeStateActor.start(
            hooks,
            node=node,
            api_factory=api,
            readiness=readiness,
            metrics=metrics,
            version=__version__,
            interval=settings.daemon.node_condition_interval,
            min_interval=settings.daemon.node_state_min_interval,
            frr_managed=settings.frr.enabled,
            condition=condition,
            events=events,
        )

    def start_events(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return EventActor.start(hooks, node=node, api_factory=api, metrics=metrics)

    return [
        ActorSpec(name="events", start=start_events, address=events),
        # Before the actors that report to it, so their first facts find it.
        ActorSpec(name="node-state", start=start_state, address=state),
        ActorSpec(
            name="netlink", start=start_netlink, address=netlink, after_restart=resync_netlink
        ),
        ActorSpec(
            name="ipam",
            start=start_ipam,
            address=ipam,
            depends_on=("netlink",),
            after_restart=resync(ipam),
        ),
        ActorSpec(name="route-keeper", start=start_keeper, address=keeper),
        ActorSpec(
            name="frr",
            start=start_frr,
            address=frr,
            depends_on=("netlink",),
            after_restart=resync(frr),
        ),
        ActorSpec(
            name="cni-server",
            start=start_cni,
            address=cni,
            depends_on=("ipam", "netlink"),
            after_restart=resync(cni),
        ),
        ActorSpec(
            name="crd-watcher",
            start=start_watcher,
            address=watcher,
            depends_on=("netlink", "frr", "cni-server"),
        ),
        ActorSpec(name="node-condition", start=start_condition, address=condition),
    ]
