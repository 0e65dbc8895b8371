"""Behaviour every NetlinkBackend must show: the fake's contract with the kernel.

Plain functions taking a :class:`BehaviourEnv`; run by
tests/unit/test_fake_netlink_behaviour.py (FakeNetlink) and
tests/kernel/test_netlink_behaviour.py (KernelNetlink in a fresh namespace), so that a
difference between the fake and the kernel fails a test instead of hiding a bug.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass

import pytest

from pyroute2_cni.netlink.backend import NetlinkBackend
from pyroute2_cni.netlink.specs import (
    ADDRGEN_NONE,
    OUR_PROTO,
    PREF_LOCAL,
    TABLE_LOCAL,
    TABLE_MAIN,
    UNREACHABLE_METRIC,
    AddrSpec,
    BridgePortSpec,
    LinkChange,
    LinkSpec,
    RouteSpec,
    RuleSpec,
    VethSpec,
)


@dataclass(frozen=True)
class BehaviourEnv:
    backend: NetlinkBackend  # in an empty node namespace
    pod_netns: str  # name of an empty namespace for pod ends


def _errno(fn: Callable[[], object]) -> int | None:
    try:
        fn()
    except OSError as exc:
        return exc.errno
    return None


def _bridge(name: str = "l3br-7", master: str = "", up: bool = False) -> LinkSpec:
    return LinkSpec(
        name=name, kind="bridge", mac="02:00:00:00:07:01", mtu=1400, master=master, up=up
    )


def link_lifecycle(env: BehaviourEnv) -> None:
    b = env.backend
    assert b.link_get("l3br-7") is None
    b.link_create(_bridge())
    link = b.link_get("l3br-7")
    assert link is not None
    assert (link.kind, link.mac, link.mtu, link.up, link.master) == (
        "bridge",
        "02:00:00:00:07:01",
        1400,
        False,
        0,
    )
    assert link.addrgen_mode == ADDRGEN_NONE
    assert "l3br-7" in {link.name for link in b.links()}
    assert [link.name for link in b.links("bridge")] == ["l3br-7"]
    assert b.link_get(link.index) == link
    assert _errno(lambda: b.link_create(_bridge())) == errno.EEXIST
    assert _errno(lambda: b.link_create(_bridge("l3br-8", master="nope"))) == errno.ENODEV
    assert _errno(lambda: b.link_set("nope", LinkChange(up=True))) == errno.ENODEV
    b.link_delete("l3br-7")
    assert b.link_get("l3br-7") is None
    assert _errno(lambda: b.link_delete("l3br-7")) == errno.ENODEV


def fabric_attributes(env: BehaviourEnv) -> None:
    b = env.backend
    b.link_create(LinkSpec(name="vrf-7", kind="vrf", mac="02:00:00:00:07:00", mtu=None, table=7))
    b.link_create(_bridge(master="vrf-7", up=True))
    b.link_create(
        LinkSpec(
            name="l2vx-7007",
            kind="vxlan",
            mac="02:00:00:00:07:02",
            mtu=1400,
            master="l3br-7",
            vni=7007,
            local="192.0.2.7",
            port=4790,
            bridge_port=BridgePortSpec(neigh_suppress=True, learning=False),
        )
    )
    vrf = b.link_get("vrf-7")
    bridge = b.link_get("l3br-7")
    vxlan = b.link_get("l2vx-7007")
    assert vrf is not None and bridge is not None and vxlan is not None
    assert (vrf.kind, vrf.table, vrf.mac, vrf.up) == ("vrf", 7, "02:00:00:00:07:00", False)
    assert (bridge.master, bridge.up) == (vrf.index, True)
    assert (vxlan.kind, vxlan.vni, vxlan.local, vxlan.port, vxlan.learning) == (
        "vxlan",
        7007,
        "192.0.2.7",
        4790,
        False,
    )
    assert (vxlan.master, vxlan.mtu, vxlan.up) == (bridge.index, 1400, False)
    assert (vxlan.port_neigh_suppress, vxlan.port_learning) == (True, False)
    assert vxlan.addrgen_mode == ADDRGEN_NONE
    # The first VRF brings the kernel's l3mdev rule.
    assert any(rule.l3mdev for rule in b.rules())
    # Per-device sysctls exist once the device does.
    assert b.sysctl_get("net/ipv4/conf/l3br-7/rp_filter") is not None
    # Deleting the VRF leaves its bridge without master.
    b.link_delete("vrf-7")
    bridge = b.link_get("l3br-7")
    assert bridge is not None and bridge.master == 0


def link_changes(env: BehaviourEnv) -> None:
    b = env.backend
    b.link_create(LinkSpec(name="vrf-7", kind="vrf", mac="02:00:00:00:07:00", mtu=None, table=7))
    b.link_create(_bridge())
    b.link_create(
        LinkSpec(
            name="l3vx-7",
            kind="vxlan",
            mac="02:00:00:00:07:03",
            mtu=1400,
            vni=7,
            local="192.0.2.7",
            port=4789,
        )
    )
    port = BridgePortSpec(neigh_suppress=True, learning=False)
    # Bridge port settings need a master.
    assert _errno(lambda: b.link_set("l3vx-7", LinkChange(bridge_port=port))) == errno.EOPNOTSUPP
    b.link_set(
        "l3vx-7", LinkChange(master="l3br-7", bridge_port=port, mtu=1300, mac="02:00:00:00:07:04")
    )
    b.link_set("l3br-7", LinkChange(master="vrf-7", up=True))
    vxlan = b.link_get("l3vx-7")
    bridge = b.link_get("l3br-7")
    vrf = b.link_get("vrf-7")
    assert vxlan is not None and bridge is not None and vrf is not None
    assert (vxlan.master, vxlan.mtu, vxlan.mac) == (bridge.index, 1300, "02:00:00:00:07:04")
    assert (vxlan.port_neigh_suppress, vxlan.port_learning) == (True, False)
    assert (bridge.master, bridge.up) == (vrf.index, True)
    b.link_set("l3vx-7", LinkChange(master=""))
    vxlan = b.link_get("l3vx-7")
    assert vxlan is not None and vxlan.master == 0 and vxlan.port_neigh_suppress is None
    assert _errno(lambda: b.link_set("l3vx-7", LinkChange(master="nope"))) == errno.ENODEV
    b.link_set("l3br-7", LinkChange(up=False, alias="hello"))
    bridge = b.link_get("l3br-7")
    assert bridge is not None and not bridge.up and bridge.alias == "hello"


def addresses(env: BehaviourEnv) -> None:
    b = env.backend
    b.link_create(_bridge())
    spec = AddrSpec(ifname="l3br-7", address="10.7.0.1", prefixlen=26)
    b.addr_add(spec)
    assert _errno(lambda: b.addr_add(spec)) == errno.EEXIST
    other = AddrSpec(ifname="l3br-7", address="10.7.0.65", prefixlen=26)
    b.addr_add(other)
    bridge = b.link_get("l3br-7")
    assert bridge is not None
    found = {(a.address, a.prefixlen, a.secondary) for a in b.addresses(bridge.index)}
    assert found == {("10.7.0.1", 26, False), ("10.7.0.65", 26, False)}
    b.addr_delete(spec)
    assert _errno(lambda: b.addr_delete(spec)) == errno.EADDRNOTAVAIL
    assert (
        _errno(lambda: b.addr_add(AddrSpec(ifname="nope", address="10.7.0.1", prefixlen=26)))
        == errno.ENODEV
    )


def routes(env: BehaviourEnv) -> None:
    b = env.backend
    assert b.routes(7) == ()  # a table that does not exist yet
    for table in (7, 70000):
        spec = RouteSpec(
            table=table, dst="0.0.0.0/0", type="unreachable", metric=UNREACHABLE_METRIC
        )
        b.route_add(spec)
        assert _errno(lambda spec=spec: b.route_add(spec)) == errno.EEXIST  # type: ignore[misc]
        narrow = RouteSpec(
            table=table, dst="10.7.0.0/16", type="unreachable", metric=UNREACHABLE_METRIC
        )
        b.route_add(narrow)
        found = {(r.dst, r.type, r.metric, r.proto) for r in b.routes(table)}
        assert found == {
            ("0.0.0.0/0", "unreachable", UNREACHABLE_METRIC, OUR_PROTO),
            ("10.7.0.0/16", "unreachable", UNREACHABLE_METRIC, OUR_PROTO),
        }
        b.route_delete(spec)
        assert _errno(lambda spec=spec: b.route_delete(spec)) == errno.ESRCH  # type: ignore[misc]
        assert [r.dst for r in b.routes(table)] == ["10.7.0.0/16"]


def rules(env: BehaviourEnv) -> None:
    b = env.backend
    system = RuleSpec(priority=2000, table=7, dst="10.7.0.0/16")
    b.rule_add(system)
    assert _errno(lambda: b.rule_add(system)) == errno.EEXIST
    mine = [r for r in b.rules() if r.priority == 2000]
    assert [(r.table, r.dst, r.proto, r.plain()) for r in mine] == [
        (7, "10.7.0.0/16", OUR_PROTO, True)
    ]
    b.rule_delete(system)
    assert _errno(lambda: b.rule_delete(system)) == errno.ENOENT
    # The local rule moves behind the l3mdev rule: add the new one, then drop priority 0.
    b.rule_add(RuleSpec(priority=PREF_LOCAL, table=TABLE_LOCAL))
    b.rule_delete(RuleSpec(priority=0, table=TABLE_LOCAL, proto=0))
    local = [(r.priority, r.table) for r in b.rules() if r.table == TABLE_LOCAL]
    assert local == [(PREF_LOCAL, TABLE_LOCAL)]
    b.rule_add(RuleSpec(priority=1000, l3mdev=True))
    assert [r.priority for r in b.rules() if r.l3mdev] == [1000]


def sysctls(env: BehaviourEnv) -> None:
    b = env.backend
    assert b.sysctl_get("net/ipv4/ip_forward") in ("0", "1")
    b.sysctl_set("net/ipv4/ip_forward", "1")
    assert b.sysctl_get("net/ipv4/ip_forward") == "1"
    b.sysctl_set("net/ipv4/conf/all/rp_filter", "0")
    assert b.sysctl_get("net/ipv4/conf/all/rp_filter") == "0"
    assert b.sysctl_get("net/ipv4/no_such_key") is None
    assert _errno(lambda: b.sysctl_set("net/ipv4/no_such_key", "1")) == errno.ENOENT


def _veth(env: BehaviourEnv, host: str = "p2c0123456789ab", peer: str = "eth0") -> VethSpec:
    return VethSpec(
        host_name=host,
        host_mac="02:00:00:00:70:01",
        peer_name=peer,
        peer_mac="02:00:00:00:70:02",
        netns=env.pod_netns,
        mtu=1400,
        master="l3br-7",
        alias="pyroute2-cni/v1 test",
    )


def veth_and_pod_session(env: BehaviourEnv) -> None:
    b = env.backend
    b.link_create(_bridge(up=True))
    b.addr_add(AddrSpec(ifname="l3br-7", address="10.7.0.1", prefixlen=26))
    b.veth_create(_veth(env))
    host = b.link_get("p2c0123456789ab")
    bridge = b.link_get("l3br-7")
    assert host is not None and bridge is not None
    assert (host.kind, host.master, host.up, host.mtu, host.mac, host.alias) == (
        "veth",
        bridge.index,
        True,
        1400,
        "02:00:00:00:70:01",
        "pyroute2-cni/v1 test",
    )
    assert host.peer_in_other_netns
    assert host.addrgen_mode == ADDRGEN_NONE
    assert _errno(lambda: b.veth_create(_veth(env))) == errno.EEXIST
    # The host name is free but the pod name is taken.
    assert _errno(lambda: b.veth_create(_veth(env, host="p2c0000000000ff"))) == errno.EEXIST
    assert b.link_get("p2c0000000000ff") is None
    with closing(b.open_netns(env.pod_netns)) as pod:
        peer = pod.link_get("eth0")
        assert peer is not None
        assert (peer.kind, peer.mtu, peer.mac, peer.up) == (
            "veth",
            1400,
            "02:00:00:00:70:02",
            False,
        )
        default = RouteSpec(
            table=TABLE_MAIN, dst="0.0.0.0/0", gateway="10.7.0.1", oif="eth0", proto=3
        )
        # No address yet: the gateway is not reachable.
        assert _errno(lambda: pod.route_add(default)) == errno.ENETUNREACH
        pod.link_set("eth0", LinkChange(arp_notify=True))
        peer = pod.link_get("eth0")
        assert peer is not None and peer.arp_notify
        pod.addr_add(AddrSpec(ifname="eth0", address="10.7.0.2", prefixlen=26))
        # The link is down: no connected route yet.
        assert _errno(lambda: pod.route_add(default)) == errno.ENETUNREACH
        pod.link_set("eth0", LinkChange(up=True))
        pod.route_add(default)
        assert _errno(lambda: pod.route_add(default)) == errno.EEXIST
        pod.route_replace(default)
        defaults = [(r.gateway, r.oif) for r in pod.routes(TABLE_MAIN) if r.dst == "0.0.0.0/0"]
        assert defaults == [("10.7.0.1", peer.index)]
        assert {(a.address, a.prefixlen) for a in pod.addresses(peer.index)} == {("10.7.0.2", 26)}
    # Deleting the host end removes the pod end.
    b.link_delete("p2c0123456789ab")
    with closing(b.open_netns(env.pod_netns)) as pod:
        assert pod.link_get("eth0") is None


def missing_netns(env: BehaviourEnv) -> None:
    b = env.backend
    b.link_create(_bridge())
    gone = env.pod_netns + "-gone"
    assert _errno(lambda: b.open_netns(gone)) == errno.ENOENT
    spec = VethSpec(
        host_name="p2c0123456789ab",
        host_mac="02:00:00:00:70:01",
        peer_name="eth0",
        peer_mac="02:00:00:00:70:02",
        netns=gone,
        mtu=1400,
        master="l3br-7",
        alias="x",
    )
    assert _errno(lambda: b.veth_create(spec)) == errno.ENOENT
    assert b.link_get("p2c0123456789ab") is None


BEHAVIOURS: tuple[Callable[[BehaviourEnv], None], ...] = (
    link_lifecycle,
    fabric_attributes,
    link_changes,
    addresses,
    routes,
    rules,
    sysctls,
    veth_and_pod_session,
    missing_netns,
)


def behaviour_params() -> list[object]:
    return [pytest.param(fn, id=fn.__name__) for fn in BEHAVIOURS]
