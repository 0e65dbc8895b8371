"""Pytest fixtures for kernel tests: throwaway network namespaces, iproute2 read-back.

Kernel tests create what they test with our code (pyroute2) and read the result back with
iproute2 (`ip -j -d ...`), an independent implementation.  Namespaces are made and removed
with iproute2 as well, so the harness does not depend on the code under test.

Registered through `pytest_plugins = ["tests.harness.netns"]` in the root conftest.py.

Fixtures:
- `netns`: a fresh named network namespace with `lo` up; yields its name; on teardown
  kills any process still running in it (e.g. FRR daemons), deletes every link in it (so
  veth peers in other namespaces go too, even if something still pins the namespace), then
  deletes the namespace.
- `netns_factory`: a callable that creates more such namespaces; all are removed on
  teardown, in reverse order.

Helpers:
- `ip_json(args, netns)`: run `/usr/bin/ip -j -d [-n NS] ARGS...` and return parsed JSON.
- `ip(args, netns)`: run `/usr/bin/ip [-n NS] ARGS...`, raise on failure.

The real binary is called by full path: inside the User-Mode Linux guest, busybox applets
shadow same-named tools for busybox sh.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import select
import signal
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

IP = "/usr/bin/ip"
NETNS_RUN_DIR = "/run/netns"
# Bounds every iproute2 call; a hung `ip` must fail the test, not the whole run.
IP_TIMEOUT = 30.0

NetnsFactory = Callable[[], str]

_counter = itertools.count(1)


def _ip_argv(args: list[str], netns: str | None, extra: list[str] | None = None) -> list[str]:
    argv = [IP, *(extra or [])]
    if netns is not None:
        argv += ["-n", netns]
    return argv + args


def ip(args: list[str], netns: str | None = None) -> str:
    """Run `ip [-n NETNS] ARGS...`; return stdout; raise CalledProcessError with stderr."""
    proc = subprocess.run(
        _ip_argv(args, netns),
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
        )
    return proc.stdout


def ip_json(args: list[str], netns: str | None = None) -> Any:
    """Run `ip -j -d [-n NETNS] ARGS...` and return the parsed JSON.

    Commands that print nothing (some `show` variants on an empty set) return [].
    """
    proc = subprocess.run(
        _ip_argv(args, netns, ["-j", "-d"]),
        capture_output=True,
        text=True,
        timeout=IP_TIMEOUT,
        check=False,
    )
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
        )
    out = proc.stdout.strip()
    return json.loads(out) if out else []


def _netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_RUN_DIR, name))


def _new_name() -> str:
    # Short, and unique across concurrent pytest processes sharing one host.
    return f"pt{os.getpid()}-{next(_counter)}"


def create_netns(name: str | None = None) -> str:
    """Create a named network namespace with lo up; return its name."""
    name = name or _new_name()
    ip(["netns", "add", name])
    try:
        ip(["link", "set", "lo", "up"], netns=name)
    except BaseException:
        destroy_netns(name)
        raise
    return name


def _kill_pids(name: str) -> None:
    try:
        out = ip(["netns", "pids", name])
    except subprocess.CalledProcessError:
        return
    for word in out.split():
        if not word.isdigit():
            continue
        pid = int(word)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        # Reap-free wait: a pidfd becomes readable when the process has exited.
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            continue
        try:
            select.select([fd], [], [], 5.0)
        finally:
            os.close(fd)


def destroy_netns(name: str) -> None:
    """Remove a namespace and everything in it; tolerate a namespace that is gone."""
    if not _netns_exists(name):
        return
    _kill_pids(name)
    try:
        links = ip_json(["link", "show"], netns=name)
    except subprocess.CalledProcessError:
        links = []
    for link in links:
        if link.get("ifname") == "lo":
            continue
        # A link may already be gone with its veth peer or its master.
        with contextlib.suppress(subprocess.CalledProcessError):
            ip(["link", "del", "dev", link["ifname"]], netns=name)
    ip(["netns", "del", name])


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("kernel tests need root (run them through scripts/run-in-vrf-kernel)")


@pytest.fixture
def netns_factory() -> Iterator[NetnsFactory]:
    """Create named network namespaces on demand; all are removed after the test."""
    _require_root()
    created: list[str] = []

    def make() -> str:
        name = create_netns()
        created.append(name)
        return name

    yield make
    errors: list[BaseException] = []
    for name in reversed(created):
        try:
            destroy_netns(name)
        except (subprocess.SubprocessError, OSError) as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def netns(netns_factory: NetnsFactory) -> str:
    """A fresh named network namespace with lo up, removed after the test."""
    return netns_factory()
