"""Issue #15 item 2: an actor whose `on_start` fails releases what it opened.

Pykka calls neither `on_stop` nor `on_failure` when `on_start` raises, so
BaseActor must run `release()` itself.  For each real actor a failure is
forced in `on_start` after it opened something; the supervisor restarts it 5
times; afterwards the process holds no more file descriptors or threads than
before, and every resource the fakes handed out was closed.

The fakes hold a real descriptor each (like the real backends' sockets), so
a leak shows in /proc/self/fd as well as in `Held.open`.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka
import pytest

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.cni_server_actor import CNIServerActor
from pyroute2_cni.actors.crd_watcher_actor import CRDWatcherActor
from pyroute2_cni.actors.frr_actor import FRRActor
from pyroute2_cni.actors.ipam_actor import IPAMActor
from pyroute2_cni.actors.netlink_actor import NetlinkActor
from pyroute2_cni.actors.route_keeper_actor import RouteKeeperActor
from pyroute2_cni.ipam.blocks import Block
from pyroute2_cni.kube.transport import WatchTimings
from pyroute2_cni.runtime.config import (
    DaemonSection,
    FrrSection,
    IpamSection,
    Settings,
    SupervisorSection,
)
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec, Supervisor
from pyroute2_cni.values.evpn_hold import EvpnEntry
from tests.harness.fake_frr import FakeFrrControl
from tests.harness.fake_ipam_store import FakeBlockStore
from tests.harness.fake_kube_watch import FakeCluster, FakeKubeApi
from tests.harness.fake_netlink import FakeKernel, FakeNetlink
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

RESTARTS = 5
SETTINGS = SupervisorSection(
    heartbeat_interval=0.05,
    backoff_initial=0.01,
    backoff_max=0.02,
    max_restarts=RESTARTS + 5,
    stop_timeout=2.0,
)


class Held:
    """Descriptors the fakes hold; `open` counts those not closed yet."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0
        self.made = 0

    def take(self) -> int:
        with self._lock:
            self.open += 1
            self.made += 1
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)

    def give_back(self, fd: int) -> None:
        if fd < 0:
            return
        os.close(fd)
        with self._lock:
            self.open -= 1


def forced(what: str) -> OSError:
    return OSError(errno.EIO, f"forced failure in on_start: {what}")


# -- fakes that hold a descriptor -------------------------------------------------------


class HeldNetlink(FakeNetlink):
    """The inventory (link dump) fails, after the backend was opened."""

    def __init__(self, held: Held) -> None:
        super().__init__(FakeKernel())
        self._held = held
        self._fd = held.take()

    def links(self, kind: str = "") -> Any:
        raise forced("netlink link dump")

    def close(self) -> None:
        self._held.give_back(self._fd)
        self._fd = -1
        super().close()


class HeldStore(FakeBlockStore):
    """Listing this node's blocks fails with an unexpected error (not a StoreError)."""

    def __init__(self, held: Held) -> None:
        super().__init__()
        self._held = held
        self._fd = held.take()

    def list_node_blocks(self, node: str) -> list[Block]:
        raise forced("IPBlock list")

    def close(self) -> None:
        self._held.give_back(self._fd)
        self._fd = -1
        super().close()


class HeldFrr(FakeFrrControl):
    def __init__(self, held: Held) -> None:
        super().__init__()
        self._held = held
        self._fd = held.take()

    def close(self) -> None:
        self._held.give_back(self._fd)
        self._fd = -1
        super().close()


class HeldKubeApi(FakeKubeApi):
    def __init__(self, cluster: FakeCluster, held: Held) -> None:
        super().__init__(cluster)
        self._held = held
        self._fd = held.take()

    def close(self) -> None:
        if self._fd >= 0:
            self._held.give_back(self._fd)
            self._fd = -1
        super().close()


class HeldEvpnKernel:
    """The first dump fails, after the kernel handle and the monitor were opened."""

    def __init__(self, held: Held) -> None:
        self._held = held
        self._fd = held.take()

    def entries(self) -> list[EvpnEntry]:
        raise forced("EVPN entry dump")

    def restore(self, entry: EvpnEntry) -> None:
        pass

    def release(self, entry: EvpnEntry) -> None:
        pass

    def close(self) -> None:
        self._held.give_back(self._fd)
        self._fd = -1


class HeldMonitor:
    def __init__(self, held: Held) -> None:
        self._held = held
        self._fd = held.take()

    def start(self) -> None:
        pass

    def close(self) -> None:
        self._held.give_back(self._fd)
        self._fd = -1


# Where no injection point fails naturally after a resource is open, the
# failure comes right after the real on_start: the worst case, all opened.
class FrrFailingAfterStart(FRRActor):
    def on_start(self) -> None:
        super().on_start()
        raise forced("after FRRActor.on_start")


