"""rtnetlink sessions: the node's namespace (:class:`KernelNetlink`) and a pod's.

With ``evpn_kernel``, the only module that imports pyroute2 (.importlinter holds it): its
message classes encode the requests, ``netlink.decode`` reads the replies, and
``netlink.transport`` carries both over plain netlink sockets:

- The node's namespace: one socket, opened when the backend is made (in the actor's
  thread, which is the only thread using it).
- A pod's namespace: a socket opened there by ``netlink.netns.NetnsWorker`` and used from the
  caller's thread.  No thread that runs other code ever calls ``setns``.
- The pod's gratuitous ARP is the kernel's: ``arp_notify`` is set on the pod end before it
  comes up.  (A packet socket would do too, but closing one waits for an RCU grace period:
  12 ms per pod on the host.)

Implements ``netlink.backend.NetlinkBackend``; errors as described there.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, TypeVar

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyroute2_cni.netlink import specs
from pyroute2_cni.netlink.backend import NetnsSession
from pyroute2_cni.netlink.decode import (
    ROUTE_TYPE_IDS,
    addr_state,
    link_state,
    route_state,
    rule_state,
)
from pyroute2_cni.netlink.netns import NetnsWorker, netns_path
from pyroute2_cni.netlink.transport import (
    FR_ACT_TO_TBL,
    IFF_UP,
    IN6_ADDR_GEN_MODE_NONE,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLM_F_REPLACE,
    RT_SCOPE_UNIVERSE,
    RTEXT_FILTER_SKIP_STATS,
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    Rtnl,
    attr,
    nest,
    netlink_socket,
)

T = TypeVar("T")

_IFINFOMSG = struct.Struct("=BxHiII")
IFLA_IFNAME = 3
IFLA_AF_SPEC = 26
IFLA_INET_CONF = 1
IPV4_DEVCONF_ARP_NOTIFY = 22


_ADDRGEN_NONE = (
    "IFLA_AF_SPEC",
    {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]},
)


def _network(cidr: str) -> tuple[str, int]:
    net = ipaddress.IPv4Network(cidr, strict=False)
    return str(net.network_address), net.prefixlen


# -- sessions ---------------------------------------------------------------------


class _Session:
    """rtnetlink operations over one socket (node or pod namespace)."""

    def __init__(self, sock: socket.socket, cache_index: bool = False) -> None:
        self._nl = Rtnl(sock)
        # Pod sessions live for one operation: their names cannot be reused meanwhile.
        self._indexes: dict[str, int] | None = {} if cache_index else None

    def close(self) -> None:
        self._nl.close()

    # links ----------------------------------------------------------------------
    @staticmethod
    def _ifinfmsg(index: int = 0, flags: int = 0, change: int = 0) -> Any:
        msg = ifinfmsg()
        msg["family"] = socket.AF_UNSPEC
        msg["index"] = index
        msg["flags"] = flags
        msg["change"] = change
        return msg

    def link_get(self, name: str | int) -> specs.LinkState | None:
        if isinstance(name, int):
            msg = self._ifinfmsg(index=name)
            msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
        else:
            msg = self._ifinfmsg()
            msg["attrs"] = [("IFLA_IFNAME", name), ("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
        try:
            reply = self._nl.get(msg, RTM_GETLINK, ifinfmsg, f"get link {name}")
        except OSError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        state = link_state(reply)
        if self._indexes is not None:
            self._indexes[state.name] = state.index
        return state

    def _index(self, name: str) -> int:
        if self._indexes is not None and name in self._indexes:
            return self._indexes[name]
        link = self.link_get(name)
        if link is None:
            raise OSError(errno.ENODEV, f"no link named {name}")
        if self._indexes is not None:
            self._indexes[name] = link.index
        return link.index

    def links(self, kind: str = "") -> tuple[specs.LinkState, ...]:
        # Decoding costs most of a millisecond per link (pyroute2): with a kind, the kernel
        # filters (when it knows the kind; otherwise it sends all and we filter here).
        def make() -> Any:
            msg = self._ifinfmsg()
            msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
            if kind:
                msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
            return msg

        found = self._nl.dump(make, RTM_GETLINK, ifinfmsg, f"dump links {kind}".strip())
        return tuple(state for state in map(link_state, found) if not kind or state.kind == kind)

    def link_set(self, name: str, change: specs.LinkChange) -> None:
        if change.empty():
            return
        attrs: list[Any] = [("IFLA_IFNAME", name)]
        if change.arp_notify:
            self._set_arp_notify(name)
        if change.master is not None:
            # A new master first: bridge port settings need the port to exist.
            master = self._index(change.master) if change.master else 0
            self._newlink_set(name, [("IFLA_MASTER", master)], 0, 0)
        if change.mtu is not None:
            attrs.append(("IFLA_MTU", change.mtu))
        if change.mac is not None:
            attrs.append(("IFLA_ADDRESS", change.mac))
        if change.alias is not None:
            attrs.append(("IFLA_IFALIAS", change.alias))
        if change.addrgen_none:
            attrs.append(_ADDRGEN_NONE)
        if change.bridge_port is not None:
            attrs.append(
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_SLAVE_KIND", "bridge"),
                            (
                                "IFLA_INFO_SLAVE_DATA",
                                {
                                    "attrs": [
                                        (
                                            "IFLA_BRPORT_NEIGH_SUPPRESS",
                                            int(change.bridge_port.neigh_suppress),
                                        ),
                                        ("IFLA_BRPORT_LEARNING", int(change.bridge_port.learning)),
                                    ]
                                },
                            ),
                        ]
                    },
                )
            )
        flags = change_mask = 0
        if change.up is not None:
            change_mask = IFF_UP
            flags = IFF_UP if change.up else 0
        if len(attrs) > 1 or change_mask:
            # Up comes last so that addrgenmode none is in force before IPv6 sees the link.
            if change_mask and len(attrs) > 1:
                self._newlink_set(name, attrs[1:], 0, 0)
                self._newlink_set(name, [], flags, change_mask)
            else:
                self._newlink_set(name, attrs[1:], flags, change_mask)

    def _set_arp_notify(self, name: str) -> None:
        # pyroute2 decodes IFLA_INET_CONF as a flat struct and cannot encode it: by hand.
        conf = attr(IPV4_DEVCONF_ARP_NOTIFY, struct.pack("=I", 1))
        body = (
            _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + attr(IFLA_IFNAME, name.encode() + b"\0")
            + nest(IFLA_AF_SPEC, nest(socket.AF_INET, nest(IFLA_INET_CONF, conf)))
        )
        self._nl.request_raw(body, RTM_NEWLINK, 0, f"set arp_notify on {name}")

    def _newlink_set(self, name: str, attrs: list[Any], flags: int, change: int) -> None:
        msg = self._ifinfmsg(flags=flags, change=change)
        msg["attrs"] = [("IFLA_IFNAME", name), *attrs]
        self._nl.request(msg, RTM_NEWLINK, 0, f"set link {name}")

    # addresses ------------------------------------------------------------------
    def addresses(self, index: int = 0) -> tuple[specs.AddrState, ...]:
        def make() -> Any:
            msg = ifaddrmsg()
            msg["family"] = socket.AF_INET
            msg["index"] = index
            return msg

        found = (
            addr_state(m) for m in self._nl.dump(make, RTM_GETADDR, ifaddrmsg, "dump addresses")
        )
        return tuple(a for a in found if not index or a.index == index)

    def _addr_msg(self, spec: specs.AddrSpec) -> Any:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = spec.prefixlen
        msg["index"] = self._index(spec.ifname)
        msg["attrs"] = [("IFA_LOCAL", spec.address), ("IFA_ADDRESS", spec.address)]
        return msg

    def addr_add(self, spec: specs.AddrSpec) -> None:
        self._nl.request(
            self._addr_msg(spec),
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add address {spec.describe()}",
        )

    def addr_delete(self, spec: specs.AddrSpec) -> None:
        self._nl.request(self._addr_msg(spec), RTM_DELADDR, 0, f"delete address {spec.describe()}")

    # routes ---------------------------------------------------------------------
    def routes(self, table: int) -> tuple[specs.RouteState, ...]:
        def make() -> Any:
            msg = rtmsg()
            msg["family"] = socket.AF_INET
            msg["table"] = table if table < 256 else 0
            msg["attrs"] = [("RTA_TABLE", table)]
            return msg

        try:
            found = self._nl.dump(make, RTM_GETROUTE, rtmsg, f"dump routes of table {table}")
        except OSError as exc:
            # With strict checking the kernel filters by table and answers ENOENT for a
            # table that does not exist (yet): no routes.
            if exc.errno == errno.ENOENT:
                return ()
            raise
        return tuple(r for r in (route_state(m) for m in found) if r.table == table)

    def _route_msg(self, spec: specs.RouteSpec, deleting: bool) -> Any:
        dst, dst_len = _network(spec.dst)
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["dst_len"] = dst_len
        msg["table"] = spec.table if spec.table < 256 else 0
        msg["proto"] = spec.proto
        msg["scope"] = RT_SCOPE_UNIVERSE
        msg["type"] = ROUTE_TYPE_IDS[spec.type]
        attrs: list[Any] = [("RTA_TABLE", spec.table)]
        if dst_len:
            attrs.append(("RTA_DST", dst))
        if spec.metric:
            attrs.append(("RTA_PRIORITY", spec.metric))
        if spec.gateway:
            attrs.append(("RTA_GATEWAY", spec.gateway))
        if spec.oif and not deleting:
            attrs.append(("RTA_OIF", self._index(spec.oif)))
        msg["attrs"] = attrs
        return msg

    def route_add(self, spec: specs.RouteSpec) -> None:
        self._nl.request(
            self._route_msg(spec, False),
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add route {spec.describe()}",
        )

    def route_replace(self, spec: specs.RouteSpec) -> None:
        self._nl.request(
            self._route_msg(spec, False),
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            f"replace route {spec.describe()}",
        )

    def route_delete(self, spec: specs.RouteSpec) -> None:
        self._nl.request(
            self._route_msg(spec, True), RTM_DELROUTE, 0, f"delete route {spec.describe()}"
        )


class KernelNetlink(_Session):
    """The real kernel.  `netns` (a name or path) runs the backend against that namespace
    instead of the process's own; tests use it, the daemon does not."""

    def __init__(self, netns: str | None = None) -> None:
        self._netns = netns_path(netns) if netns else None
        self._worker = NetnsWorker()
        try:
            sock = (
                self._worker.run(self._netns, netlink_socket) if self._netns else netlink_socket()
            )
        except BaseException:
            self._worker.close()
            raise
        super().__init__(sock)

    def close(self) -> None:
        super().close()
        self._worker.close()

    # links ------------------------------------------------------------------------
    def link_create(self, spec: specs.LinkSpec) -> None:
        msg = self._ifinfmsg()
        attrs: list[Any] = [("IFLA_IFNAME", spec.name)]
        if spec.mac:
            attrs.append(("IFLA_ADDRESS", spec.mac))
        if spec.mtu is not None:
            attrs.append(("IFLA_MTU", spec.mtu))
        if spec.master:
            attrs.append(("IFLA_MASTER", self._index(spec.master)))
        data: list[Any] = []
        if spec.kind == "vrf":
            data = [("IFLA_VRF_TABLE", spec.table)]
        elif spec.kind == "vxlan":
            data = [
                ("IFLA_VXLAN_ID", spec.vni),
                ("IFLA_VXLAN_LOCAL", spec.local),
                ("IFLA_VXLAN_PORT", spec.port),
                ("IFLA_VXLAN_LEARNING", 0),
            ]
        info: list[Any] = [("IFLA_INFO_KIND", spec.kind)]
        if data:
            info.append(("IFLA_INFO_DATA", {"attrs": data}))
        attrs.append(("IFLA_LINKINFO", {"attrs": info}))
        msg["attrs"] = attrs
        self._nl.request(
            msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create {spec.kind} {spec.name}"
        )
        # Created down; settings that need the device to exist, then up when wanted.
        self.link_set(
            spec.name,
            specs.LinkChange(
                addrgen_none=spec.addrgen_none, bridge_port=spec.bridge_port, up=spec.up or None
            ),
        )

    def link_delete(self, name: str) -> None:
        msg = self._ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        self._nl.request(msg, RTM_DELLINK, 0, f"delete link {name}")

    def veth_create(self, spec: specs.VethSpec) -> None:
        master = self._index(spec.master)
        fd = os.open(netns_path(spec.netns), os.O_RDONLY | os.O_CLOEXEC)
        try:
            # The peer cannot be brought up here (its own peer is not registered yet:
            # ENOTCONN); the pod session does that.
            peer = {
                "family": socket.AF_UNSPEC,
                "index": 0,
                "flags": 0,
                "change": 0,
                "attrs": [
                    ("IFLA_IFNAME", spec.peer_name),
                    ("IFLA_ADDRESS", spec.peer_mac),
                    ("IFLA_MTU", spec.mtu),
                    ("IFLA_NET_NS_FD", fd),
                ],
            }
            msg = self._ifinfmsg(flags=IFF_UP, change=IFF_UP)
            msg["attrs"] = [
                ("IFLA_IFNAME", spec.host_name),
                ("IFLA_ADDRESS", spec.host_mac),
                ("IFLA_MTU", spec.mtu),
                ("IFLA_MASTER", master),
                (
                    "IFLA_LINKINFO",
                    {
                        "attrs": [
                            ("IFLA_INFO_KIND", "veth"),
                            ("IFLA_INFO_DATA", {"attrs": [("VETH_INFO_PEER", peer)]}),
                        ]
                    },
                ),
            ]
            self._nl.request(
                msg, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, f"create veth {spec.host_name}"
            )
        finally:
            os.close(fd)
        # The kernel ignores IFLA_IFALIAS and IFLA_AF_SPEC on create.  The bridge port needs
        # no IPv6 link-local address; this lands before the carrier comes up (the pod end
        # is still down), so none is ever generated.
        self._newlink_set(spec.host_name, [("IFLA_IFALIAS", spec.alias), _ADDRGEN_NONE], 0, 0)

    # rules --------------------------------------------------------------------------
    def rules(self) -> tuple[specs.RuleState, ...]:
        def make() -> Any:
            msg = fibmsg()
            msg["family"] = socket.AF_INET
            return msg

        return tuple(rule_state(m) for m in self._nl.dump(make, RTM_GETRULE, fibmsg, "dump rules"))

    @staticmethod
    def _rule_msg(spec: specs.RuleSpec) -> Any:
        msg = fibmsg()
        msg["family"] = socket.AF_INET
        msg["action"] = FR_ACT_TO_TBL
        attrs: list[Any] = [("FRA_PRIORITY", spec.priority)]
        if spec.l3mdev:
            attrs.append(("FRA_L3MDEV", 1))
        else:
            msg["table"] = spec.table if spec.table < 256 else 0
            attrs.append(("FRA_TABLE", spec.table))
        if spec.dst:
            dst, dst_len = _network(spec.dst)
            msg["dst_len"] = dst_len
            attrs.append(("FRA_DST", dst))
        if spec.proto:
            attrs.append(("FRA_PROTOCOL", spec.proto))
        msg["attrs"] = attrs
        return msg

    def rule_add(self, spec: specs.RuleSpec) -> None:
        self._nl.request(
            self._rule_msg(spec),
            RTM_NEWRULE,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add rule {spec.describe()}",
        )

    def rule_delete(self, spec: specs.RuleSpec) -> None:
        # Protocol is not a selector for deletion: match on what the rule does.
        self._nl.request(
            self._rule_msg(
                specs.RuleSpec(
                    priority=spec.priority,
                    table=spec.table,
                    dst=spec.dst,
                    l3mdev=spec.l3mdev,
                    proto=0,
                )
            ),
            RTM_DELRULE,
            0,
            f"delete rule {spec.describe()}",
        )

    # sysctls ------------------------------------------------------------------------
    @staticmethod
    def _sysctl_path(key: str) -> str:
        if ".." in key.split("/"):
            raise ValueError(f"bad sysctl key {key!r}")
        return os.path.join("/proc/sys", key)

    def _in_ns(self, fn: Callable[[], T]) -> T:
        return self._worker.run(self._netns, fn) if self._netns else fn()

    def sysctl_get(self, key: str) -> str | None:
        path = self._sysctl_path(key)

        def read() -> str | None:
            try:
                with open(path) as f:
                    return f.read().strip()
            except FileNotFoundError:
                return None

        return self._in_ns(read)

    def sysctl_set(self, key: str, value: str) -> None:
        path = self._sysctl_path(key)

        def write() -> None:
            with open(path, "w") as f:
                f.write(value)

        self._in_ns(write)

    # pods -----------------------------------------------------------------------------
    def open_netns(self, path: str) -> NetnsSession:
        return _Session(self._worker.run(netns_path(path), netlink_socket), cache_index=True)
