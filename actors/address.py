"""A stable address for an actor whose instances come and go.

Actors hold :class:`Address` objects, never raw ``ActorRef``s: the supervisor
points the address at each new instance after a restart, so senders keep
working without registry look-ups.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pykka

log = logging.getLogger(__name__)


class ActorUnavailable(Exception):
    """The actor is down (crashed, restarting or stopped) or did not answer in time."""


class Address:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._ref: pykka.ActorRef[Any] | None = None

    def bind(self, ref: pykka.ActorRef[Any] | None) -> None:
        with self._lock:
            self._ref = ref

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        with self._lock:
            return self._ref

    def tell(self, message: Any) -> bool:
        """Send without waiting.  False (and a log line) when the actor is down."""
        ref = self.ref
        if ref is None:
            log.warning("%s is down; dropped %s", self.name, type(message).__name__)
            return False
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            log.warning("%s is down; dropped %s", self.name, type(message).__name__)
            return False
        return True

    def ask(self, message: Any, timeout: float) -> Any:
        """Send and wait for the reply.  Only for edges (supervisor, CNI workers, tests)."""
        ref = self.ref
        if ref is None:
            raise ActorUnavailable(f"{self.name} is not running (restarting or stopped)")
        try:
            return ref.ask(message, timeout=timeout)
        except pykka.ActorDeadError as exc:
            raise ActorUnavailable(f"{self.name} stopped before answering") from exc
        except pykka.Timeout as exc:
            raise ActorUnavailable(f"{self.name} did not answer within {timeout:g} s") from exc
        except Exception as exc:
            # The handler raised: the instance is being replaced (BaseActor
            # reports the crash); the caller sees one typed error.
            raise ActorUnavailable(f"{self.name} failed handling the request: {exc}") from exc

    def __repr__(self) -> str:
        return f"Address({self.name!r})"
