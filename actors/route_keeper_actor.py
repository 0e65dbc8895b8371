"""RouteKeeperActor: keeps a peer's EVPN forwarding entries while its FRR restarts.

Inputs: EvpnChanges / EvpnResync (its monitor thread: one message per burst read),
EvpnChanged (one change), BgpSessionsSeen (FRRActor's poll), CheckHeld (self, every
second while something is held).  The decisions are
:class:`pyroute2_cni.values.evpn_hold.EvpnHold`'s; this actor owns the kernel socket, the
monitor thread and the peer probes (``GET http://<peer>:<metrics_port>/livez``, and
``/metrics`` for a peer behind route reflectors).  A probe that connects but gets no
answer in time says the daemon is there (its listener accepted us), busy: under load
/metrics may be slow, which is no sign of a dead node.  A refused connection says the
node is there and its daemon is not (its DaemonSet pod is being replaced): its kernel
still forwards, so its entries stay held (bounded by the hold time).  Only a node that
does not answer at all is gone.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from prometheus_client.parser import text_string_to_metric_families

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.messages.evpn import (
    BgpSessionsSeen,
    CheckHeld,
    EvpnChanged,
    EvpnChanges,
    EvpnResync,
)
from pyroute2_cni.messages.node_state import EvpnHeldSeen
from pyroute2_cni.netlink.evpn_kernel import hurry_this_thread
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.evpn_hold import (
    NO_ANSWER_IN_TIME,
    EvpnEntry,
    EvpnHold,
    EvpnKernel,
    PeerSession,
)

CHECK_INTERVAL = 1.0
PROBE_TIMEOUT = 1.0


class KeeperKernel(EvpnKernel, Protocol):
    def entries(self) -> list[EvpnEntry]: ...

    def close(self) -> None: ...


class Monitor(Protocol):
    def start(self) -> None: ...

    def close(self) -> None: ...


# The answer of a daemon that accepted the connection and did not answer in time.
SLOW = (0, "")
# The answer of a node whose kernel refused the connection: the node is up, its daemon
# is not listening (a DaemonSet pod being replaced, a rollout).  A node that is gone
# does not answer at all.
REFUSED = (-1, "")


def _get(address: str, port: int, path: str, timeout: float) -> tuple[int, str] | None:
    """(status, body) of ``GET http://address:port/path``; :data:`SLOW` when connected
    but the answer did not come within ``timeout``; :data:`REFUSED` when the node
    refused the connection; None when nothing answered at all."""
    conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.connect()
    except ConnectionRefusedError:
        conn.close()
        return REFUSED
    except OSError:
        conn.close()
        return None
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode("utf-8", "replace")
    except TimeoutError:
        return SLOW
    except OSError:
        return None
    finally:
        conn.close()


def probe_livez(port: int, timeout: float = PROBE_TIMEOUT) -> Callable[[str], bool]:
    """True when the node at ``address`` is there: its pyroute2-cni daemon answers /livez
    (whatever it says: a daemon still starting is not live yet), accepts the connection
    and is too busy to answer in time, or is being restarted (the node's kernel refuses
    the connection).  Only a node that does not answer at all is gone."""

    def probe(address: str) -> bool:
        return _get(address, port, "/livez", timeout) is not None

    return probe


ESTABLISHED_METRIC = "pyroute2_cni_bgp_established_seconds"
ZEBRA_UPTIME_METRIC = "pyroute2_cni_frr_zebra_uptime_seconds"


def probe_bgp(port: int, timeout: float = PROBE_TIMEOUT) -> Callable[[str], PeerSession | None]:
    """How the daemon at ``address`` sees its own BGP sessions (its /metrics); None when
    it does not answer or does not say; state NO_ANSWER_IN_TIME when it is too slow or
    being restarted (the node is there, its sessions unknown)."""

    def probe(address: str) -> PeerSession | None:
        answer = _get(address, port, "/metrics", timeout)
        if answer is None:
            return None
        # A node that answers is there; a daemon being replaced or still starting does
        # not say how its sessions are (yet).
        told = peer_session_from_metrics(answer[1]) if answer[0] == 200 else None
        return told or PeerSession(state=NO_ANSWER_IN_TIME, uptime=0.0)

    return probe


def peer_session_from_metrics(text: str) -> PeerSession | None:
    values: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name in (ESTABLISHED_METRIC, ZEBRA_UPTIME_METRIC):
                    values[sample.name] = float(sample.value)
    except ValueError:
        return None
    up = values.get(ESTABLISHED_METRIC)
    if up is None:
        return None
    return PeerSession(
        state="Established" if up > 0 else "Down",
        uptime=up,
        zebra_uptime=values.get(ZEBRA_UPTIME_METRIC),
    )


class RouteKeeperActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        settings: Settings,
        kernel_factory: Callable[[], KeeperKernel],
        monitor_factory: Callable[
            [Callable[[tuple[tuple[bool, EvpnEntry], ...]], None], Callable[[str], None]],
            Monitor,
        ],
        probe: Callable[[str], bool],
        remote: Callable[[str], PeerSession | None] = lambda _address: None,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
        state: Address | None = None,
    ) -> None:
        super().__init__(hooks)
        self._state = state
        self._held_told: int | None = None
        self._hold_time = settings.frr.evpn_hold
        self._kernel_factory = kernel_factory
        self._monitor_factory = monitor_factory
        self._probe = probe
        self._remote = remote
        self._metrics = metrics
        self._clock = clock
        self._kernel: KeeperKernel | None = None
        self._monitor: Monitor | None = None
        self._hold: EvpnHold | None = None
        self._timer: threading.Timer | None = None
        self._released_seen: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------
    def on_start(self) -> None:
        if self._hold_time <= 0:
            self.set_ready(True, "EVPN hold disabled in server.ini [frr] evpn_hold")
            return
        # This thread puts a withdrawal's copies back: it must not wait behind FRR.
        hurry_this_thread()
        self._kernel = self._kernel_factory()
        self._hold = EvpnHold(
            kernel=self._kernel,
            clock=self._clock,
            probe=self._probe,
            remote=self._remote,
            hold=self._hold_time,
        )
        # Subscribe before the dump, so nothing between the two is missed.
        self._monitor = self._monitor_factory(self._on_events, self._on_lost)
        self._monitor.start()
        entries = self._kernel.entries()
        self._hold.snapshot(entries)
        # Copies a previous instance left (it stopped while they were held): still what
        # this node forwards with until our FRR has re-learned them.
        self._hold.adopt(entries)
        self._after(self._hold)
        self.set_ready(True)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self._monitor is not None:
            self._monitor.close()
        if self._kernel is not None:
            self._kernel.close()

    def _on_events(self, changes: tuple[tuple[bool, EvpnEntry], ...]) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(EvpnChanges(changes=changes))

    def _on_lost(self, error: str) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(EvpnResync(error=error))

    def _schedule_check(self) -> None:
        if self.stopping.is_set() or (self._timer is not None and self._timer.is_alive()):
            return
        timer = threading.Timer(CHECK_INTERVAL, self._tell_check)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _tell_check(self) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(CheckHeld())

    # -- messages ----------------------------------------------------------
    def handle(self, message: Any) -> Any:
        hold = self._hold
        if hold is None:
            return Ok()
        match message:
            case EvpnChanged(added=True, entry=entry):
                hold.added(entry)
            case EvpnChanged(added=False, entry=entry):
                hold.deleted(entry)
            case EvpnChanges(changes=changes):
                hold.changed(changes)
            case EvpnResync(error=error) if error:
                # The monitor thread is gone: a new instance starts a new one.
                raise RuntimeError(f"EVPN monitor failed: {error}")
            case EvpnResync():
                assert self._kernel is not None
                hold.snapshot(self._kernel.entries())
            case BgpSessionsSeen(view=view):
                hold.bgp(view)
            case CheckHeld():
                self._timer = None
                hold.check()
            case _:
                return self.unknown(message)
        # Again with each BGP poll: a restarted NodeStateActor learns it.
        self._after(hold, tell_state=isinstance(message, BgpSessionsSeen))
        return Ok()

    def _after(self, hold: EvpnHold, *, tell_state: bool = False) -> None:
        """Metrics, the node state and the next check, after the hold changed."""
        self._metrics.evpn_held.set(len(hold.held))
        if self._state is not None and (tell_state or len(hold.held) != self._held_told):
            self._held_told = len(hold.held)
            self._state.tell(EvpnHeldSeen(held=len(hold.held)))
        for reason, count in hold.released.items():
            delta = count - self._released_seen.get(reason, 0)
            if delta:
                self._metrics.evpn_released.labels(reason).inc(delta)
        self._released_seen = dict(hold.released)
        if hold.held:
            self._schedule_check()
