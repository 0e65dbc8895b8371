"""Stand-ins for unit tests: a clock moved by hand and an Address that keeps what it is
told (in the caller's thread, so a test reads it as soon as an ask returns)."""

from __future__ import annotations

from typing import Any

from pyroute2_cni.actors.address import Address


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RecordingAddress(Address):
    def __init__(self, name: str = "recorder") -> None:
        super().__init__(name)
        self.messages: list[Any] = []

    def tell(self, message: Any) -> bool:
        self.messages.append(message)
        return True
