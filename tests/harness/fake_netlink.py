"""FakeNetlink: an in-memory kernel behind the :class:`NetlinkBackend` protocol.

It models what the NetlinkActor relies on — links (vrf, bridge, vxlan, veth) with masters
and bridge port settings, IPv4 addresses, routes per table, rules, sysctls and network
namespaces — and answers with the kernel's errors (EEXIST, ENODEV, ESRCH, ENOENT,
EADDRNOTAVAIL, ENETUNREACH).  The shared behaviour suite
(tests/harness/netlink_behaviour.py) runs against this fake and against the real kernel, so
the two stay alike.

A :class:`FakeKernel` is the machine; each :class:`FakeNetlink` is one handle on it (a
restarted actor gets a new handle on the same kernel).  Tests use the kernel's helpers to
create and destroy pod namespaces, to drift things by hand and to count writes.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import dataclass, field, replace

from pyroute2_cni.netlink.backend import NetnsSession
from pyroute2_cni.netlink.netns import netns_path
from pyroute2_cni.netlink.specs import (
    ADDRGEN_NONE,
    PREF_L3MDEV,
    RTPROT_KERNEL,
    TABLE_LOCAL,
    TABLE_MAIN,
    AddrSpec,
    AddrState,
    LinkChange,
    LinkSpec,
    LinkState,
    RouteSpec,
    RouteState,
    RuleSpec,
    RuleState,
    VethSpec,
)

ROOT = "<root>"
TABLE_DEFAULT = 253


def _err(code: int, what: str) -> OSError:
    import os

    return OSError(code, f"{what}: {os.strerror(code)}")


@dataclass
class _Link:
    index: int
    name: str
    kind: str
    mac: str
    mtu: int
    master: int = 0
    up: bool = False
    alias: str = ""
    table: int = 0
    vni: int = 0
    local: str = ""
    port: int = 0
    learning: bool | None = None
    addrgen_mode: int = 0
    port_neigh_suppress: bool = False
    port_learning: bool = True
    peer: tuple[str, int] | None = None  # (namespace, index) of a veth peer
    arp_notify: bool = False

    def state(self, ns: str) -> LinkState:
        port = self.master != 0
        return LinkState(
            index=self.index,
            name=self.name,
            kind=self.kind,
            mac=self.mac,
            mtu=self.mtu,
            master=self.master,
            up=self.up,
            alias=self.alias,
            table=self.table,
            vni=self.vni,
            local=self.local,
            port=self.port,
            learning=self.learning,
            addrgen_mode=self.addrgen_mode,
            port_neigh_suppress=self.port_neigh_suppress if port else None,
            port_learning=self.port_learning if port else None,
            peer_in_other_netns=self.peer is not None and self.peer[0] != ns,
            arp_notify=self.arp_notify,
        )


@dataclass
class _Namespace:
    name: str
    links: dict[int, _Link] = field(default_factory=dict)
    addresses: list[tuple[int, str, int]] = field(default_factory=list)
    routes: list[RouteState] = field(default_factory=list)
    rules: list[RuleState] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    # Gratuitous ARPs sent (ifname, address, mac), as arp_notify makes the kernel send them.
    announcements: list[tuple[str, str, str]] = field(default_factory=list)
    next_index: int = 2

    def by_name(self, name: str) -> _Link | None:
        for link in self.links.values():
            if link.name == name:
                return link
        return None


class FakeKernel:
    """The machine: namespaces and everything in them."""

    def __init__(self) -> None:
        self.namespaces: dict[str, _Namespace] = {}
        self.writes: list[str] = []
        self.add_namespace(ROOT)

    # -- namespaces ---------------------------------------------------------------------
    def add_namespace(self, name: str) -> str:
        key = name if name == ROOT else netns_path(name)
        ns = _Namespace(name=key)
        ns.links[1] = _Link(index=1, name="lo", kind="", mac="00:00:00:00:00:00", mtu=65536)
        ns.rules = [
            RuleState(priority=0, table=TABLE_LOCAL, proto=RTPROT_KERNEL),
            RuleState(priority=32766, table=TABLE_MAIN, proto=RTPROT_KERNEL),
            RuleState(priority=32767, table=TABLE_DEFAULT, proto=RTPROT_KERNEL),
        ]
        ns.sysctls = {
            "net/ipv4/ip_forward": "0",
            "net/ipv4/conf/all/rp_filter": "0",
            "net/ipv4/conf/default/rp_filter": "1",
            "net/ipv4/tcp_l3mdev_accept": "0",
            "net/ipv4/udp_l3mdev_accept": "0",
            "net/ipv4/raw_l3mdev_accept": "1",
            "net/ipv4/conf/lo/rp_filter": "0",
            "net/ipv4/conf/all/send_redirects": "1",
            "net/ipv4/conf/default/send_redirects": "1",
            "net/ipv4/conf/lo/send_redirects": "1",
        }
        self.namespaces[key] = ns
        return key

    def remove_namespace(self, name: str) -> None:
        """Like the last reference to a netns going away: its veths take their peers."""
        ns = self.namespaces.pop(netns_path(name))
        for link in list(ns.links.values()):
            if link.peer is not None and link.peer[0] in self.namespaces:
                other = self.namespaces[link.peer[0]]
                self._drop_link(other, link.peer[1])

    def ns(self, name: str | None = None) -> _Namespace:
        if name is None or name == ROOT:
            return self.namespaces[ROOT]
        key = netns_path(name)
        if key not in self.namespaces:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", key)
        return self.namespaces[key]

    # -- internals shared by sessions ---------------------------------------------------
    def _new_link(self, ns: _Namespace, link: _Link) -> _Link:
        link.index = ns.next_index
        ns.next_index += 1
        ns.links[link.index] = link
        for knob in ("rp_filter", "send_redirects"):
            ns.sysctls[f"net/ipv4/conf/{link.name}/{knob}"] = ns.sysctls[
                f"net/ipv4/conf/default/{knob}"
            ]
        return link

    def _drop_link(self, ns: _Namespace, index: int) -> None:
        link = ns.links.pop(index, None)
        if link is None:
            return
        for knob in ("rp_filter", "send_redirects"):
            ns.sysctls.pop(f"net/ipv4/conf/{link.name}/{knob}", None)
        for other in ns.links.values():
            if other.master == index:
                other.master = 0
        ns.addresses = [a for a in ns.addresses if a[0] != index]
        ns.routes = [r for r in ns.routes if r.oif != index]
        if link.peer is not None:
            peer_ns = self.namespaces.get(link.peer[0])
            if peer_ns is not None:
                peer = peer_ns.links.get(link.peer[1])
                if peer is not None:
                    peer.peer = None
                    self._drop_link(peer_ns, peer.index)

    def add_uplink(
        self, name: str, address: str, prefixlen: int, gateway: str, mtu: int = 1500
    ) -> None:
        """A physical-like interface with an address and the default route (the VTEP)."""
        ns = self.ns()
        link = self._new_link(
            ns, _Link(index=0, name=name, kind="", mac="02:ff:00:00:00:01", mtu=mtu, up=True)
        )
        ns.addresses.append((link.index, address, prefixlen))
        ns.routes.append(
            RouteState(
                table=TABLE_MAIN,
                dst="0.0.0.0/0",
                type="unicast",
                metric=0,
                proto=3,
                gateway=gateway,
                oif=link.index,
            )
        )

    def drift_link(self, name: str, **changes: object) -> None:
        """Change a link behind the actor's back (as an operator with `ip` would)."""
        ns = self.ns()
        link = ns.by_name(name)
        if link is None:
            raise KeyError(name)
        for key, value in changes.items():
            setattr(link, key, value)

    def delete_link(self, name: str, namespace: str | None = None) -> None:
        ns = self.ns(namespace)
        link = ns.by_name(name)
        if link is None:
            raise KeyError(name)
        self._drop_link(ns, link.index)


