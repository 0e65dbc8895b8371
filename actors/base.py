"""The base every actor shares: typed dispatch, heartbeats, readiness, crash reporting.

Subclasses implement :meth:`BaseActor.handle` with a ``match`` on the message
type and call :meth:`BaseActor.unknown` for anything else.  Resources are
opened in :meth:`on_start` (the actor's own thread) and closed in
:meth:`release`, which runs from both ``on_stop`` and ``on_failure`` because
Pykka skips ``on_stop`` after a failure.

Invariants (issue #15):

- One live instance per actor.  An instance is *fenced* (``hooks.fence``) when
  it crashes, when the supervisor replaces it, or when it stops: from then on
  it answers every message with a TEMPORARY :class:`Failure` and changes
  nothing.  Pykka keeps handling an actor's queue after an ``ask`` handler
  raised, so the fence, not Pykka, is what stops a crashed instance acting.
  ``hooks.released`` is set once :meth:`release` has run; the supervisor starts
  the successor only after that.
- A failing ``on_start`` releases what it opened.  Pykka calls neither
  ``on_stop`` nor ``on_failure`` then, so every subclass's ``on_start`` is
  wrapped (``__init_subclass__``): on an exception it fences, runs
  :meth:`release`, reports the crash and re-raises.  :meth:`release` must
  therefore cope with a partial ``on_start`` (close only what exists).

Keep in sync with: ``supervisor/supervisor.py`` (fences, waits for
``released``, escalates when a replaced instance does not stop).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

import pykka

from pyroute2_cni.messages.base import ErrorKind, Failure, Ping, Pong


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorHooks:
    """What the supervisor hands each actor instance."""

    name: str
    generation: int
    on_crash: Callable[[str, int, BaseException | None], None]
    # Set when this instance must not act any more (crashed, replaced or
    # stopping); it then refuses every message.  Set from any thread.
    fence: threading.Event = field(default_factory=threading.Event)
    # Set by the instance once release() has run: it holds nothing any more.
    released: threading.Event = field(default_factory=threading.Event)
    # Called right after `released` is set, so the supervisor need not poll.
    on_released: Callable[[str, int], None] = lambda _name, _generation: None


def _releasing_on_failure(on_start: Callable[[BaseActor], None]) -> Callable[[BaseActor], None]:
    @functools.wraps(on_start)
    def on_start_or_release(self: BaseActor) -> None:
        try:
            on_start(self)
        except Exception as exc:
            # Pykka calls neither on_stop nor on_failure when on_start raises:
            # without this, whatever on_start opened stays open.
            self.hooks.fence.set()
            self._release_once()
            self._report_crash(exc)
            raise

    on_start_or_release.releases_on_failure = True  # type: ignore[attr-defined]
    return on_start_or_release


class BaseActor(pykka.ThreadingActor):
    # Daemon threads: a hung actor must not keep the process alive after the
    # supervisor gave up on it.
    use_daemon_thread = True
    actor_name: ClassVar[str] = "actor"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        on_start = cls.__dict__.get("on_start")
        if callable(on_start) and not getattr(on_start, "releases_on_failure", False):
            # setattr: mypy rejects assigning to a method.
            setattr(cls, "on_start", _releasing_on_failure(on_start))  # noqa: B010

    def __init__(self, hooks: ActorHooks) -> None:
        super().__init__()
        self.hooks = hooks
        # The logger name carries the actor, so every line says who wrote it.
        self.log = logging.getLogger(f"pyroute2_cni.actor.{hooks.name}")
        self._ready = False
        self._ready_detail = "starting"
        self._released = False
        self._crashed = False
        self._refused = 0

    # -- readiness ---------------------------------------------------------
    def set_ready(self, ready: bool, detail: str = "") -> None:
        if ready != self._ready:
            self.log.info("%s %s", "ready" if ready else "not ready", detail)
        self._ready = ready
        self._ready_detail = detail

    @property
    def stopping(self) -> threading.Event:
        """Set when the instance is fenced or stops; pumps and timers watch it to end."""
        return self.hooks.fence

    # -- dispatch ----------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if self.hooks.fence.is_set():
            return self._refuse(message)
        if isinstance(message, Ping):
            return Pong(seq=message.seq, ready=self._ready, detail=self._ready_detail)
        try:
            return self.handle(message)
        except Exception as exc:
            # An unexpected exception means this instance's state can no longer
            # be trusted.  Fence first: after a failed ask Pykka goes on with
            # the queue, and nothing queued may run on that state.  Then report
            # it so the supervisor replaces the instance.
            self.hooks.fence.set()
            self._report_crash(exc)
            raise

    def _refuse(self, message: Any) -> Failure:
        self._refused += 1
        # One line per instance at WARNING; the rest would only repeat it.
        level = logging.WARNING if self._refused == 1 else logging.DEBUG
        self.log.log(
            level,
            "generation %d is fenced; refusing %s (and any later message)",
            self.hooks.generation,
            type(message).__name__,
        )
        return Failure(
            reason=(
                f"{self.hooks.name} generation {self.hooks.generation} was replaced "
                f"(crashed, hung or stopping) and did not handle {type(message).__name__}; "
                "retry: its successor serves the address once it has started"
            ),
            kind=ErrorKind.TEMPORARY,
        )

    def handle(self, message: Any) -> Any:
        return self.unknown(message)

    def unknown(self, message: Any) -> Failure:
        self.log.error("received a message it does not handle: %r", message)
        return Failure(
            reason=f"{self.hooks.name} does not handle {type(message).__name__}",
            kind=ErrorKind.INVALID,
        )

    # -- lifecycle ---------------------------------------------------------
    def release(self) -> None:
        """Close what on_start opened.  Must be idempotent."""

    def _release_once(self) -> None:
        self.hooks.fence.set()
        if self._released:
            return
        self._released = True
        try:
            self.release()
        except Exception:
            self.log.exception("release failed; what it could not close stays open")
        finally:
            # Even after a failed release: this instance is fenced and its
            # thread is ending, so it will not act again.
            self.hooks.released.set()
            self.hooks.on_released(self.hooks.name, self.hooks.generation)

    def _report_crash(self, exc: BaseException | None) -> None:
        if self._crashed:
            return
        self._crashed = True
        self.hooks.on_crash(self.hooks.name, self.hooks.generation, exc)

    def on_stop(self) -> None:
        self._release_once()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._release_once()
        self._report_crash(exception_value)
