"""Message conventions shared by every actor.

Messages are frozen, slotted, keyword-only dataclasses.  Commands are
imperative, events past tense, replies end in ``Result``.  A handler that
cannot serve a message answers :class:`Failure` instead of raising, so an
``ask`` caller always gets a typed answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol


class Recipient(Protocol):
    """Where a message names an actor to answer (in practice an ``actors.address.Address``).

    A protocol rather than the Address class itself, so that messages import no actor code.
    """

    def tell(self, message: Any) -> bool: ...


class ErrorKind(Enum):
    """How the caller should treat a failure (see style notes: few error types)."""

    TEMPORARY = "temporary"  # retry after a delay
    PERMANENT = "permanent"  # report; retrying will not help
    CONFLICT = "conflict"  # re-read and retry, bounded
    INVALID = "invalid"  # the request itself is wrong


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """Reply to a message that could not be served."""

    reason: str
    kind: ErrorKind = ErrorKind.PERMANENT
    details: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ok:
    """Reply to a command that has no other result."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ping:
    """Heartbeat from the supervisor; answered with :class:`Pong`."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Pong:
    seq: int
    ready: bool
    detail: str = ""
