"""CNI_NETNS is checked before any side effect: ADD and CHECK need a network namespace.

Issue #14 item 5: a CNI_NETNS that is a plain file used to pass validation and fail
deep in plumbing with "create veth: Invalid argument".  These tests run against
real paths of this process (no root needed): /proc/self/ns/net is a network
namespace, /proc/self/ns/mnt a namespace of another type.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyroute2_cni.cni.spec import CniError, Code, parse_request

pytestmark = pytest.mark.unit

NET_NS = "/proc/self/ns/net"
MNT_NS = "/proc/self/ns/mnt"
CONFIG = json.dumps({"cniVersion": "1.1.0", "name": "pyroute2-cni", "type": "pyroute2-cni"})


def env(command: str, netns: str) -> dict[str, str]:
    return {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c0ffee",
        "CNI_IFNAME": "eth0",
        "CNI_NETNS": netns,
    }


def refused(command: str, netns: str) -> CniError:
    with pytest.raises(CniError) as caught:
        parse_request(env(command, netns), CONFIG.encode())
    error = caught.value
    assert error.code is Code.INVALID_ENVIRONMENT
    assert f"CNI_NETNS {netns!r}" in error.msg
    return error


@pytest.mark.parametrize("command", ["ADD", "CHECK"])
def test_a_plain_file_is_refused_by_name(tmp_path: Path, command: str) -> None:
    plain = tmp_path / "not-a-netns"
    plain.write_text("")
    error = refused(command, str(plain))
    assert "is not a network namespace" in error.msg
    assert "a regular file" in error.msg
    assert "/proc/<pid>/ns/net" in error.details


def test_a_directory_is_refused(tmp_path: Path) -> None:
    error = refused("ADD", str(tmp_path))
    assert "is not a network namespace" in error.msg and "a directory" in error.msg


def test_a_namespace_of_another_type_is_refused() -> None:
    error = refused("ADD", MNT_NS)
    assert "is a mount namespace, not a network namespace" in error.msg


def test_a_missing_path_does_not_exist_here(tmp_path: Path) -> None:
    # What a path in another mount namespace looks like from the daemon.
    error = refused("ADD", str(tmp_path / "gone"))
    assert "does not exist" in error.msg
    assert "mount namespace" in error.details


def test_a_network_namespace_is_accepted() -> None:
    request = parse_request(env("ADD", NET_NS), CONFIG.encode())
    assert request.netns == NET_NS


@pytest.mark.parametrize("kind", ["missing", "plain file", "mount namespace"])
def test_del_does_not_need_a_network_namespace(tmp_path: Path, kind: str) -> None:
    # CNI spec: DEL must succeed when the netns is gone; plumbing skips what it cannot reach.
    plain = tmp_path / "plain"
    plain.write_text("")
    netns = {"missing": str(tmp_path / "gone"), "plain file": str(plain), "mount namespace": MNT_NS}
    request = parse_request(env("DEL", netns[kind]), CONFIG.encode())
    assert request.command == "DEL"