class FakeSession:
    """One namespace of a FakeKernel, behind the NetnsSession protocol."""

    def __init__(self, kernel: FakeKernel, namespace: str) -> None:
        self.kernel = kernel
        self.namespace = namespace
        self.closed = False

    @property
    def _ns(self) -> _Namespace:
        ns = self.kernel.namespaces.get(self.namespace)
        if ns is None:
            raise _err(errno.ENOENT, f"namespace {self.namespace} is gone")
        return ns

    def _write(self, what: str) -> None:
        self.kernel.writes.append(f"{self.namespace}: {what}")

    def _link(self, name: str) -> _Link:
        link = self._ns.by_name(name)
        if link is None:
            raise _err(errno.ENODEV, f"link {name}")
        return link

    def close(self) -> None:
        self.closed = True

    # links ----------------------------------------------------------------------------
    def link_get(self, name: str | int) -> LinkState | None:
        link = self._ns.links.get(name) if isinstance(name, int) else self._ns.by_name(name)
        return link.state(self.namespace) if link else None

    def links(self, kind: str = "") -> tuple[LinkState, ...]:
        return tuple(
            link.state(self.namespace)
            for _, link in sorted(self._ns.links.items())
            if not kind or link.kind == kind
        )

    def link_set(self, name: str, change: LinkChange) -> None:
        if change.empty():
            return
        link = self._link(name)
        master = None
        if change.master is not None:
            master = self._link(change.master).index if change.master else 0
        if change.bridge_port is not None:
            effective = link.master if master is None else master
            if not effective or self._ns.links[effective].kind != "bridge":
                raise _err(errno.EOPNOTSUPP, f"bridge port settings on {name}")
        self._write(f"set {name} {change.describe()}")
        if master is not None:
            link.master = master
            if master:
                link.port_neigh_suppress, link.port_learning = False, True
        if change.mtu is not None:
            link.mtu = change.mtu
        if change.mac is not None:
            link.mac = change.mac.lower()
        if change.alias is not None:
            link.alias = change.alias
        if change.addrgen_none:
            link.addrgen_mode = ADDRGEN_NONE
        if change.bridge_port is not None:
            link.port_neigh_suppress = change.bridge_port.neigh_suppress
            link.port_learning = change.bridge_port.learning
        if change.arp_notify:
            link.arp_notify = True
        if change.up is not None:
            if change.up and link.kind == "veth" and link.peer is None:
                raise _err(errno.ENOTCONN, f"up {name}")
            if change.up and not link.up and link.arp_notify:
                # The kernel's gratuitous ARP for every address, on NETDEV_UP.
                self._ns.announcements.extend(
                    (name, address, link.mac)
                    for idx, address, _ in self._ns.addresses
                    if idx == link.index
                )
            link.up = change.up

    # addresses ------------------------------------------------------------------------
    def addresses(self, index: int = 0) -> tuple[AddrState, ...]:
        result: list[AddrState] = []
        seen_subnets: set[tuple[int, str]] = set()
        for idx, address, prefixlen in self._ns.addresses:
            if index and idx != index:
                continue
            net = str(ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False))
            secondary = (idx, net) in seen_subnets
            seen_subnets.add((idx, net))
            result.append(
                AddrState(index=idx, address=address, prefixlen=prefixlen, secondary=secondary)
            )
        return tuple(result)

    def addr_add(self, spec: AddrSpec) -> None:
        link = self._link(spec.ifname)
        entry = (link.index, spec.address, spec.prefixlen)
        if entry in self._ns.addresses:
            raise _err(errno.EEXIST, f"add address {spec.describe()}")
        self._write(f"add address {spec.describe()}")
        self._ns.addresses.append(entry)

    def addr_delete(self, spec: AddrSpec) -> None:
        link = self._link(spec.ifname)
        entry = (link.index, spec.address, spec.prefixlen)
        if entry not in self._ns.addresses:
            raise _err(errno.EADDRNOTAVAIL, f"delete address {spec.describe()}")
        self._write(f"delete address {spec.describe()}")
        self._ns.addresses.remove(entry)

    # routes ---------------------------------------------------------------------------
    def routes(self, table: int) -> tuple[RouteState, ...]:
        return tuple(r for r in self._ns.routes if r.table == table)

    def _route_state(self, spec: RouteSpec) -> RouteState:
        dst = str(ipaddress.IPv4Network(spec.dst, strict=False))
        oif = 0
        if spec.oif:
            oif = self._link(spec.oif).index
        if spec.gateway:
            gw = ipaddress.IPv4Address(spec.gateway)
            candidates = [oif] if oif else list(self._ns.links)
            # The kernel adds a connected route only while the link is up.
            reachable = [
                idx
                for idx, address, prefixlen in self._ns.addresses
                if idx in candidates
                and self._ns.links[idx].up
                and gw in ipaddress.IPv4Network(f"{address}/{prefixlen}", strict=False)
            ]
            if not reachable:
                raise _err(errno.ENETUNREACH, f"route via {spec.gateway}")
            oif = oif or reachable[0]
        return RouteState(
            table=spec.table,
            dst=dst,
            type=spec.type,
            metric=spec.metric,
            proto=spec.proto,
            gateway=spec.gateway,
            oif=oif,
        )

    @staticmethod
    def _same_slot(a: RouteState, b: RouteState) -> bool:
        # The kernel's EXCL check: same table, prefix and metric (tos 0).
        return (a.table, a.dst, a.metric) == (b.table, b.dst, b.metric)

    def route_add(self, spec: RouteSpec) -> None:
        route = self._route_state(spec)
        if any(self._same_slot(r, route) for r in self._ns.routes):
            raise _err(errno.EEXIST, f"add route {spec.describe()}")
        self._write(f"add route {spec.describe()}")
        self._ns.routes.append(route)

    def route_replace(self, spec: RouteSpec) -> None:
        route = self._route_state(spec)
        self._write(f"replace route {spec.describe()}")
        self._ns.routes = [r for r in self._ns.routes if not self._same_slot(r, route)]
        self._ns.routes.append(route)

    def route_delete(self, spec: RouteSpec) -> None:
        dst = str(ipaddress.IPv4Network(spec.dst, strict=False))
        for route in self._ns.routes:
            if (
                (route.table, route.dst, route.metric) == (spec.table, dst, spec.metric)
                and route.type == spec.type
                and (not spec.gateway or route.gateway == spec.gateway)
            ):
                self._write(f"delete route {spec.describe()}")
                self._ns.routes.remove(route)
                return
        raise _err(errno.ESRCH, f"delete route {spec.describe()}")


