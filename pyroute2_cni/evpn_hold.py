"""Keep a restarting peer's EVPN forwarding entries while its FRR comes back.

Why: FRR's BGP graceful restart does not cover the l2vpn evpn family (its
helper retains stale paths only for the AFI/SAFIs up to SAFI_MPLS_VPN), so
when FRR restarts on one node every other node's zebra removes that node's
type-5 routes, router-MAC neighbours and VXLAN FDB entries at once, and
cross-node traffic stops until the sessions are back and the routes are
re-learned.  This module is the helper FRR lacks, in the kernel rather than
in BGP:

- It follows the entries zebra installs for remote VTEPs (routes of protocol
  bgp in VRF tables, externally learned neighbours and FDB entries).
- When zebra deletes one whose VTEP is a BGP peer -- or, in route-reflector
  mode, another node's VTEP -- it puts a copy back at once (routes with their
  own protocol and a worse metric, so zebra's route wins when it returns), and
  remembers it as *held*.
- Each check decides, per VTEP, whether the hold still makes sense:

  * the session to the peer stays up for ``confirm`` seconds after the
    deletion (its uptime is older than the hold): a real withdrawal, release;
  * the session is Established again: release what zebra has re-installed,
    and everything after ``regrace`` seconds;
  * the session is down (or not configured yet, as when our own bgpd has just
    started) and the peer's daemon does not answer its /livez: the node is gone,
    release;
  * held longer than ``hold`` seconds: release.

  "The session" is ours to the peer in a full mesh.  With route reflectors the
  peer is not our neighbour (our sessions to the reflectors stay up while it
  restarts), so the peer's own daemon is asked instead: how long all of its
  Established sessions have been up (``remote``); no answer means the node is gone.

Pure logic: the kernel, the clock, BGP state and the peer probe are passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("pyroute2_cni.evpn_hold")

ROUTE = "route"
NEIGH = "neigh"
FDB = "fdb"


@dataclass(frozen=True, slots=True, kw_only=True)
class EvpnEntry:
    """One kernel entry towards a remote VTEP.

    ``owned`` is True for zebra's entries (protocol bgp, or NTF_EXT_LEARNED);
    the copies this module restores are not owned.
    """

    kind: str  # ROUTE, NEIGH or FDB
    vtep: str  # the remote VTEP address the entry sends to
    ifindex: int = 0
    table: int = 0  # ROUTE
    dst: str = ""  # ROUTE: prefix "a.b.c.d/len"; NEIGH: the neighbour address
    lladdr: str = ""  # NEIGH, FDB
    vni: int = 0  # FDB, when the entry names one
    onlink: bool = False  # ROUTE
    owned: bool = True

    @property
    def key(self) -> tuple[object, ...]:
        if self.kind == ROUTE:
            return (ROUTE, self.table, self.dst)
        if self.kind == NEIGH:
            return (NEIGH, self.ifindex, self.dst)
        return (FDB, self.ifindex, self.lladdr, self.vtep)

    def describe(self) -> str:
        if self.kind == ROUTE:
            return f"route {self.dst} table {self.table} via {self.vtep}"
        if self.kind == NEIGH:
            return f"neighbour {self.dst} lladdr {self.lladdr} on ifindex {self.ifindex}"
        return f"fdb {self.lladdr} dst {self.vtep} on ifindex {self.ifindex}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerSession:
    state: str
    uptime: float  # seconds the session has been Established (0 when it is not)


@dataclass(frozen=True, slots=True, kw_only=True)
class BgpView:
    """The local bgpd's sessions at ``taken``; ``answered`` is False when FRR did not reply."""

    answered: bool
    taken: float
    sessions: Mapping[str, PeerSession] = field(default_factory=dict)
    # The other nodes' VTEP addresses; those that are not our BGP neighbours
    # (route-reflector mode) are judged by what their daemons say.
    nodes: frozenset[str] = frozenset()


class EvpnKernel(Protocol):
    def restore(self, entry: EvpnEntry) -> None:
        """Put a copy of (a deleted) ``entry`` back; idempotent."""

    def release(self, entry: EvpnEntry) -> None:
        """Remove the copy made by :meth:`restore`; idempotent."""


@dataclass(slots=True)
class _Held:
    entry: EvpnEntry
    since: float


