"""Decoding of route and neighbour notifications into EVPN entries (pyroute2-encoded)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyroute2_cni.netlink.evpn_kernel import (
    AF_BRIDGE,
    HOLD_METRIC,
    HOLD_PROTO,
    NTF_EXT_LEARNED,
    NTF_SELF,
    NUD_FAILED,
    RTM_DELNEIGH,
    RTM_NEWNEIGH,
    RTPROT_BGP,
    decode,
)
from pyroute2_cni.netlink.transport import RTM_DELROUTE, RTM_NEWROUTE
from pyroute2_cni.values.evpn_hold import FDB, NEIGH, ROUTE

pytestmark = pytest.mark.unit


def _encode(msg: Any, mtype: int) -> bytes:
    msg["header"]["type"] = mtype
    msg.encode()
    return bytes(msg.data)


def _route(proto: int, metric: int = 20, table: int = 42, gateway: str = "192.0.2.1") -> Any:
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 26
    msg["proto"] = proto
    msg["flags"] = 4  # onlink
    msg["attrs"] = [
        ("RTA_TABLE", table),
        ("RTA_DST", "10.244.1.0"),
        ("RTA_GATEWAY", gateway),
        ("RTA_OIF", 7),
        ("RTA_PRIORITY", metric),
    ]
    return msg


def _neigh(family: int, flags: int, dst: str, lladdr: str = "02:00:00:00:00:01") -> Any:
    msg = ndmsg()
    msg["family"] = family
    msg["ifindex"] = 9
    msg["flags"] = flags
    msg["attrs"] = [("NDA_DST", dst), ("NDA_LLADDR", lladdr)]
    return msg


def test_zebra_routes_and_our_copies_are_told_apart() -> None:
    data = (
        _encode(_route(RTPROT_BGP), RTM_NEWROUTE)
        + _encode(_route(HOLD_PROTO, HOLD_METRIC), RTM_DELROUTE)
        + _encode(_route(HOLD_PROTO, 0), RTM_NEWROUTE)  # a kernel route: not followed
        + _encode(_route(RTPROT_BGP, table=254), RTM_NEWROUTE)  # main table: not followed
    )
    events = list(decode(data))
    assert [(added, e.kind, e.owned) for added, e in events] == [
        (True, ROUTE, True),
        (False, ROUTE, False),
    ]
    route = events[0][1]
    assert (route.table, route.dst, route.vtep, route.ifindex, route.onlink) == (
        42,
        "10.244.1.0/26",
        "192.0.2.1",
        7,
        True,
    )


def test_only_externally_learned_neighbours_are_followed_except_deletions() -> None:
    data = (
        _encode(_neigh(socket.AF_INET, NTF_EXT_LEARNED, "192.0.2.1"), RTM_NEWNEIGH)
        + _encode(_neigh(socket.AF_INET, 0, "10.244.1.7"), RTM_NEWNEIGH)  # a pod's ARP entry
        + _encode(_neigh(socket.AF_INET, 0, "192.0.2.1"), RTM_DELNEIGH)
        + _encode(_neigh(AF_BRIDGE, NTF_SELF | NTF_EXT_LEARNED, "192.0.2.1"), RTM_NEWNEIGH)
    )
    events = [(added, e.kind, e.vtep) for added, e in decode(data)]
    assert events == [
        (True, NEIGH, "192.0.2.1"),
        (False, NEIGH, "192.0.2.1"),
        (True, FDB, "192.0.2.1"),
    ]


def test_a_neighbour_gone_failed_is_a_deletion() -> None:
    """zebra marks a router MAC's neighbour FAILED (without the extern_learn flag) before
    it deletes it; a packet queued on it meanwhile goes with it, so the copy goes in at
    FAILED, not 30 ms later at the deletion."""
    failed = _neigh(socket.AF_INET, 0, "192.0.2.1")
    failed["state"] = NUD_FAILED
    reachable = _neigh(socket.AF_INET, NTF_EXT_LEARNED, "192.0.2.1")
    reachable["state"] = 0x02
    data = _encode(reachable, RTM_NEWNEIGH) + _encode(failed, RTM_NEWNEIGH)
    events = [(added, e.kind, e.vtep) for added, e in decode(data)]
    assert events == [(True, NEIGH, "192.0.2.1"), (False, NEIGH, "192.0.2.1")]


def test_a_truncated_datagram_ends_the_decoding() -> None:
    whole = _encode(_route(RTPROT_BGP), RTM_NEWROUTE)
    assert len(list(decode(whole + b"\x08\x00\x00\x00"))) == 1
