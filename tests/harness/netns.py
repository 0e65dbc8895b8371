"""Pytest fixtures for kernel tests: throwaway network namespaces, iproute2 read-back.

Kernel tests create what they test with our code (pyroute2) and read the result back with
iproute2 (`ip -j -d ...`), an independent implementation.  Namespaces are made and removed
with iproute2 as well, so the harness does not depend on the code under test.

Registered through `pytest_plugins = ["tests.harness.netns"]` in the root conftest.py.

Fixtures:
- `netns`: a fresh named network namespace with `lo` up; yields its name; on teardown
  stops any process still running in it (e.g. FRR daemons), deletes every link in it (so
  veth peers in other namespaces go too, even if something still pins the namespace), then
  deletes the namespace (`procs.remove_netns`, the lab's teardown too).
- `netns_factory`: a callable that creates more such namespaces; all are removed on
  teardown, in reverse order.

Helpers:
- `ip_json(args, netns)`: run `/usr/bin/ip -j -d [-n NS] ARGS...` and return parsed JSON.
- `ip(args, netns)`: run `/usr/bin/ip [-n NS] ARGS...`, raise on failure.

The real binary is called by full path: inside the User-Mode Linux guest, busybox applets
shadow same-named tools for busybox sh.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.harness.procs import IP, HarnessError, remove_netns

# Bounds every iproute2 call; a hung `ip` must fail the test, not the whole run.
IP_TIMEOUT = 30.0

NetnsFactory = Callable[[], str]

_counter = itertools.count(1)


def _ip_argv(args: list[str], netns: str | None, extra: list[str] | None = None) -> list[str]:
    argv = [IP, *(extra or [])]
    if netns is not None:
        argv += ["-n", netns]
    return argv + args


def _run_ip(argv: list[str]) -> str:
    """Run one iproute2 command; return stdout; raise CalledProcessError with stderr."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=IP_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, proc.args, output=proc.stdout, stderr=proc.stderr
        )
    return proc.stdout


def ip(args: list[str], netns: str | None = None) -> str:
    """Run `ip [-n NETNS] ARGS...`; return stdout; raise CalledProcessError with stderr."""
    return _run_ip(_ip_argv(args, netns))


def ip_json(args: list[str], netns: str | None = None) -> Any:
    """Run `ip -j -d [-n NETNS] ARGS...` and return the parsed JSON.

    Commands that print nothing (some `show` variants on an empty set) return [].
    """
    out = _run_ip(_ip_argv(args, netns, ["-j", "-d"])).strip()
    return json.loads(out) if out else []


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
        remove_netns(name)
        raise
    return name


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
            remove_netns(name)
        except (HarnessError, OSError) as e:
            errors.append(e)
    if errors:
        raise errors[0]


@pytest.fixture
def netns(netns_factory: NetnsFactory) -> str:
    """A fresh named network namespace with lo up, removed after the test."""
    return netns_factory()