class EvpnHold:
    def __init__(
        self,
        *,
        kernel: EvpnKernel,
        clock: Callable[[], float],
        probe: Callable[[str], bool],
        remote: Callable[[str], PeerSession | None] = lambda _vtep: None,
        hold: float = 120.0,
        regrace: float = 10.0,
        confirm: float = 10.0,
    ) -> None:
        self._kernel = kernel
        self._clock = clock
        self._probe = probe
        self._remote = remote
        self._hold = hold
        self._regrace = regrace
        self._confirm = confirm
        self._known: dict[tuple[object, ...], EvpnEntry] = {}
        self._held: dict[tuple[object, ...], _Held] = {}
        self._bgp = BgpView(answered=False, taken=float("-inf"))
        self._peers: frozenset[str] = frozenset()
        self._nodes: frozenset[str] = frozenset()
        self._back_since: dict[str, float] = {}
        self._up_since: dict[str, float] = {}
        self.restored = 0
        self.released: dict[str, int] = {}

    # -- inputs -------------------------------------------------------------
    def snapshot(self, entries: Iterable[EvpnEntry]) -> None:
        """The owned entries present now (start, or after the monitor lost events)."""
        self._known = {e.key: e for e in entries if e.owned}

    def bgp(self, view: BgpView) -> None:
        self._bgp = view
        # A bgpd that has just started answers before its neighbours are configured:
        # an empty answer does not forget the peers.
        if view.answered and view.sessions:
            self._peers = frozenset(view.sessions)
        if view.nodes:
            self._nodes = view.nodes

    def added(self, entry: EvpnEntry) -> None:
        if entry.owned:
            self._known[entry.key] = entry

    def deleted(self, entry: EvpnEntry) -> None:
        # A route's protocol says whose it is; a neighbour's deletion notice may lack
        # the flags and the address the add had, so the entry seen added decides.
        if entry.kind == ROUTE and not entry.owned:
            return
        known = self._known.pop(entry.key, None)
        if known is None or self._hold <= 0 or entry.key in self._held:
            return
        entry = known
        if entry.vtep not in self._peers and entry.vtep not in self._nodes:
            return  # a pod's neighbour, or a peer of the past: nothing to hold for
        try:
            self._kernel.restore(entry)
        except OSError as exc:
            log.warning("could not restore %s: %s", entry.describe(), exc)
            return
        self._held[entry.key] = _Held(entry, self._clock())
        self.restored += 1
        log.info("holding %s while the routes of %s are away", entry.describe(), entry.vtep)

    # -- the periodic decision ------------------------------------------------
    @property
    def held(self) -> tuple[EvpnEntry, ...]:
        return tuple(h.entry for h in self._held.values())

    def check(self) -> None:
        if not self._held:
            return
        now = self._clock()
        by_vtep: dict[str, list[_Held]] = {}
        for item in self._held.values():
            by_vtep.setdefault(item.entry.vtep, []).append(item)
        for vtep, items in by_vtep.items():
            reason = self._verdict(vtep, items, now)
            if reason is not None:
                for item in items:
                    self._release(item, reason)
                continue
            if vtep in self._back_since:
                # Session back: what zebra re-installed needs no copy any more.
                for item in items:
                    if item.entry.key in self._known:
                        self._release(item, "re-learned")

    def _verdict(self, vtep: str, items: list[_Held], now: float) -> str | None:
        oldest = min(item.since for item in items)
        if now - oldest > self._hold:
            return "hold time over"
        if self._bgp.taken <= oldest:
            return None  # no word from bgpd since the deletion yet
        if not self._bgp.answered:
            # Our own FRR is away (restarting); the peer may be fine.
            return None if self._probe(vtep) else "peer daemon not answering"
        session = self._bgp.sessions.get(vtep)
        remote = session is None and vtep not in self._peers and vtep in self._nodes
        if remote:
            # Not our neighbour (route reflectors): the peer's daemon tells.
            session = self._remote(vtep)
            if session is None:
                return "peer daemon not answering"
        if session is not None and session.state == "Established":
            if session.uptime > now - oldest:
                # The session outlived the deletion.  A restarting peer may withdraw
                # before its session goes (bgpd loses zebra first), so wait a little.
                seen = self._up_since.setdefault(vtep, now)
                return "withdrawn by the peer" if now - seen >= self._confirm else None
            back = self._back_since.setdefault(vtep, now)
            return "peer back" if now - back >= self._regrace else None
        self._back_since.pop(vtep, None)
        self._up_since.pop(vtep, None)
        if remote:
            return None  # its daemon answered: its FRR is on its way back
        return None if self._probe(vtep) else "peer daemon not answering"

    def _release(self, item: _Held, reason: str) -> None:
        key = item.entry.key
        if self._held.pop(key, None) is None:
            return
        try:
            # A neighbour or FDB entry zebra re-installed replaced our copy: it is zebra's
            # now.  Our route copy has its own metric and always goes.
            if item.entry.kind == ROUTE or key not in self._known:
                self._kernel.release(item.entry)
        except OSError as exc:
            log.warning("could not release %s: %s", item.entry.describe(), exc)
        self.released[reason] = self.released.get(reason, 0) + 1
        if not any(h.entry.vtep == item.entry.vtep for h in self._held.values()):
            self._back_since.pop(item.entry.vtep, None)
            self._up_since.pop(item.entry.vtep, None)
        log.info("released %s: %s", item.entry.describe(), reason)

    def release_all(self, reason: str) -> None:
        for item in list(self._held.values()):
            self._release(item, reason)
