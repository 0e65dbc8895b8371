"""The base every actor shares: typed dispatch, heartbeats, readiness, crash reporting.

Subclasses implement :meth:`BaseActor.handle` with a ``match`` on the message
type and call :meth:`BaseActor.unknown` for anything else.  Resources are
opened in :meth:`on_start` (the actor's own thread) and closed in
:meth:`release`, which runs from both ``on_stop`` and ``on_failure`` because
Pykka skips ``on_stop`` after a failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
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


class BaseActor(pykka.ThreadingActor):
    # Daemon threads: a hung actor must not keep the process alive after the
    # supervisor gave up on it.
    use_daemon_thread = True
    actor_name: ClassVar[str] = "actor"

    def __init__(self, hooks: ActorHooks) -> None:
        super().__init__()
        self.hooks = hooks
        # The logger name carries the actor, so every line says who wrote it.
        self.log = logging.getLogger(f"pyroute2_cni.actor.{hooks.name}")
        self._ready = False
        self._ready_detail = "starting"
        self._released = False
        self._crashed = False
        self._stop_event = threading.Event()

    # -- readiness ---------------------------------------------------------
    def set_ready(self, ready: bool, detail: str = "") -> None:
        if ready != self._ready:
            self.log.info("%s %s", "ready" if ready else "not ready", detail)
        self._ready = ready
        self._ready_detail = detail

    @property
    def stopping(self) -> threading.Event:
        """Set when the actor stops; pump threads watch it to end themselves."""
        return self._stop_event

    # -- dispatch ----------------------------------------------------------
    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Ping):
            return Pong(seq=message.seq, ready=self._ready, detail=self._ready_detail)
        try:
            return self.handle(message)
        except Exception as exc:
            # An unexpected exception means this instance's state can no longer
            # be trusted: report it so the supervisor replaces the instance.
            self._report_crash(exc)
            raise

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
        self._stop_event.set()
        if self._released:
            return
        self._released = True
        try:
            self.release()
        except Exception:
            self.log.exception("release failed")

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
