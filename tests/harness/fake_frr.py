"""A scripted FrrControl for FRRActor unit tests."""

from __future__ import annotations

import threading

from pyroute2_cni.frr_control import CommandResult, FrrState


class FakeFrrControl:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: str | None = None  # what "FRR" runs now
        self.validations = 0
        self.reloads = 0
        self.bindings_loaded: list[str] = []  # vrf_bindings of each apply
        self.closed = False
        self.polls = 0
        self.reject_containing: str | None = None
        self.missing: str | None = None
        self.sessions: dict[str, str] = {}
        self.uptimes: dict[str, float] = {}
        self.answered = True
        self.l3vnis: dict[str, int] = {}
        self.l2vnis: frozenset[int] = frozenset()

    def available(self) -> str | None:
        return self.missing

    def validate(self, text: str) -> CommandResult:
        with self.lock:
            self.validations += 1
            if self.missing:
                return CommandResult(ok=False, output="vtysh: failed to connect to any daemons")
            if self.reject_containing and self.reject_containing in text:
                return CommandResult(ok=False, output="line 12: % Unknown command")
            return CommandResult(ok=True, output="")

    def apply(self, text: str, vrf_bindings: str) -> CommandResult:
        with self.lock:
            self.reloads += 1
            self.running = text
            self.bindings_loaded.append(vrf_bindings)
            return CommandResult(ok=True, output="")

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def state(self) -> FrrState:
        with self.lock:
            self.polls += 1
            return FrrState(
                sessions=dict(self.sessions),
                uptimes=dict(self.uptimes),
                answered=self.answered,
                l3vnis=dict(self.l3vnis),
                l2vnis=self.l2vnis,
            )
