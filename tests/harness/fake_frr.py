"""A scripted FrrControl for FRRActor unit tests."""

from __future__ import annotations

import threading
from collections.abc import Callable

from pyroute2_cni.frr.control import CommandResult, FrrState


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
        # apply() of a text with this in it fails midway: "FRR" then runs a mix.
        self.fail_apply_containing: str | None = None
        self.restores: list[str | None] = []  # restore() arguments
        self.restore_fails = False
        self.missing: str | None = None
        self.sessions: dict[str, str] = {}
        self.uptimes: dict[str, float] = {}
        self.answered = True
        self.zebra_uptime: float | None = None
        self.l3vnis: dict[str, int] = {}
        self.l2vnis: frozenset[int] = frozenset()
        # Called inside state(), e.g. to let time pass while FRR is being asked.
        self.while_asked: Callable[[], None] | None = None

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
            self.bindings_loaded.append(vrf_bindings)
            if self.fail_apply_containing and self.fail_apply_containing in text:
                self.running = f"{self.running or ''}\n! half of the new one\n"
                return CommandResult(ok=False, output="line 40: % VNI is already configured")
            self.running = text
            return CommandResult(ok=True, output="")

    def restore(self, text: str | None) -> CommandResult:
        with self.lock:
            self.restores.append(text)
            if self.restore_fails:
                return CommandResult(ok=False, output="FRR still differs: vrf vrf-43")
            self.running = text
            return CommandResult(ok=True, output="")

    def running_config(self) -> str | None:
        """What "FRR" runs; tests change `running` to play a restarted daemon."""
        with self.lock:
            return self.running if self.answered else None

    def close(self) -> None:
        with self.lock:
            self.closed = True

    def state(self) -> FrrState:
        hook = self.while_asked
        if hook is not None:
            hook()
        with self.lock:
            self.polls += 1
            return FrrState(
                sessions=dict(self.sessions),
                uptimes=dict(self.uptimes),
                answered=self.answered,
                zebra_uptime=self.zebra_uptime,
                l3vnis=dict(self.l3vnis),
                l2vnis=self.l2vnis,
            )
