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

Invariant: one live instance per actor (issue #15).  A failed instance is
fenced at once (it refuses every message still queued, see actors/base.py),
unbound and asked to stop; its successor starts only after it has released
what it held, and no sooner than the backoff.  One that does not stop within
``stop_timeout`` is declared hung: for an ``exclusive`` actor (it changes the
node, holds a socket path or writes to the API, so a hung handler could still
act beside a successor) that is an escalation, exit 1; otherwise it is
abandoned and the successor starts.
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
from pyroute2_cni.messages.base import Ping, Pong
from pyroute2_cni.runtime.config import SupervisorSection
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.metrics import Metrics

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
    # A replaced instance that does not stop could still act beside its
    # successor: when it is declared hung the daemon exits instead (every
    # real actor; only stateless test actors set False).
    exclusive: bool = True


@dataclass(slots=True)
class _State:
    spec: ActorSpec
    generation: int = 0
    ref: pykka.ActorRef[Any] | None = None
    hooks: ActorHooks | None = None
    # A replaced instance that has not released yet, and when it is declared hung.
    replaced: ActorHooks | None = None
    replaced_deadline: float = 0.0
    ready: bool = False
    detail: str = "not started"
    failures: deque[float] = field(default_factory=deque)
    restart_at: float | None = None
    last_pong: float = 0.0


class EscalationError(Exception):
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class _Crashed:
    name: str
    generation: int
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Released:
    name: str
    generation: int


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
        self._events: queue.Queue[_Crashed | _Released] = queue.Queue()
        self._lock = threading.Lock()
        self._loop_beat = clock()
        self._escalated = ""
        self._running = False
        self._seq = 0

    # -- crash hook (called from actor threads) ----------------------------
    def _on_crash(self, name: str, generation: int, exc: BaseException | None) -> None:
        why = repr(exc) if exc is not None else "stopped"
        self._events.put(_Crashed(name=name, generation=generation, why=why))

    def _on_released(self, name: str, generation: int) -> None:
        # Wakes the loop: a restart may have been waiting for this.
        self._events.put(_Released(name=name, generation=generation))

    def _spawn(self, state: _State) -> None:
        state.generation += 1
        hooks = ActorHooks(
            name=state.spec.name,
            generation=state.generation,
            on_crash=self._on_crash,
            on_released=self._on_released,
        )
        state.hooks = hooks
        try:
            state.ref = state.spec.start(hooks)
        except Exception:
            # No instance exists (its constructor failed): nothing to wait for.
            hooks.fence.set()
            hooks.released.set()
            raise
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
    def run(self, stop: threading.Event, linger: Callable[[], object] | None = None) -> int:
        """Supervise until `stop` is set (returns 0) or an actor fails too often (returns 1).
        After `stop`, ``linger`` runs while every actor still runs, then they stop."""
        interval = self._settings.heartbeat_interval
        next_beat = self._clock()
        try:
            while not stop.is_set():
                self._loop_beat = self._clock()
                timeout = max(0.0, min(next_beat, self._next_restart()) - self._clock())
                try:
                    event = self._events.get(timeout=timeout)
                except queue.Empty:
                    pass
                else:
                    if isinstance(event, _Crashed):
                        self._handle_failure(event.name, event.generation, event.why)
                    continue
                now = self._clock()
                self._restart_due(now)
                if now >= next_beat:
                    self._heartbeat()
                    next_beat = self._clock() + interval
            if linger is not None:
                linger()
        except EscalationError as exc:
            self._escalated = str(exc)
            log.critical("%s; stopping all actors so the kubelet restarts the container", exc)
            return 1
        finally:
            self.stop()
        return 0

    def _next_restart(self) -> float:
        times = [
            # Waiting for a replaced instance: its _Released event wakes the
            # loop earlier; the deadline is when it is declared hung.
            s.restart_at if self._replaced_gone(s) else max(s.restart_at, s.replaced_deadline)
            for s in self._states.values()
            if s.restart_at is not None
        ]
        return min(times, default=float("inf"))

    @staticmethod
    def _replaced_gone(state: _State) -> bool:
        return state.replaced is None or state.replaced.released.is_set()

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
        old, hooks = state.ref, state.hooks
        state.ref = None
        state.spec.address.bind(None)
        state.ready = False
        state.detail = f"restarting after: {why}"
        self._metrics.actor_ready.labels(name).set(0)
        if hooks is not None:
            # Fenced before anything else: whatever is still queued for it is
            # refused, not applied beside its successor.
            hooks.fence.set()
            if not hooks.released.is_set():
                state.replaced = hooks
                state.replaced_deadline = now + self._settings.stop_timeout
        if old is not None:
            # A hung instance cannot be joined here; _restart_due waits for
            # its release (bounded by stop_timeout) before starting another.
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
            if not self._replaced_gone(state):
                if now < state.replaced_deadline:
                    continue
                self._declare_hung(state)
            state.replaced = None
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

    def _declare_hung(self, state: _State) -> None:
        replaced = state.replaced
        assert replaced is not None
        what = (
            f"{state.spec.name} generation {replaced.generation} did not stop within "
            f"{self._settings.stop_timeout:g} s after it was replaced (hung in a handler"
            " or in release)"
        )
        if state.spec.exclusive:
            # A successor beside it could race it on the kernel, the socket
            # path or the API; a fresh process is the only clean state.
            raise EscalationError(
                f"{what}; it could still act beside a new instance, so the daemon exits for"
                " the DaemonSet to restart it (raise [supervisor] stop_timeout if releases"
                " are slow)"
            )
        log.error("%s; abandoning it (it is fenced and not exclusive)", what)

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
