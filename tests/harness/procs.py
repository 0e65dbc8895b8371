"""Processes and network namespaces for the harness: bounded commands, iproute2, namespace
teardown, sockets and HTTP inside a namespace.

Shared by the lab (tests/harness/lab.py), FRR (frr_instance.py), the kernel tier's fixtures
(netns.py) and the lab's command channel.  Binaries are called by full path: inside the
User-Mode Linux guest, busybox applets shadow same-named tools.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from tests.harness.waiting import wait_for

IP = "/usr/bin/ip"
NETNS_DIR = Path("/run/netns")
CALL_TIMEOUT = 60.0

T = TypeVar("T")


class HarnessError(RuntimeError):
    """A harness step (a command, a namespace, a process, FRR, the lab) failed; the message
    says what and where to look."""


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1
) -> T:
    """Poll ``probe`` until it returns a truthy value; HarnessError naming ``what`` on timeout."""
    return wait_for(probe, timeout, what, interval, error=HarnessError)


def run(
    argv: Sequence[str],
    *,
    timeout: float = CALL_TIMEOUT,
    check: bool = True,
    input: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command with a bound; HarnessError (with its output) when it fails and ``check``."""
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=cwd,
            check=False,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise HarnessError(f"{shlex.join(argv)}: no exit within {timeout:.0f} s") from exc
    if check and proc.returncode != 0:
        raise HarnessError(
            f"{shlex.join(argv)} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()}"
        )
    return proc


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = [IP, *(["-n", netns] if netns else []), *args]
    return run(argv, check=check).stdout


def ip_batch(commands: Sequence[str], netns: str | None = None) -> None:
    """Many iproute2 commands in one process (a process start is expensive under UML)."""
    argv = [IP, *(["-n", netns] if netns else []), "-batch", "-"]
    run(argv, input="".join(c + "\n" for c in commands))


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    return [IP, "netns", "exec", netns, *argv] if netns else list(argv)


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def netns_pids(name: str) -> list[int]:
    if not netns_exists(name):
        return []
    out = run([IP, "netns", "pids", name], check=False).stdout
    return [int(word) for word in out.split() if word.isdigit()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_pids(pids: Sequence[int], timeout: float = 10.0) -> None:
    """SIGTERM, wait (bounded), SIGKILL what is left."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def remove_netns(name: str) -> None:
    """Kill what runs in the namespace, delete its links, then the namespace itself."""
    if not netns_exists(name):
        return
    kill_pids(netns_pids(name))
    links = run([IP, "-n", name, "-j", "link", "show"], check=False).stdout.strip()
    with contextlib.suppress(ValueError):
        names = [
            str(link["ifname"]) for link in json.loads(links or "[]") if link["ifname"] != "lo"
        ]
        if names:
            run(
                [IP, "-n", name, "-batch", "-"],
                input="".join(f"link del {n}\n" for n in names),
                check=False,
            )
    run([IP, "netns", "del", name], check=False)


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def netns_socket(
    netns: str, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM
) -> socket.socket:
    """A socket that lives in ``netns``: made by a short-lived thread that entered it.

    Cheaper than a process (``ip netns exec``) under UML; the socket keeps its namespace
    after the thread went back.
    """
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
            try:
                target = os.open(NETNS_DIR / netns, os.O_RDONLY)
                try:
                    _setns(target)
                    try:
                        made.append(socket.socket(family, kind))
                    finally:
                        _setns(own)
                finally:
                    os.close(target)
            finally:
                os.close(own)
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=work, name=f"setns-{netns}")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return made[0]


def http_get(netns: str, port: int, path: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET http://127.0.0.1:port/path inside ``netns``; (status, body)."""
    with netns_socket(netns) as sock:
        sock.settimeout(timeout)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
        )
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise OSError(f"bad HTTP response from {netns}:{port}{path}: {head[:80]!r}")
    return int(status_line[1]), body.decode(errors="replace")


def write_atomic(path: Path, text: str) -> None:
    """Write, fsync, rename: the other side (host or guest, through hostfs) sees all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with tmp.open("w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
