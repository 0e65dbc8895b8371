"""Decoding pyroute2's rtnetlink messages into the states of ``netlink.specs``.

Pyroute2's decoding costs most of a millisecond per link: dumps ask the kernel to filter by
kind (``netlink.sessions``), so a node's hundreds of pod veths are only read when pods are
wanted.
"""

from __future__ import annotations

from typing import Any

from pyroute2_cni.netlink.specs import AddrState, LinkState, RouteState, RuleState
from pyroute2_cni.netlink.transport import IFA_F_SECONDARY, IFF_UP

ROUTE_TYPES = {
    1: "unicast",
    2: "local",
    3: "broadcast",
    4: "anycast",
    5: "multicast",
    6: "blackhole",
    7: "unreachable",
    8: "prohibit",
    9: "throw",
    10: "nat",
}
ROUTE_TYPE_IDS = {name: number for number, name in ROUTE_TYPES.items()}
_RULE_OTHER_SELECTORS = (
    "FRA_IIFNAME",
    "FRA_OIFNAME",
    "FRA_FWMARK",
    "FRA_GOTO",
    "FRA_UID_RANGE",
    "FRA_IP_PROTO",
    "FRA_SPORT_RANGE",
    "FRA_DPORT_RANGE",
    "FRA_SUPPRESS_PREFIXLEN",
    "FRA_SUPPRESS_IFGROUP",
    "FRA_TUN_ID",
)


def _nested(msg: Any, *names: str) -> Any:
    node = msg
    for name in names:
        if node is None:
            return None
        node = node.get_attr(name)
    return node


def link_state(msg: Any) -> LinkState:
    info = msg.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    slave_kind = info.get_attr("IFLA_INFO_SLAVE_KIND") if info is not None else None
    slave = info.get_attr("IFLA_INFO_SLAVE_DATA") if info is not None else None
    table = vni = port = 0
    local = ""
    learning: bool | None = None
    if kind == "vrf" and data is not None:
        table = int(data.get_attr("IFLA_VRF_TABLE") or 0)
    elif kind == "vxlan" and data is not None:
        vni = int(data.get_attr("IFLA_VXLAN_ID") or 0)
        local = data.get_attr("IFLA_VXLAN_LOCAL") or ""
        port = int(data.get_attr("IFLA_VXLAN_PORT") or 0)
        learning = bool(data.get_attr("IFLA_VXLAN_LEARNING"))
    neigh_suppress: bool | None = None
    port_learning: bool | None = None
    if slave_kind == "bridge" and slave is not None:
        neigh_suppress = bool(slave.get_attr("IFLA_BRPORT_NEIGH_SUPPRESS"))
        port_learning = bool(slave.get_attr("IFLA_BRPORT_LEARNING"))
    addrgen = _nested(msg, "IFLA_AF_SPEC", "AF_INET6", "IFLA_INET6_ADDR_GEN_MODE")
    inet = _nested(msg, "IFLA_AF_SPEC", "AF_INET")
    return LinkState(
        index=int(msg["index"]),
        name=msg.get_attr("IFLA_IFNAME") or "",
        kind=kind or "",
        mac=(msg.get_attr("IFLA_ADDRESS") or "").lower(),
        mtu=int(msg.get_attr("IFLA_MTU") or 0),
        master=int(msg.get_attr("IFLA_MASTER") or 0),
        up=bool(msg["flags"] & IFF_UP),
        alias=msg.get_attr("IFLA_IFALIAS") or "",
        table=table,
        vni=vni,
        local=local,
        port=port,
        learning=learning,
        addrgen_mode=int(addrgen) if addrgen is not None else None,
        port_neigh_suppress=neigh_suppress,
        port_learning=port_learning,
        peer_in_other_netns=msg.get_attr("IFLA_LINK_NETNSID") is not None,
        arp_notify=bool(inet["arp_notify"]) if inet is not None else None,
    )


def addr_state(msg: Any) -> AddrState:
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    return AddrState(
        index=int(msg["index"]),
        address=msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS") or "",
        prefixlen=int(msg["prefixlen"]),
        secondary=bool(flags & IFA_F_SECONDARY),
    )


def route_state(msg: Any) -> RouteState:
    table = msg.get_attr("RTA_TABLE")
    dst = msg.get_attr("RTA_DST") or "0.0.0.0"
    return RouteState(
        table=int(table if table is not None else msg["table"]),
        dst=f"{dst}/{msg['dst_len']}",
        type=ROUTE_TYPES.get(int(msg["type"]), str(msg["type"])),
        metric=int(msg.get_attr("RTA_PRIORITY") or 0),
        proto=int(msg["proto"]),
        gateway=msg.get_attr("RTA_GATEWAY") or "",
        oif=int(msg.get_attr("RTA_OIF") or 0),
    )


def rule_state(msg: Any) -> RuleState:
    table = msg.get_attr("FRA_TABLE")
    dst = msg.get_attr("FRA_DST")
    src = msg.get_attr("FRA_SRC")
    other = bool(msg["tos"])
    for name in _RULE_OTHER_SELECTORS:
        value = msg.get_attr(name)
        # The kernel reports suppress_prefixlength -1 (unset) as 0xffffffff.
        if value and not (name == "FRA_SUPPRESS_PREFIXLEN" and value == 0xFFFFFFFF):
            other = True
    return RuleState(
        priority=int(msg.get_attr("FRA_PRIORITY") or 0),
        table=int(table if table is not None else msg["table"]),
        dst=f"{dst}/{msg['dst_len']}" if dst else "",
        src=f"{src}/{msg['src_len']}" if src else "",
        l3mdev=bool(msg.get_attr("FRA_L3MDEV")),
        proto=int(msg.get_attr("FRA_PROTOCOL") or 0),
        other_selectors=other,
        action=int(msg["action"]),
    )
