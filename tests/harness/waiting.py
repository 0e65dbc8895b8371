"""Wait on a condition with a timeout instead of sleeping."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T | None],
    timeout: float,
    what: str,
    interval: float = 0.02,
    error: type[Exception] = AssertionError,
) -> T:
    """Poll `condition` until it returns a truthy value; `error` naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = condition()
        if last:
            return last
        if time.monotonic() > deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(interval)


def free_tcp_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
