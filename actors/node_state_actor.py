"""NodeStateActor: writes this node's VRFNodeState from the facts the actors report.

The status is rebuilt after every fact and every ``interval`` (the health report has no
messages); it is written only when it differs from the last one written, and at most once
per ``min_interval``: a change within that time is written when it ends (the last state
wins).  At steady state it costs the API server no write (one read per VERIFY_TICKS
ticks).  The object is created on the first write, owned by the Node; one deleted by
hand is created again.  A failed
write is retried at the next tick.  What is wrong goes to the NodeConditionActor too (the
condition's message), and problems that last EVENT_DELAY are a Warning Event on the Node
(NetworkDegraded; NetworkHealthy once none is left).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.kube.client import ApiException, core_v1, custom_objects, object_not_found
from pyroute2_cni.kube.node_state import (
    GROUP,
    PLURAL,
    VERSION,
    NodeFacts,
    new_object,
    status_for,
    with_apply,
    with_failure,
    with_frr_state,
)
from pyroute2_cni.kube.objects import utc_now
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.messages.node_state import (
    CniFailureSeen,
    EvpnHeldSeen,
    FrrApplySeen,
    FrrStateSeen,
    IpamUseSeen,
    NodeProblems,
)
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics

# Every this many ticks the object is read back (a read, not a write): one deleted by
# hand is written again though nothing changed.  120 ticks of the default 5 s interval
# is 10 minutes: at 12 this read was half of a node's steady API cost (make bench-scale).
VERIFY_TICKS = 120
# Problems lasting this long (seconds) are a NetworkDegraded Event on the Node.
EVENT_DELAY = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckState:
    """Rebuild the status and write it if it changed; `tick`: the periodic one."""

    tick: bool = False


class NodeStateActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        node: str,
        api_factory: Callable[[], Any],
        readiness: Callable[[], HealthReport],
        metrics: Metrics,
        version: str,
        interval: float,
        min_interval: float,
        frr_managed: bool = True,
        condition: Address | None = None,
        events: Address | None = None,
        event_delay: float = EVENT_DELAY,
        clock: Callable[[], float] = time.monotonic,
        request_timeout: float = 10.0,
    ) -> None:
        super().__init__(hooks)
        self._node = node
        self._api_factory = api_factory
        self._readiness = readiness
        self._metrics = metrics
        self._version = version
        self._interval = interval
        self._min_interval = min_interval
        self._condition = condition
        self._events = events
        self._event_delay = event_delay
        self._degraded_since: float | None = None
        self._announced: tuple[str, ...] = ()
        self._announced_at: float | None = None
        self._been_ready = False
        self._clock = clock
        self._timeout = request_timeout
        self._facts = NodeFacts(frr_managed=frr_managed)
        self._custom: Any = None
        self._core: Any = None
        self._exists = False
        self._written: dict[str, Any] | None = None
        self._written_at: float | None = None
        self._told: tuple[str, ...] | None = None
        self._failing = False
        self._tick_timer: threading.Timer | None = None
        self._ticks = 0
        self._write_timer: threading.Timer | None = None

    def on_start(self) -> None:
        api = self._api_factory()
        self._custom = custom_objects(api)
        self._core = core_v1(api)
        self.set_ready(True)  # whether the state can be written never decides readiness
        self.actor_ref.tell(CheckState(tick=True))

    def release(self) -> None:
        for timer in (self._tick_timer, self._write_timer):
            if timer is not None:
                timer.cancel()

    def handle(self, message: Any) -> Any:
        match message:
            case FrrApplySeen():
                self._facts = with_apply(self._facts, message)
            case FrrStateSeen():
                self._facts = with_frr_state(self._facts, message, datetime.now(UTC))
            case IpamUseSeen():
                self._facts = replace(self._facts, ipam=message)
            case EvpnHeldSeen(held=held):
                self._facts = replace(self._facts, held=held)
            case CniFailureSeen():
                self._facts = with_failure(self._facts, message)
            case CheckState(tick=True):
                self._ticks += 1
                if self._ticks % VERIFY_TICKS == 0:
                    self._verify()
                self._check()
                self._tick_timer = self._timer(self._interval, CheckState(tick=True))
                return None
            case CheckState():
                self._write_timer = None
                self._check()
                return None
            case _:
                return self.unknown(message)
        self._check()
        return None

    def _timer(self, delay: float, message: CheckState) -> threading.Timer | None:
        if self.stopping.is_set():
            return None
        timer = threading.Timer(delay, self._tell_self, args=(message,))
        timer.daemon = True
        timer.start()
        return timer

    def _tell_self(self, message: CheckState) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(message)

    def _check(self) -> None:
        health = self._readiness()
        self._been_ready = self._been_ready or health.ready
        status = status_for(self._facts, health, version=self._version)
        self._tell_problems(tuple(status["problems"]))
        if status == self._written:
            return
        now = self._clock()
        if self._written_at is not None and now - self._written_at < self._min_interval:
            if self._write_timer is None:  # the write when the interval ends
                wait = self._min_interval - (now - self._written_at)
                self._write_timer = self._timer(wait, CheckState())
            return
        try:
            self._write(status)
        except Exception as exc:  # the API's errors come in several types; all are retried
            self._metrics.node_state_writes.labels("failed").inc()
            if not self._failing:
                self.log.warning(
                    "cannot write VRFNodeState %s (retrying every %g s): %s",
                    self._node,
                    self._interval,
                    exc,
                )
            self._failing = True
            return
        self._metrics.node_state_writes.labels("ok").inc()
        self._written, self._written_at = status, now
        if self._failing:
            self.log.info("wrote VRFNodeState %s again", self._node)
        self._failing = False

    def _verify(self) -> None:
        if self._written is None:
            return
        try:
            self._custom.get_cluster_custom_object(
                GROUP, VERSION, PLURAL, self._node, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if object_not_found(exc):
                self.log.info("VRFNodeState %s was deleted: writing it again", self._node)
                self._exists, self._written, self._written_at = False, None, None
        except Exception as exc:  # unreachable API: the next write attempt will say
            self.log.debug("cannot read VRFNodeState %s back: %s", self._node, exc)

    def _tell_problems(self, problems: tuple[str, ...]) -> None:
        if problems != self._told:
            self._told = problems
            if self._condition is not None:
                self._condition.tell(NodeProblems(problems=problems))
        if self._events is None:
            return
        # Events only for what lasts (a session coming up, a VNI zebra learns a moment
        # late are no news), not while the daemon starts (its condition says it is not
        # ready), and at most one per EVENT_DELAY while the problems change.
        now = self._clock()
        if not problems:
            self._degraded_since = None
            if self._announced:
                self._announced = ()
                self._events.tell(
                    RecordEvent(
                        kind="Node",
                        name=self._node,
                        reason="NetworkHealthy",
                        message=f"node {self._node}: every problem of its pod network is gone",
                        warning=False,
                    )
                )
            return
        if not self._been_ready:
            return
        if self._degraded_since is None:
            self._degraded_since = now
        due = now - self._degraded_since >= self._event_delay and (
            self._announced_at is None or now - self._announced_at >= self._event_delay
        )
        if due and problems != self._announced:
            self._announced, self._announced_at = problems, now
            self._events.tell(
                RecordEvent(
                    kind="Node",
                    name=self._node,
                    reason="NetworkDegraded",
                    message=f"node {self._node}: " + "; ".join(problems),
                )
            )

    def _write(self, status: dict[str, Any]) -> None:
        if not self._exists:
            self._create()
        body = {"status": dict(status, lastUpdateTime=utc_now())}
        try:
            self._custom.patch_cluster_custom_object_status(
                GROUP, VERSION, PLURAL, self._node, body, _request_timeout=self._timeout
            )
        except ApiException as exc:
            if object_not_found(exc):  # deleted by hand: created again at the next check
                self._exists = False
            raise

    def _create(self) -> None:
        try:
            self._custom.get_cluster_custom_object(
                GROUP, VERSION, PLURAL, self._node, _request_timeout=self._timeout
            )
            self._exists = True
            return
        except ApiException as exc:
            if not object_not_found(exc):
                raise
        uid: str | None = None
        try:
            uid = self._core.read_node(self._node, _request_timeout=self._timeout).metadata.uid
        except ApiException as exc:
            if not object_not_found(exc):
                raise
            self.log.warning(
                "Node %s not found: its VRFNodeState is created without an owner "
                "(it stays when the node goes)",
                self._node,
            )
        try:
            self._custom.create_cluster_custom_object(
                GROUP, VERSION, PLURAL, new_object(self._node, uid), _request_timeout=self._timeout
            )
        except ApiException as exc:
            if exc.status != 409:  # 409: made meanwhile (a restarted instance)
                raise
        self._exists = True
