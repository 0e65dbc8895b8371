"""Small actors that crash, hang or get ready on command, for supervisor tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.config import Settings
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.metrics import Metrics
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
class Identity:
    name: str
    generation: int


class ToyActor(BaseActor):
    def __init__(self, hooks: ActorHooks, *, ready_on_start: bool) -> None:
        super().__init__(hooks)
        self._ready_on_start = ready_on_start

    def on_start(self) -> None:
        if self._ready_on_start:
            self.set_ready(True)
        else:
            self.set_ready(False, "waiting for BecomeReady")

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
            case _:
                return self.unknown(message)


def toy_spec(
    name: str, *, depends_on: Sequence[str] = (), ready_on_start: bool = True
) -> ActorSpec:
    address = Address(name)

    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        return ToyActor.start(hooks, ready_on_start=ready_on_start)

    return ActorSpec(name=name, start=start, address=address, depends_on=tuple(depends_on))


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