class FakeNetlink(FakeSession):
    """The node's namespace (the kernel's root namespace, or `netns` of it)."""

    def __init__(self, kernel: FakeKernel | None = None, netns: str | None = None) -> None:
        kernel = kernel if kernel is not None else FakeKernel()
        namespace = ROOT if netns is None else netns_path(netns)
        kernel.ns(None if netns is None else netns)  # ENOENT for a missing namespace
        super().__init__(kernel, namespace)

    # links ----------------------------------------------------------------------------
    def link_create(self, spec: LinkSpec) -> None:
        ns = self._ns
        if ns.by_name(spec.name) is not None:
            raise _err(errno.EEXIST, f"create {spec.kind} {spec.name}")
        master = self._link(spec.master).index if spec.master else 0
        self._write(f"create {spec.kind} {spec.name}")
        link = self.kernel._new_link(
            ns,
            _Link(
                index=0,
                name=spec.name,
                kind=spec.kind,
                mac=spec.mac.lower(),
                mtu=spec.mtu if spec.mtu is not None else (65575 if spec.kind == "vrf" else 1500),
                master=master,
                table=spec.table,
                vni=spec.vni,
                local=spec.local,
                port=spec.port,
                learning=False if spec.kind == "vxlan" else None,
            ),
        )
        if spec.kind == "vrf":
            # The VRF driver adds the l3mdev rule with the first VRF, and the module's
            # strict_mode sysctl appears.
            ns.sysctls.setdefault("net/vrf/strict_mode", "0")
            if not any(r.l3mdev for r in ns.rules):
                ns.rules.append(
                    RuleState(priority=PREF_L3MDEV, table=0, l3mdev=True, proto=RTPROT_KERNEL)
                )
                ns.rules.sort(key=lambda r: r.priority)
        self.link_set(
            link.name,
            LinkChange(
                addrgen_none=spec.addrgen_none, bridge_port=spec.bridge_port, up=spec.up or None
            ),
        )

    def link_delete(self, name: str) -> None:
        link = self._link(name)
        self._write(f"delete link {name}")
        self.kernel._drop_link(self._ns, link.index)

    def veth_create(self, spec: VethSpec) -> None:
        peer_ns = self.kernel.ns(spec.netns)
        ns = self._ns
        master = self._link(spec.master).index
        if ns.by_name(spec.host_name) is not None or peer_ns.by_name(spec.peer_name) is not None:
            raise _err(errno.EEXIST, f"create veth {spec.host_name}")
        self._write(f"create veth {spec.host_name}")
        host = self.kernel._new_link(
            ns,
            _Link(index=0, name=spec.host_name, kind="veth", mac=spec.host_mac, mtu=spec.mtu),
        )
        peer = self.kernel._new_link(
            peer_ns,
            _Link(index=0, name=spec.peer_name, kind="veth", mac=spec.peer_mac, mtu=spec.mtu),
        )
        host.peer = (peer_ns.name, peer.index)
        peer.peer = (ns.name, host.index)
        host.master = master
        host.up = True
        host.alias = spec.alias
        host.addrgen_mode = ADDRGEN_NONE

    # rules ----------------------------------------------------------------------------
    def rules(self) -> tuple[RuleState, ...]:
        return tuple(sorted(self._ns.rules, key=lambda r: r.priority))

    def rule_add(self, spec: RuleSpec) -> None:
        rule = RuleState(
            priority=spec.priority,
            table=0 if spec.l3mdev else spec.table,
            dst=str(ipaddress.IPv4Network(spec.dst, strict=False)) if spec.dst else "",
            l3mdev=spec.l3mdev,
            proto=spec.proto,
        )
        if any(r.key() == rule.key() and r.plain() for r in self._ns.rules):
            raise _err(errno.EEXIST, f"add rule {spec.describe()}")
        self._write(f"add rule {spec.describe()}")
        self._ns.rules.append(rule)
        self._ns.rules.sort(key=lambda r: r.priority)

    def rule_delete(self, spec: RuleSpec) -> None:
        dst = str(ipaddress.IPv4Network(spec.dst, strict=False)) if spec.dst else ""
        key = (spec.priority, 0 if spec.l3mdev else spec.table, dst, spec.l3mdev)
        for rule in self._ns.rules:
            if rule.key() == key and rule.plain():
                self._write(f"delete rule {spec.describe()}")
                self._ns.rules.remove(rule)
                return
        raise _err(errno.ENOENT, f"delete rule {spec.describe()}")

    # sysctls --------------------------------------------------------------------------
    def sysctl_get(self, key: str) -> str | None:
        return self._ns.sysctls.get(key)

    def sysctl_set(self, key: str, value: str) -> None:
        if key not in self._ns.sysctls:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", f"/proc/sys/{key}")
        self._write(f"sysctl {key}={value}")
        self._ns.sysctls[key] = value

    # pods -----------------------------------------------------------------------------
    def open_netns(self, path: str) -> NetnsSession:
        ns = self.kernel.ns(path)
        return FakeSession(self.kernel, ns.name)


def fake_route(spec: RouteSpec, oif: int = 0) -> RouteState:
    """A RouteState as the fake stores it (for tests that plant foreign routes)."""
    return replace(
        RouteState(
            table=spec.table,
            dst=str(ipaddress.IPv4Network(spec.dst, strict=False)),
            type=spec.type,
            metric=spec.metric,
            proto=spec.proto,
            gateway=spec.gateway,
        ),
        oif=oif,
    )
