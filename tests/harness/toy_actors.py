"""Small actors that crash, hang or get ready on command, for supervisor tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash:
    why: str = "boom"


@dataclass(frozen=True, slots=True, kw_only=True)
class Hang:
    release: threading.Event


@dataclass(frozen=True, slots=True, kw_only=True)
class BecomeReady:
    ready: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WhoAreYou:
    pass


@dataclass(frozen=True, slots=True, kw_only=True)
class Apply:
    """A change to the (pretend) node; the instance that makes it records it in the Journal."""

    seq: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Identity:
    name: str
    generation: int


class Journal:
    """What every toy instance did, in order, as (name, generation, event) tuples.

    Events: ``started``, ``applied <seq>``, ``released``.  Tests read it to check
    that a replaced instance changed nothing and that instances never overlap.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, int, str]] = []

    def add(self, name: str, generation: int, event: str) -> None:
        with self._lock:
            self._events.append((name, generation, event))

    def events(self) -> list[tuple[str, int, str]]:
        with self._lock:
            return list(self._events)

    def applied_by(self, name: str, generation: int) -> list[int]:
        return [
            int(event.split()[1])
            for n, g, event in self.events()
            if n == name and g == generation and event.startswith("applied ")
        ]

    def has(self, name: str, generation: int, event: str) -> bool:
        return (name, generation, event) in self.events()

    def max_live(self, name: str) -> int:
        """Most instances of `name` alive at once (started and not yet released)."""
        live = peak = 0
        for n, _, event in self.events():
            if n != name:
                continue
            if event == "started":
                live += 1
                peak = max(peak, live)
            elif event == "released":
                live -= 1
        return peak


class ToyActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        ready_on_start: bool,
        journal: Journal | None = None,
        release_hold: float = 0.0,
    ) -> None:
        super().__init__(hooks)
        self._ready_on_start = ready_on_start
        self._journal = journal
        # Stands in for a release that takes time (joining a pump, closing a socket).
        self._release_hold = release_hold

    def _record(self, event: str) -> None:
        if self._journal is not None:
            self._journal.add(self.hooks.name, self.hooks.generation, event)

    def on_start(self) -> None:
        self._record("started")
        if self._ready_on_start:
            self.set_ready(True)
        else:
            self.set_ready(False, "waiting for BecomeReady")

    def release(self) -> None:
        if self._release_hold:
            threading.Event().wait(self._release_hold)
        self._record("released")

    def handle(self, message: Any) -> Any:
        match message:
            case Crash(why=why):
                raise RuntimeError(why)
            case Hang(release=release):
                release.wait(timeout=60)
                return Ok()
            case BecomeReady(ready=ready):
                self.set_ready(ready, "" if ready else "told not to be")
                return Ok()
            case WhoAreYou():
                return Identity(name=self.hooks.name, generation=self.hooks.generation)
            case Apply(seq=seq):
                self._record(f"applied {seq}")
                return Ok()
            case _:
                return self.unknown(message)


def toy_spec(
    name: str,
    *,
    depends_on: Sequence[str] = (),
    ready_on_start: bool = True,
    journal: Journal | None = None,
    release_hold: float = 0.0,
    exclusive: bool = False,
) -> ActorSpec:
    """A toy actor's spec.  Toys change nothing real, so by default they are not
    `exclusive`: a hung toy is abandoned and replaced instead of ending the daemon."""
    address = Address(name)

    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return ToyActor.start(
            hooks, ready_on_start=ready_on_start, journal=journal, release_hold=release_hold
        )

    return ActorSpec(
        name=name,
        start=start,
        address=address,
        depends_on=tuple(depends_on),
        exclusive=exclusive,
    )


def toy_specs_builder(
    ready_on_start: bool = True,
) -> Callable[[Settings, Metrics, object], Sequence[ActorSpec]]:
    def build(settings: Settings, metrics: Metrics, readiness: object) -> Sequence[ActorSpec]:
        return [
            toy_spec("alpha", ready_on_start=ready_on_start),
            toy_spec("beta", depends_on=["alpha"], ready_on_start=ready_on_start),
        ]

    return build


class Recorder(BaseActor):
    """Stands in for an actor others report to; keeps every message it is told."""

    def __init__(self, hooks: ActorHooks, *, seen: list[Any]) -> None:
        super().__init__(hooks)
        self.seen = seen

    def handle(self, message: Any) -> Any:
        self.seen.append(message)
        return Ok()
