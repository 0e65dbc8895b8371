"""Ask an FRR daemon through its vty socket, the way vtysh does, without starting vtysh.

Each FRR daemon listens on ``<vty dir>/<daemon>.vty`` (a Unix stream socket).  vtysh
sends a command as text ending in one NUL byte; the daemon answers with the command's
output, then three NUL bytes and a status byte (0 success, 1 warning, other values are
errors such as an unknown command).  The state the FRRActor polls every few seconds
(and every 0.25 s after a reload) costs a vtysh process per call otherwise: ~50 ms on a
node, ~1 s under User-Mode Linux, where the polls of a few nodes kept the one CPU busy.
One socket per daemon stays open; after a daemon restarts, the next call reconnects.
The timeout bounds a whole ask (connect, "enable", the command, one reconnect), so
config.frr_apply_bound can count on it.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

# Status bytes that carry a usable answer (CMD_SUCCESS, CMD_WARNING: bgpd warns and
# prints "{}" when asked for a summary before its instance exists).
USABLE = frozenset((0, 1))
TERMINATOR_LENGTH = 4  # b"\0\0\0" + status
MAX_ANSWER = 64 * 1024 * 1024


class VtyError(Exception):
    """The daemon did not answer usably; the message says why."""


class VtyClient:
    """One daemon's vty socket, kept open between calls.  Not thread-safe: one owner."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self._timeout = timeout
        self._sock: socket.socket | None = None

    def ask(self, command: str) -> str:
        """The daemon's output for ``command``; VtyError when it cannot be had."""
        if "\0" in command or "\n" in command:
            raise VtyError(f"one command per call, without NUL or newline: {command!r}")
        deadline = time.monotonic() + self._timeout
        for fresh in (self._sock is None, True):
            try:
                sock = self._connected(deadline)
                status, output = self._exchange(sock, command, deadline)
            except TimeoutError as exc:
                self.close()  # the answer may still come: this socket is out of step
                raise VtyError(f"{self.path}: no answer to {command!r} ({exc})") from exc
            except VtyError:
                self.close()
                raise
            except OSError as exc:
                self.close()
                if fresh:
                    raise VtyError(f"{self.path}: {exc.strerror or exc}") from exc
                continue  # a kept socket went stale (daemon restarted): once more, anew
            if status not in USABLE:
                raise VtyError(f"{self.path}: {command!r} failed: {output.strip()[:200]}")
            return output
        raise AssertionError("not reached")  # the second pass is always fresh

    def __enter__(self) -> VtyClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _left(self, deadline: float) -> float:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {self._timeout:g} s")
        return left

    def _connected(self, deadline: float) -> socket.socket:
        if self._sock is None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(self._left(deadline))
                sock.connect(str(self.path))
                # vtysh enables first; some show commands need it.
                self._exchange(sock, "enable", deadline)
            except OSError:
                sock.close()
                raise
            self._sock = sock
        return self._sock

    def _exchange(self, sock: socket.socket, command: str, deadline: float) -> tuple[int, str]:
        sock.settimeout(self._left(deadline))
        sock.sendall(command.encode() + b"\0")
        answer = bytearray()
        while not (len(answer) >= TERMINATOR_LENGTH and answer[-TERMINATOR_LENGTH:-1] == b"\0\0\0"):
            # Each wait gets only what is left: a daemon trickling bytes cannot stretch it.
            sock.settimeout(self._left(deadline))
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionResetError("the daemon closed the connection")
            answer += chunk
            if len(answer) > MAX_ANSWER:
                raise VtyError(f"{self.path}: answer larger than {MAX_ANSWER} bytes")
        status = answer[-1]
        return status, answer[:-TERMINATOR_LENGTH].decode(errors="replace")
