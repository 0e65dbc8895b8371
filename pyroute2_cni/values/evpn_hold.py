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
  remembers it as *held*.  A burst of deletions read together is put back in
  one kernel exchange, routes first (:data:`RESTORE_ORDER`): zebra removes the
  router MAC and the FDB entry before the route, and without the route the
  traffic has nowhere to go, while a missing neighbour only queues it briefly.
- Each check decides, per VTEP, whether the hold still makes sense:

  * the session to the peer stays up for ``confirm`` seconds after the
    deletion (its uptime is older than the hold): a real withdrawal, release --
    unless a zebra restarted as the entries went (ours sweeps the routes at its
    start; the peer's bgpd withdraws when its zebra goes): then the session stays
    up while the routes are away, and they go as zebra re-learns them, per scope;
  * the session is Established again: release what zebra has re-installed at
    once; after ``regrace`` seconds, a route once zebra has re-learned a route of
    the peer in the same table, and neighbours and FDB entries once no route of
    the peer is held any more (they resolve the held routes' next hop); everything
    after ``REGRACE_LIMIT`` regraces (the peer may have nothing left to advertise).
    Evidence from another VRF proves nothing: a restarted bgpd advertises its
    VRFs one after the other, seconds apart;
  * the session is down (or not configured yet, as when our own bgpd has just
    started) and the peer's node has not answered its /livez probe for ``silent``
    seconds: the node is gone, release.  One unanswered probe proves nothing (a
    node whose FRR restarts is busy; under load /metrics may answer late), and a
    refused connection is an answer: the node is there while its daemon and FRR are
    replaced (a rollout), and its kernel still forwards;
  * held longer than ``hold`` seconds: release.

  "The session" is ours to the peer in a full mesh.  With route reflectors the
  peer is not our neighbour (our sessions to the reflectors stay up while it
  restarts), so the peer's own daemon is asked instead: how long all of its
  Established sessions have been up (``remote``); no answer for ``silent``
  seconds means the node is gone, and an answer too slow to read
  (:data:`NO_ANSWER_IN_TIME`) counts as neither up nor gone.

Pure logic: the kernel, the clock, BGP state and the peer probe are passed in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger("pyroute2_cni.values.evpn_hold")

ROUTE = "route"
NEIGH = "neigh"
FDB = "fdb"
# Restore order within a burst: the route carries the traffic; neighbour and FDB entry
# only resolve its next hop.
RESTORE_ORDER = {ROUTE: 0, NEIGH: 1, FDB: 2}
# A PeerSession state for a peer that is there but did not say how its sessions are: its
# daemon accepted the connection but did not answer in time, or its kernel refused the
# connection (the daemon is being restarted).
NO_ANSWER_IN_TIME = "NoAnswerInTime"
# A peer whose session is back but whose routes zebra has not re-learned is held at most
# this many regraces (then its routes are taken as withdrawn).
REGRACE_LIMIT = 3
# _verdict's answer for "session back a regrace ago": release per scope, not all.
_REGRACE_OVER = "regrace over"
# _verdict's answer for "a zebra restarted as the entries went": release per scope as
# zebra re-learns them, without the REGRACE_LIMIT (the hold time bounds it).
_ZEBRA_BACK = "zebra back"
# A zebra started at most this long before a deletion caused it: zebra sweeps the
# previous instance's routes right after its start, and a peer's bgpd withdraws when its
# zebra goes, which watchfrr restarts within seconds.
ZEBRA_RESTART_WINDOW = 30.0


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
    # Seconds since the peer's zebra started (0 while it does not answer); None: unknown.
    zebra_uptime: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BgpView:
    """The local bgpd's sessions at ``taken``; ``answered`` is False when FRR did not reply."""

    answered: bool
    taken: float
    sessions: Mapping[str, PeerSession] = field(default_factory=dict)
    # The other nodes' VTEP addresses; those that are not our BGP neighbours
    # (route-reflector mode) are judged by what their daemons say.
    nodes: frozenset[str] = frozenset()
    # Our zebra, as PeerSession.zebra_uptime says the peer's.
    zebra_uptime: float | None = None


class EvpnKernel(Protocol):
    def restore_all(self, entries: Sequence[EvpnEntry]) -> list[OSError | None]:
        """Put copies of (deleted) ``entries`` back, in this order, in one exchange;
        idempotent.  Per entry: the error, or None when it is back."""

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
        silent: float = 3.0,
    ) -> None:
        self._kernel = kernel
        self._clock = clock
        self._probe = probe
        self._remote = remote
        self._hold = hold
        self._regrace = regrace
        self._confirm = confirm
        self._silent = silent
        self._known: dict[tuple[object, ...], EvpnEntry] = {}
        self._held: dict[tuple[object, ...], _Held] = {}
        self._bgp = BgpView(answered=False, taken=float("-inf"))
        self._peers: frozenset[str] = frozenset()
        self._nodes: frozenset[str] = frozenset()
        self._back_since: dict[str, float] = {}
        self._up_since: dict[str, float] = {}
        self._silent_since: dict[str, float] = {}
        self._added_at: dict[str, float] = {}  # by VTEP: when zebra last installed an entry
        # By (VTEP, table): when zebra last installed a route of the peer there.
        self._route_added_at: dict[tuple[str, int], float] = {}
        # VTEPs whose held entries a zebra restart took (see _zebra_restarted).
        self._zebra_restart: set[str] = set()
        self.restored = 0
        self.released: dict[str, int] = {}

    # -- inputs -------------------------------------------------------------
    def snapshot(self, entries: Iterable[EvpnEntry]) -> None:
        """The owned entries present now (start, or after the monitor lost events)."""
        self._known = {e.key: e for e in entries if e.owned}

    def adopt(self, copies: Iterable[EvpnEntry]) -> None:
        """Copies a previous instance left in the kernel: it stopped while it held them,
        as when its pod is replaced (a rollout) and its zebra took its entries on the
        way out.  They are held again from now and released by the same rules; the
        entries they stand for are back once our new FRR has its sessions."""
        now = self._clock()
        for entry in copies:
            if not entry.owned:
                self._held[entry.key] = _Held(entry, now)
                log.info("holding %s again, left by a previous instance", entry.describe())

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
            now = self._clock()
            self._added_at[entry.vtep] = now
            if entry.kind == ROUTE:
                self._route_added_at[(entry.vtep, entry.table)] = now

    def deleted(self, entry: EvpnEntry) -> None:
        self.changed([(False, entry)])

    def changed(self, changes: Sequence[tuple[bool, EvpnEntry]]) -> None:
        """(added, entry) as read together from the kernel, in order; what is to be held
        goes back in one kernel exchange, routes first."""
        restore: dict[tuple[object, ...], EvpnEntry] = {}
        for added, entry in changes:
            if added:
                self.added(entry)
                restore.pop(entry.key, None)  # zebra put it back itself
                continue
            kept = self._to_hold(entry)
            if kept is not None:
                restore[kept.key] = kept
        if not restore:
            return
        ordered = sorted(restore.values(), key=lambda e: RESTORE_ORDER[e.kind])
        try:
            errors = self._kernel.restore_all(ordered)
        except OSError as exc:
            errors = [exc] * len(ordered)
        now = self._clock()
        for entry, error in zip(ordered, errors, strict=True):
            if error is not None:
                log.warning("could not restore %s: %s", entry.describe(), error)
                continue
            # A fresh absence: what was seen of the peer coming back before is stale.
            self._back_since.pop(entry.vtep, None)
            self._up_since.pop(entry.vtep, None)
            self._held[entry.key] = _Held(entry, now)
            self.restored += 1
            log.info("holding %s while the routes of %s are away", entry.describe(), entry.vtep)

    def _to_hold(self, entry: EvpnEntry) -> EvpnEntry | None:
        """The entry as seen added when its deletion is one to hold for."""
        # A route's protocol says whose it is; a neighbour's deletion notice may lack
        # the flags and the address the add had, so the entry seen added decides.
        if entry.kind == ROUTE and not entry.owned:
            return None
        known = self._known.pop(entry.key, None)
        if self._hold <= 0:
            return None
        held = self._held.get(entry.key)
        if held is not None:
            # zebra re-installed it over our copy (an FDB entry without any notice) and
            # deletes it again before the copy was released: the peer is away again.
            return held.entry
        if known is None:
            return None
        if known.vtep not in self._peers and known.vtep not in self._nodes:
            return None  # a pod's neighbour, or a peer of the past: nothing to hold for
        return known

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
            if reason is not None and reason not in (_REGRACE_OVER, _ZEBRA_BACK):
                for item in items:
                    self._release(item, reason)
                continue
            if vtep in self._back_since:
                # Session back: what zebra re-installed needs no copy any more.
                for item in items:
                    if item.entry.key in self._known:
                        self._release(item, "re-learned")
            if reason in (_REGRACE_OVER, _ZEBRA_BACK):
                left = [h for h in items if h.entry.key in self._held]
                self._release_relearned_scopes(vtep, left, now, limit=reason == _REGRACE_OVER)

    def _release_relearned_scopes(
        self, vtep: str, items: list[_Held], now: float, *, limit: bool = True
    ) -> None:
        """The session has been back a regrace: release what the peer has shown it
        re-advertises (see the module docstring); all of it after REGRACE_LIMIT."""
        if limit and now - self._back_since.get(vtep, now) >= REGRACE_LIMIT * self._regrace:
            for item in items:
                self._release(item, "peer back")
            return
        never = float("-inf")
        for item in items:
            scope = (vtep, item.entry.table)
            if item.entry.kind == ROUTE and self._route_added_at.get(scope, never) >= item.since:
                self._release(item, "peer back")
        rest = [h for h in items if h.entry.key in self._held]
        if any(h.entry.kind == ROUTE for h in rest):
            return
        for item in rest:
            if self._added_at.get(vtep, never) >= item.since:
                self._release(item, "peer back")

    def _verdict(self, vtep: str, items: list[_Held], now: float) -> str | None:
        oldest = min(item.since for item in items)
        if now - oldest > self._hold:
            return "hold time over"
        if self._bgp.taken <= oldest:
            return None  # no word from bgpd since the deletion yet
        if not self._bgp.answered:
            # Our own FRR is away (restarting); the peer may be fine.
            return self._silence(vtep, now, self._probe(vtep))
        session = self._bgp.sessions.get(vtep)
        remote = session is None and vtep not in self._peers and vtep in self._nodes
        if remote:
            # Not our neighbour (route reflectors): the peer's daemon tells.
            session = self._remote(vtep)
            verdict = self._silence(vtep, now, session is not None)
            if session is None or session.state == NO_ANSWER_IN_TIME:
                return verdict  # nothing learned about its sessions: keep the timers
        if session is not None and session.state == "Established":
            if session.uptime > now - oldest:
                if self._zebra_restarted(vtep, oldest, now):
                    # Our zebra swept the routes at its start, or the peer's bgpd lost
                    # its zebra: the routes come back with the session up all along.
                    self._up_since.pop(vtep, None)
                    self._back_since.setdefault(vtep, now)
                    return _ZEBRA_BACK
                # The session outlived the deletion.  A restarting peer may withdraw
                # before its session goes (bgpd loses zebra first), so wait a little.
                seen = self._up_since.setdefault(vtep, now)
                return "withdrawn by the peer" if now - seen >= self._confirm else None
            back = self._back_since.setdefault(vtep, now)
            if now - back < self._regrace:
                return None
            # A session up is not routes back: a bgpd that watchfrr restarted, or one
            # still loading its configuration, advertises its routes seconds later;
            # the caller releases what the peer has shown it re-advertises.
            return _REGRACE_OVER
        self._back_since.pop(vtep, None)
        self._up_since.pop(vtep, None)
        if remote:
            return None  # its daemon answered: its FRR is on its way back
        return self._silence(vtep, now, self._probe(vtep))

    def _zebra_restarted(self, vtep: str, oldest: float, now: float) -> bool:
        """Whether our zebra or the peer's (asked through its daemon) is away or started
        within ZEBRA_RESTART_WINDOW before the deletion."""
        if vtep in self._zebra_restart:
            return True
        ours = self._bgp.zebra_uptime
        if ours is not None and _started(ours, self._bgp.taken) >= oldest - ZEBRA_RESTART_WINDOW:
            self._zebra_restart.add(vtep)
            return True
        peer = self._remote(vtep)
        if peer is None or peer.state == NO_ANSWER_IN_TIME or peer.zebra_uptime is None:
            return False
        if _started(peer.zebra_uptime, now) >= oldest - ZEBRA_RESTART_WINDOW:
            self._zebra_restart.add(vtep)
            return True
        return False

    def _silence(self, vtep: str, now: float, answered: bool) -> str | None:
        """Gone only when its daemon has not answered for ``silent`` seconds: a node busy
        restarting its FRR may miss a probe or two."""
        if answered:
            self._silent_since.pop(vtep, None)
            return None
        since = self._silent_since.setdefault(vtep, now)
        return "peer daemon not answering" if now - since >= self._silent else None

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
            self._silent_since.pop(item.entry.vtep, None)
            self._zebra_restart.discard(item.entry.vtep)
        log.info("released %s: %s", item.entry.describe(), reason)

    def release_all(self, reason: str) -> None:
        for item in list(self._held.values()):
            self._release(item, reason)


def _started(uptime: float, at: float) -> float:
    """When a zebra with ``uptime`` at ``at`` started; one not answering (0) counts as
    starting now."""
    return at - uptime if uptime > 0 else at
