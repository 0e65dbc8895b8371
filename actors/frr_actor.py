"""FRRActor: cluster state -> routing model -> frr.conf -> validated reload; FRR state back.

Changes are debounced; an identical rendering reloads nothing; a failed
validation or reload keeps the last good configuration running and is
retried with backoff.  A reload that fails midway leaves FRR running a mix
of old and new: the last good configuration is put back (RestoreFrr) and
checked with ``frr-reload.py --test``.  Every periodic poll also reads the
running configuration and looks for the model's key lines
(frr.model.key_lines): when they are missing twice in a row (a daemon that
restarted without its configuration, a change by hand), the model is
applied again, bindings included.  zebra's view of the VNIs is polled and each VNI it
knows is told to the NetlinkActor, which brings the devices up only then
(the order EVPN needs).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Any

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.frr.control import FrrControl
from pyroute2_cni.frr.model import (
    FrrConfig,
    FrrModelError,
    build_frr_config,
    missing_key_lines,
    render,
    render_vrf_bindings,
)
from pyroute2_cni.kube.objects import utc_now
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.messages.crd import (
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    NodeInfo,
    VrfDomainBindingSpec,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.messages.evpn import BgpSessionsSeen
from pyroute2_cni.messages.frr import ApplyFrr, FrrApplyReported, PollFrr, RestoreFrr, VniKnown
from pyroute2_cni.messages.node_state import FrrApplySeen, FrrStateSeen, SessionSeen, VniSeen
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.evpn_hold import BgpView, PeerSession

BGP_STATES = ("Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established")
# The retry backoff's cap and the quick polls after a reload are server.ini
# [frr] retry_max, quick_poll_interval and quick_polls.


class FRRActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        settings: Settings,
        control_factory: Callable[[], FrrControl],
        netlink: Address | None,
        watcher: Address | None,
        metrics: Metrics,
        keeper: Address | None = None,
        clock: Callable[[], float] = time.monotonic,
        hostname: str = "",
        events: Address | None = None,
        state: Address | None = None,
    ) -> None:
        super().__init__(hooks)
        self._events = events
        self._state = state
        # Told again with every poll: a restarted NodeStateActor learns it (it ignores
        # a repeat).
        self._apply_seen: FrrApplySeen | None = None
        # (vrf, vni) pairs an event said zebra lacks, so it is said once per change.
        self._missing_told: frozenset[tuple[int, int]] = frozenset()
        self._settings = settings
        self._hostname = hostname
        self._frr = settings.frr
        self._node = settings.daemon.node_name
        self._control_factory = control_factory
        self._control: FrrControl | None = None  # made in on_start when FRR is managed
        self._netlink = netlink
        self._watcher = watcher
        self._keeper = keeper
        self._metrics = metrics
        self._clock = clock
        self._domains: dict[str, VrfDomainSpec] = {}
        self._node_configs: dict[str, VrfNodeConfigSpec] = {}
        self._nodes: dict[str, NodeInfo] = {}
        self._synced = False
        self._generation = 0
        self._pending = False
        self._applied: str | None = None  # the text FRR runs, as far as we know
        self._bindings: str | None = None  # the VRF-to-VNI bindings FRR has
        self._applies = 0  # successful applies: a RestoreFrr older than one is moot
        self._drift_seen: tuple[str, ...] = ()
        self._failures = 0
        self._model: FrrConfig | None = None
        self._told: set[tuple[int, int]] = set()
        self._timers: list[threading.Timer] = []
        self._quick_polls = 0

    # -- lifecycle ---------------------------------------------------------
    def on_start(self) -> None:
        if not self._frr.enabled:
            self.set_ready(True, "FRR management disabled in server.ini [frr]")
            return
        self._control = self._control_factory()
        self.set_ready(False, "waiting for the cluster state")
        self._later(self._frr.poll_interval, PollFrr())

    def release(self) -> None:
        for timer in self._timers:
            timer.cancel()
        if self._control is not None:
            self._control.close()

    def _made_control(self) -> FrrControl:
        if self._control is None:  # messages are handled only when FRR is managed
            raise RuntimeError("FRR control used with FRR management disabled")
        return self._control

    def _later(self, delay: float, message: Any) -> None:
        if self.stopping.is_set():
            return
        self._timers = [t for t in self._timers if t.is_alive()]
        timer = threading.Timer(delay, self._tell_self, args=(message,))
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    def _tell_self(self, message: Any) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(message)

    # -- messages ----------------------------------------------------------
    def handle(self, message: Any) -> Any:
        if not self._frr.enabled:
            return Ok()
        match message:
            case ClusterSnapshot():
                self._domains = {d.name: d for d in message.domains}
                self._node_configs = {c.name: c for c in message.node_configs}
                self._nodes = {n.name: n for n in message.nodes}
                self._synced = True
                self._changed()
            case ClusterObjectChanged(kind=kind, obj=obj):
                self._update(kind, obj)
                self._changed()
            case NamespaceChanged():
                pass
            case ApplyFrr(generation=generation):
                if generation == self._generation:
                    self._pending = False
                    self._apply()
            case PollFrr(once=once):
                self._poll()
                if not once:
                    self._check_drift()
                    self._later(self._frr.poll_interval, PollFrr())
            case RestoreFrr():
                self._restore(message)
            case _:
                return self.unknown(message)
        return Ok()

    def _update(self, kind: ChangeKind, obj: Any) -> None:
        table: dict[str, Any]
        match obj:
            case VrfDomainSpec():
                table = self._domains
            case VrfNodeConfigSpec():
                table = self._node_configs
            case NodeInfo():
                table = self._nodes
            case VrfDomainBindingSpec():
                return
            case _:
                return
        if kind is ChangeKind.DELETED:
            table.pop(obj.name, None)
        else:
            table[obj.name] = obj

    def _changed(self) -> None:
        """Debounce: a burst of changes leads to one apply."""
        if not self._synced:
            return
        self._generation += 1
        self._pending = True
        self._later(self._frr.debounce, ApplyFrr(generation=self._generation))

    # -- apply -------------------------------------------------------------
    def _apply(self) -> None:
        try:
            model = build_frr_config(
                node=self._node,
                asn=self._settings.daemon.asn,
                domains=list(self._domains.values()),
                node_configs=list(self._node_configs.values()),
                nodes=list(self._nodes.values()),
                hostname=self._hostname,
            )
        except FrrModelError as exc:
            self._fail("InvalidInput", str(exc), result="invalid")
            return
        for rejection in model.rejected:
            self.log.warning(
                "%s %s left out of FRR: %s", rejection.kind, rejection.name, rejection.reason
            )
        text = render(model)
        if text == self._applied:
            self._metrics.frr_reloads.labels("unchanged").inc()
            return
        began = self._clock()
        check = self._made_control().validate(text)
        if not check.ok:
            # Only now ask whether FRR runs at all (one more vtysh, seconds under
            # load): a missing FRR is told as such, not as an invalid config.
            missing = self._made_control().available()
            if missing is not None:
                self._fail("FrrUnavailable", missing, result=None)
            else:
                self._fail("ValidationFailed", _tail(check.output), result="invalid")
            return
        validated = self._clock()
        rendered = render_vrf_bindings(model)
        # FRR has them (from the last reload, or from frr.conf after a restart)
        # unless drift was seen or a restore failed since.
        bindings = "" if rendered == self._bindings else rendered
        result = self._made_control().apply(text, bindings)
        if not result.ok:
            self._metrics.frr_reloads.labels("failed").inc()
            self.actor_ref.tell(RestoreFrr(applied=self._applies, failure=_tail(result.output)))
            return
        self._applied = text
        self._bindings = rendered
        self._applies += 1
        self._drift_seen = ()
        self._model = model
        current = {(v.vrf, v.l3vni) for v in model.vrfs} | {(v.vrf, v.vni) for v in model.l2vnis}
        self._told &= current
        self._failures = 0
        self._metrics.frr_reloads.labels("ok").inc()
        self.log.info(
            "FRR reloaded: %d peers (%s), %d VRFs, %d l2vnis "
            "(validated in %.2f s, reloaded in %.2f s)",
            len(model.neighbors),
            model.mode.value,
            len(model.vrfs),
            len(model.l2vnis),
            validated - began,
            self._clock() - validated,
        )
        self.set_ready(True)
        self._report(True, "Applied", f"FRR runs the configuration for {len(model.vrfs)} VRFs")
        self._quick_polls = self._frr.quick_polls
        self._poll()

    def _restore(self, message: RestoreFrr) -> None:
        """FRR runs the last good configuration again, checked, or says it does not."""
        if message.applied != self._applies:
            return  # an apply has succeeded since: FRR runs that one
        restored = self._made_control().restore(self._applied)
        if restored.ok:
            self._metrics.frr_restores.labels("verified").inc()
            self._fail(
                "ReloadFailed",
                f"{message.failure}; FRR runs the last good configuration again "
                "(frr-reload.py --test finds no difference)",
                result=None,
            )
            return
        self._metrics.frr_restores.labels("failed").inc()
        # FRR runs an unknown mix: the next apply sends everything, bindings included.
        self._applied = None
        self._bindings = None
        self._fail(
            "RestoreFailed",
            f"{message.failure}; putting the last good configuration back failed too: "
            f"{_tail(restored.output)}",
            result=None,
        )

    def _check_drift(self) -> None:
        """Apply again when FRR lacks the model's key lines twice in a row.

        Twice: watchfrr loads a restarted daemon's part of frr.conf right after
        starting it; one poll later it has it, or it will not get it.
        """
        if self._model is None or self._applied is None or self._pending:
            self._drift_seen = ()
            return
        running = self._made_control().running_config()
        if running is None:  # a daemon restarting: look again at the next poll
            self._drift_seen = ()
            return
        missing = tuple(missing_key_lines(self._model, running))
        if not missing or missing != self._drift_seen:
            self._drift_seen = missing
            return
        self._drift_seen = ()
        self._metrics.frr_drift.inc()
        self.log.warning(
            "FRR does not run the configuration applied last (missing: %s): a daemon "
            "restarted without it, or it was changed by hand; applying it again",
            ", ".join(missing[:5]),
        )
        self._applied = None
        self._bindings = None
        # In a handler of its own: each handler stays within config.frr_apply_bound.
        self._generation += 1
        self._pending = True
        self.actor_ref.tell(ApplyFrr(generation=self._generation))

    def _fail(self, reason: str, message: str, result: str | None) -> None:
        """Keep the last good config; retry with backoff; make it visible."""
        self._failures += 1
        if result is not None:
            self._metrics.frr_reloads.labels(result).inc()
        delay = min(self._frr.retry_max, 2.0 ** min(self._failures, 5))
        self.log.error("FRR apply failed (%s): %s; retrying in %.0f s", reason, message, delay)
        if self._applied is None:
            self.set_ready(False, f"{reason}: {message}")
        self._report(False, reason, message)
        self._pending = True
        self._later(delay, ApplyFrr(generation=self._generation))

    def _report(self, ok: bool, reason: str, message: str) -> None:
        if self._state is not None:
            digest = (
                hashlib.sha256(self._applied.encode()).hexdigest()[:16] if self._applied else ""
            )
            self._apply_seen = FrrApplySeen(
                applied=ok,
                reason=reason,
                message=message[:1000],
                at=utc_now(),
                config_hash=f"sha256:{digest}" if digest else "",
            )
            self._state.tell(self._apply_seen)
        if self._watcher is not None:
            self._watcher.tell(
                FrrApplyReported(node=self._node, ok=ok, reason=reason, message=message[:1000])
            )

    # -- state -------------------------------------------------------------
    def _poll(self) -> None:
        if self._model is None:
            return
        # The answer is only as new as the question: a query that began before a kill of
        # bgpd and returned after the deletions it caused must not count as news from
        # after them (the EVPN hold would read the dead bgpd's sessions as still up).
        asked = self._clock()
        state = self._made_control().state()
        counts = dict.fromkeys(BGP_STATES, 0)
        for session in state.sessions.values():
            counts[session if session in counts else "Idle"] += 1
        for name, count in counts.items():
            self._metrics.bgp_sessions.labels(name).set(count)
        self._metrics.bgp_established_seconds.set(
            min(state.uptimes.values(), default=0.0) if state.answered else 0.0
        )
        if state.zebra_uptime is not None:
            self._metrics.frr_zebra_uptime_seconds.set(state.zebra_uptime)
        if self._keeper is not None:
            sessions = {
                addr: PeerSession(state=st, uptime=state.uptimes.get(addr, 0.0))
                for addr, st in state.sessions.items()
            }
            view = BgpView(
                answered=state.answered,
                taken=asked,
                sessions=sessions,
                nodes=frozenset(self._model.vteps),
                zebra_uptime=state.zebra_uptime,
            )
            self._keeper.tell(BgpSessionsSeen(view=view))
        known: list[tuple[int, int]] = []
        expected: list[VniSeen] = []
        for vrf in self._model.vrfs:
            expected.append(VniSeen(vrf=vrf.vrf, vni=vrf.l3vni, kind="l3vni"))
            if state.l3vnis.get(vrf.name) == vrf.l3vni:
                known.append((vrf.vrf, vrf.l3vni))
        for l2 in self._model.l2vnis:
            expected.append(VniSeen(vrf=l2.vrf, vni=l2.vni, kind="l2vni"))
            if l2.vni in state.l2vnis:
                known.append((l2.vrf, l2.vni))
        wanted = len(self._model.vrfs) + len(self._model.l2vnis)
        if self._state is not None:
            if self._apply_seen is not None:
                self._state.tell(self._apply_seen)
            self._state.tell(
                FrrStateSeen(
                    answered=state.answered,
                    sessions=tuple(
                        SessionSeen(peer=addr, state=st, uptime=state.uptimes.get(addr, 0.0))
                        for addr, st in sorted(state.sessions.items())
                    ),
                    expected=tuple(expected),
                    known=tuple(v for v in expected if (v.vrf, v.vni) in known),
                )
            )
        self._metrics.evpn_vnis_expected.set(wanted)
        self._metrics.evpn_vnis_known.set(len(known))
        if self._netlink is None:
            return
        for vrf_id, vni in known:
            if (vrf_id, vni) not in self._told:
                self._told.add((vrf_id, vni))
                self._netlink.tell(VniKnown(vrf=vrf_id, vni=vni))
        if len(known) < wanted and self._quick_polls > 0:
            self._quick_polls -= 1
            self._later(self._frr.quick_poll_interval, PollFrr(once=True))
        else:
            self._quick_polls = 0
            if state.answered:  # FRR away: its own event says so, not one per VNI
                self._vni_events(set(known))

    def _vni_events(self, known: set[tuple[int, int]]) -> None:
        """After the quick polls (zebra had its time): an Event on each VRFDomain whose
        VNI zebra lacks on this node, and one when it knows them again."""
        assert self._model is not None
        wanted = [(v.vrf, v.l3vni, v.name) for v in self._model.vrfs]
        wanted += [(l2.vrf, l2.vni, f"vrf-{l2.vrf}") for l2 in self._model.l2vnis]
        missing = frozenset((vrf, vni) for vrf, vni, _ in wanted if (vrf, vni) not in known)
        told, self._missing_told = self._missing_told, missing
        if self._events is None or missing == told:
            return
        for vrf, vni, vrf_name in wanted:
            domain = next((d.name for d in self._domains.values() if d.vrf == vrf), None)
            if domain is None:
                continue
            if (vrf, vni) in missing and (vrf, vni) not in told:
                message = (
                    f"node {self._node}: zebra does not know VNI {vni} of {vrf_name}, so its "
                    "VXLAN device stays down and this node's pods in the domain reach no other "
                    "node; see `vtysh -c 'show evpn vni'` in the pyroute2-frr container and "
                    "the daemon's log"
                )
                self._events.tell(
                    RecordEvent(kind="VRFDomain", name=domain, reason="VniMissing", message=message)
                )
            elif (vrf, vni) in told and (vrf, vni) not in missing:
                message = f"node {self._node}: zebra knows VNI {vni} of {vrf_name} again"
                self._events.tell(
                    RecordEvent(
                        kind="VRFDomain",
                        name=domain,
                        reason="VniKnown",
                        message=message,
                        warning=False,
                    )
                )


def _tail(output: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in output.strip().splitlines()[-lines:] if line.strip())