class WatcherFailingAfterStart(CRDWatcherActor):
    def on_start(self) -> None:
        super().on_start()
        raise forced("after CRDWatcherActor.on_start (pumps running)")


# -- one start function per actor --------------------------------------------------------

Starter = Callable[[ActorHooks], pykka.ActorRef[Any]]


def cni_server(held: Held, tmp_path: Path) -> Starter:
    # Longer than sockaddr_un allows: zmq's bind fails after the context and
    # the ROUTER socket exist.
    endpoint = f"ipc://{tmp_path}/{'d' * 120}/cni.sock"
    settings = Settings(daemon=DaemonSection(node_name="node-a", socket=endpoint))

    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return CNIServerActor.start(
            hooks,
            settings=settings,
            ipam=Address("ipam"),
            netlink=Address("netlink"),
            readiness=lambda: HealthReport(live=True, ready=False, lines=()),
            metrics=Metrics(),
            workers=2,
        )

    return start


def netlink(held: Held, tmp_path: Path) -> Starter:
    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return NetlinkActor.start(
            hooks,
            node="node-a",
            settings=Settings(),
            backend_factory=lambda: HeldNetlink(held),
            metrics=Metrics(),
        )

    return start


def ipam(held: Held, tmp_path: Path) -> Starter:
    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return IPAMActor.start(
            hooks,
            node="node-a",
            settings=IpamSection(),
            store_factory=lambda: HeldStore(held),
            metrics=Metrics(),
            netlink=None,
            clock=time.monotonic,
        )

    return start


def frr(held: Held, tmp_path: Path) -> Starter:
    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return FrrFailingAfterStart.start(
            hooks,
            settings=Settings(),
            control_factory=lambda: HeldFrr(held),
            netlink=None,
            watcher=None,
            metrics=Metrics(),
        )

    return start


def crd_watcher(held: Held, tmp_path: Path) -> Starter:
    cluster = FakeCluster()

    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return WatcherFailingAfterStart.start(
            hooks,
            settings=Settings(),
            api_factory=lambda: None,
            subscribers=[],
            timings=WatchTimings(stop_timeout=2.0),
            edge_factory=lambda: HeldKubeApi(cluster, held),
        )

    return start


def route_keeper(held: Held, tmp_path: Path) -> Starter:
    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return RouteKeeperActor.start(
            hooks,
            settings=Settings(frr=FrrSection(evpn_hold=120.0)),
            kernel_factory=lambda: HeldEvpnKernel(held),
            monitor_factory=lambda _on_event, _on_lost: HeldMonitor(held),
            probe=lambda _address: True,
            metrics=Metrics(),
        )

    return start


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize(
    "make_start",
    [cni_server, netlink, ipam, frr, crd_watcher, route_keeper],
    ids=lambda f: f.__name__,
)
def test_failed_on_start_releases_what_it_opened(
    make_start: Callable[[Held, Path], Starter], tmp_path: Path
) -> None:
    held = Held()
    start = make_start(held, tmp_path)
    refs: list[pykka.ActorRef[Any]] = []

    def tracked(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        ref = start(hooks)
        refs.append(ref)
        return ref

    spec = ActorSpec(name="subject", start=tracked, address=Address("subject"))
    metrics = Metrics()
    fds_before, threads_before = open_fds(), threading.active_count()
    supervisor = Supervisor([spec], SETTINGS, metrics)
    stop = threading.Event()
    runner = threading.Thread(target=supervisor.run, args=(stop,), daemon=True)
    supervisor.start()
    runner.start()
    try:

        def restarted() -> float:
            value = metrics.registry.get_sample_value(
                "pyroute2_cni_actor_restarts_total", {"actor": "subject"}
            )
            return (value or 0.0) >= RESTARTS

        wait_for(restarted, 10.0, f"{RESTARTS} restarts")
    finally:
        stop.set()
        runner.join(timeout=10)
    wait_for(lambda: not any(r.is_alive() for r in refs), 5.0, "every instance stopped")
    # Pump and timer threads end a little after their actor: wait, bounded.
    wait_for(
        lambda: threading.active_count() <= threads_before,
        5.0,
        f"threads back to {threads_before} (now {threading.active_count()})",
    )
    fds_after = open_fds()
    # The figures for the reliability report (visible with --log-cli-level=INFO).
    logging.getLogger(__name__).info(
        "%s: %d failed starts, %d fake resources made, %d left open, fds %d -> %d",
        make_start.__name__,
        len(refs),
        held.made,
        held.open,
        fds_before,
        fds_after,
    )
    assert len(refs) > RESTARTS
    assert held.open == 0, f"{held.open} of {held.made} fake resources left open"
    leaked = fds_after - fds_before
    assert leaked <= 0, f"{leaked} file descriptors leaked over {len(refs)} failed starts"
