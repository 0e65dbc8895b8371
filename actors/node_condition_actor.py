"""NodeConditionActor: keeps the Node's ``Pyroute2CNIReady`` condition equal to the
daemon's readiness, with the problems the NodeStateActor reports in its message.

Reads the supervisor's health report every ``[daemon] node_condition_interval`` seconds and
patches the Node's status only when the condition's status, reason or message changes, so
a steady node costs the API server no writes.  A failed write is retried at the next tick.
It is ready from the start: whether the condition can be written must not decide whether
the node serves ADDs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.kube.client import core_v1
from pyroute2_cni.kube.node_condition import (
    NodeCondition,
    condition_for,
    current_transition,
    status_patch,
)
from pyroute2_cni.kube.objects import utc_now
from pyroute2_cni.messages.node_state import NodeProblems
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCondition:
    """Compare the readiness with what the Node shows; `tick`: the periodic one, which
    schedules the next (any other check leaves the schedule alone)."""

    tick: bool = False


class NodeConditionActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        node: str,
        readiness: Callable[[], HealthReport],
        api_factory: Callable[[], Any],
        interval: float,
        metrics: Metrics,
        request_timeout: float = 10.0,
    ) -> None:
        super().__init__(hooks)
        self._node = node
        self._readiness = readiness
        self._api_factory = api_factory
        self._interval = interval
        self._timeout = request_timeout
        self._core: Any = None
        self._written: NodeCondition | None = None
        self._transition: str | None = None  # when the written status last changed
        self._failing = False
        self._timer: threading.Timer | None = None
        self._metrics = metrics
        self._problems: tuple[str, ...] = ()

    def on_start(self) -> None:
        self._core = core_v1(self._api_factory())
        self.set_ready(True)
        self.actor_ref.tell(CheckCondition(tick=True))

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def handle(self, message: Any) -> Any:
        match message:
            case CheckCondition(tick=tick):
                self._check()
                if tick:
                    self._schedule()
                return None
            case NodeProblems(problems=problems):
                self._problems = problems
                self._check()
                return None
            case _:
                return self.unknown(message)

    def _schedule(self) -> None:
        if self.stopping.is_set():
            return
        self._timer = threading.Timer(self._interval, self._tick)
        self._timer.daemon = True
        self._timer.start()

    def _tick(self) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(CheckCondition(tick=True))

    def _check(self) -> None:
        wanted = condition_for(self._readiness(), self._problems)
        if wanted == self._written:
            return
        try:
            self._write(wanted)
        except Exception as exc:  # the API's errors come in several types; all are retried
            self._metrics.node_condition_writes.labels("failed").inc()
            if not self._failing:
                self.log.warning(
                    "cannot write condition %s on Node %s (retrying every %g s): %s",
                    wanted.reason,
                    self._node,
                    self._interval,
                    exc,
                )
            self._failing = True
            return
        if self._failing:
            self.log.info("wrote condition %s on Node %s again", wanted.reason, self._node)
        self._failing = False

    def _write(self, wanted: NodeCondition) -> None:
        now = utc_now()
        if self._written is None:
            # After a restart: keep the transition time the Node already shows.
            node = self._core.read_node_status(self._node, _request_timeout=self._timeout)
            self._transition = current_transition(node.status, wanted.status)
        elif self._written.status != wanted.status:
            self._transition = None
        transition = self._transition or now
        self._core.patch_node_status(
            self._node, status_patch(wanted, now, transition), _request_timeout=self._timeout
        )
        self._metrics.node_condition_writes.labels("ok").inc()
        self._written, self._transition = wanted, transition
        self.log.info(
            "Node %s condition Pyroute2CNIReady=%s (%s)", self._node, wanted.status, wanted.reason
        )
