"""Plain, explicit supervision of the daemon's actors.

- Start in dependency order; stop in reverse, each bounded, in a ``finally``.
- A crash is noticed three ways: the actor reports an exception (BaseActor
  calls the crash hook), its thread is dead, or it misses a heartbeat.
- A crashed instance is replaced by a NEW instance after an exponential
  backoff; the new one rebuilds its state from the API and the kernel in
  ``on_start``, never from the dead one's memory.
- More than ``max_restarts`` failures of one actor inside ``restart_window``
  seconds stops everything and :meth:`Supervisor.run` returns 1, so the
  process exits non-zero and the kubelet restarts the container.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.config import SupervisorSection
from pyroute2_cni.health import HealthReport
from pyroute2_cni.messages.base import Ping, Pong
from pyroute2_cni.metrics import Metrics

log = logging.getLogger(__name__)

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorSpec:
    """How to make one actor.  `start` builds and starts a new instance."""

    name: str
    start: Callable[[ActorHooks], pykka.ActorRef[Any]]
    address: Address
    depends_on: tuple[str, ...] = ()
    # Called after a restarted instance is up (e.g. ask the watcher for a snapshot).
    after_restart: Callable[[], None] | None = None


@dataclass(slots=True)
class _State:
    spec: ActorSpec
    generation: int = 0
    ref: pykka.ActorRef[Any] | None = None
    ready: bool = False
    detail: str = "not started"
    failures: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    last_pong: float = 0.0


class EscalationError(Exception):
    pass


def start_order(specs: Sequence[ActorSpec]) -> list[ActorSpec]:
    """Topological order of `specs`; raises ValueError on unknown or cyclic dependencies."""
    by_name = {spec.name: spec for spec in specs}
    ordered: list[ActorSpec] = []
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in done:
            return
        if name in visiting:
            raise ValueError("dependency cycle: " + " -> ".join((*chain, name)))
        spec = by_name.get(name)
        if spec is None:
            raise ValueError(f"{chain[-1]} depends on unknown actor {name}")
        visiting.add(name)
        for dep in spec.depends_on:
            visit(dep, (*chain, name))
        visiting.discard(name)
        done.add(name)
        ordered.append(spec)

    for spec in specs:
        visit(spec.name, ())
    return ordered


class Supervisor:
    def __init__(
        self,
        specs: Sequence[ActorSpec],
        settings: SupervisorSection,
        metrics: Metrics,
        clock: Clock = time.monotonic,
    ) -> None:
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._order = start_order(specs)
        self._states = {spec.name: _State(spec=spec) for spec in self._order}
        self._crashes: queue.Queue[tuple[str, int, str]] = queue.Queue()
        self._lock = threading.Lock()
        self._loop_beat = clock()
        self._escalated = ""
        self._running = False
        self._seq = 0

    # -- crash hook (called from actor threads) ----------------------------
    def _on_crash(self, name: str, generation: int, exc: BaseException | None) -> None:
        self._crashes.put((name, generation, repr(exc) if exc is not None else "stopped"))

    def _spawn(self, state: _State) -> None:
        state.generation += 1
        hooks = ActorHooks(
            name=state.spec.name, generation=state.generation, on_crash=self._on_crash
        )
        state.ref = state.spec.start(hooks)
        state.spec.address.bind(state.ref)
        state.ready = False
        state.detail = "starting"
        state.last_pong = self._clock()
        self._metrics.actor_ready.labels(state.spec.name).set(0)

    def start(self) -> None:
        self._running = True
        for spec in self._order:
            log.info("starting %s", spec.name)
            self._spawn(self._states[spec.name])

    # -- the loop ----------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Supervise until `stop` is set (returns 0) or an actor fails too often (returns 1)."""
        interval = self._settings.heartbeat_interval
        next_beat = self._clock()
        try:
            while not stop.is_set():
                self._loop_beat = self._clock()
                timeout = max(0.0, min(next_beat, self._next_restart()) - self._clock())
                try:
                    name, generation, why = self._crashes.get(timeout=timeout)
                    self._handle_failure(name, generation, why)
                    continue
                except queue.Empty:
                    pass
                now = self._clock()
                self._restart_due(now)
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = self._clock() + interval
        except EscalationError as exc:
            self._escalated = str(exc)
            log.critical("%s; stopping all actors so the kubelet restarts the container", exc)
            return 1
        finally:
            self.stop()
        return 0

    def _next_restart(self) -> float:
        times = [s.restart_at for s in self._states.values() if s.restart_at is not None]
        return min(times, default=float("inf"))

    def _handle_failure(self, name: str, generation: int, why: str) -> None:
        state = self._states[name]
        if generation != state.generation or state.restart_at is not None:
            return  # an older instance, or already scheduled
        now = self._clock()
        window = self._settings.restart_window
        state.failures.append(now)
        while state.failures and state.failures[0] < now - window:
            state.failures.popleft()
        count = len(state.failures)
        log.error("%s failed (%s); failure %d in the last %g s", name, why, count, window)
        old = state.ref
        state.ref = None
        state.spec.address.bind(None)
        state.ready = False
        state.detail = f"restarting after: {why}"
        self._metrics.actor_ready.labels(name).set(0)
        if old is not None:
            # A hung instance cannot be joined; ask it to stop and move on.
            old.stop(block=False)
        if count > self._settings.max_restarts:
            raise EscalationError(
                f"{name} failed {count} times in {window:g} s "
                f"(more than max_restarts={self._settings.max_restarts})"
            )
        delay = min(self._settings.backoff_initial * 2 ** (count - 1), self._settings.backoff_max)
        state.restart_at = now + delay

    def _restart_due(self, now: float) -> None:
        for spec in self._order:
            state = self._states[spec.name]
            if state.restart_at is None or state.restart_at > now:
                continue
            state.restart_at = None
            log.warning("restarting %s (generation %d)", spec.name, state.generation + 1)
            self._metrics.actor_restarts.labels(spec.name).inc()
            try:
                self._spawn(state)
            except Exception as exc:
                self._on_crash(spec.name, state.generation, exc)
                continue
            if spec.after_restart is not None:
                spec.after_restart()

    def _heartbeat(self) -> None:
        self._seq += 1
        futures: list[tuple[_State, pykka.Future[Any]]] = []
        for state in self._states.values():
            ref = state.ref
            if ref is None:
                continue
            if not ref.is_alive():
                self._on_crash(state.spec.name, state.generation, None)
                continue
            try:
                futures.append((state, ref.ask(Ping(seq=self._seq), block=False)))
            except pykka.ActorDeadError:
                self._on_crash(state.spec.name, state.generation, None)
        deadline = self._clock() + min(self._settings.heartbeat_interval, 1.0)
        for state, future in futures:
            try:
                pong = future.get(timeout=max(0.0, deadline - self._clock()))
            except pykka.Timeout:
                self._check_hung(state)
                continue
            except Exception as exc:
                self._on_crash(state.spec.name, state.generation, exc)
                continue
            if isinstance(pong, Pong):
                state.last_pong = self._clock()
                with self._lock:
                    state.ready = pong.ready
                    state.detail = pong.detail
                self._metrics.actor_ready.labels(state.spec.name).set(1 if pong.ready else 0)

    def _check_hung(self, state: _State) -> None:
        silent = self._clock() - state.last_pong
        if silent > self._settings.heartbeat_timeout:
            self._on_crash(
                state.spec.name,
                state.generation,
                TimeoutError(f"no heartbeat answer for {silent:.1f} s (hung)"),
            )

    # -- stop and report ---------------------------------------------------
    def stop(self) -> None:
        """Stop every actor in reverse start order, each within stop_timeout."""
        if not self._running:
            return
        self._running = False
        deadline = self._clock() + self._settings.stop_timeout
        for spec in reversed(self._order):
            state = self._states[spec.name]
            ref, state.ref = state.ref, None
            spec.address.bind(None)
            if ref is None:
                continue
            remaining = max(0.05, deadline - self._clock())
            try:
                ref.stop(block=True, timeout=remaining)
            except pykka.Timeout:
                log.error("%s did not stop within %.1f s; abandoning it", spec.name, remaining)

    def report(self) -> HealthReport:
        now = self._clock()
        loop_fresh = now - self._loop_beat < max(5.0, 5 * self._settings.heartbeat_interval)
        lines: list[str] = []
        live = loop_fresh and not self._escalated and self._running
        ready = live
        if not loop_fresh:
            lines.append("supervisor: loop stalled")
        if self._escalated:
            lines.append(f"supervisor: {self._escalated}")
        with self._lock:
            for spec in self._order:
                state = self._states[spec.name]
                supervised = state.ref is not None or state.restart_at is not None
                live = live and supervised
                if state.ready and state.ref is not None:
                    lines.append(f"{spec.name}: ready")
                else:
                    ready = False
                    lines.append(f"{spec.name}: not ready ({state.detail or 'no detail'})")
        return HealthReport(live=live, ready=ready, lines=tuple(lines))
