"""Kernel access for the NetlinkActor: the :class:`NetlinkBackend` protocol and pyroute2.

With evpn_kernel, the only module that imports pyroute2 (.importlinter holds it).  It uses
pyroute2's message classes to encode and decode rtnetlink messages and talks over plain
netlink sockets it owns, one request at a time (no event loop, no helper process):

- The node's namespace: one socket, opened when the backend is made (in the actor's
  thread, which is the only thread using it).
- A pod's namespace: a dedicated worker thread (:class:`NetnsWorker`) enters the pod netns
  (``setns``), opens a netlink socket there and goes back.  The socket stays bound to the
  pod's namespace and is used from the caller's thread.  No thread that runs other code
  ever calls ``setns``.  This costs about 0.2 ms on the host, where ``IPRoute(netns=...)``
  costs 20 ms (it forks a helper), 300 ms in UML.
- The pod's gratuitous ARP is the kernel's: ``arp_notify`` is set on the pod end before it
  comes up.  (A packet socket would do too, but closing one waits for an RCU grace period:
  12 ms per pod on the host.)
- Decoding is pyroute2's and costs most of a millisecond per link: dumps ask the kernel to
  filter by kind, so a node's hundreds of pod veths are only read when pods are wanted.

Errors are ``OSError`` with the kernel's errno (EEXIST, ENODEV, ESRCH, ENOENT,
EADDRNOTAVAIL, ENETUNREACH...), and the kernel's extended ack message when it sent one.
Callers turn the errno that means "already so" into success; nothing else is swallowed.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import itertools
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyroute2_cni.netlink.model import (
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

T = TypeVar("T")

# -- the protocol -----------------------------------------------------------------


class NetnsSession(Protocol):
    """Operations inside one network namespace."""

    def link_get(self, name: str | int) -> LinkState | None:
        """The link with this name (or ifindex); None when there is none."""

    def links(self, kind: str = "") -> tuple[LinkState, ...]:
        """Every link, or only those of `kind` ("veth", "bridge", "vrf", "vxlan")."""

    def link_set(self, name: str, change: LinkChange) -> None:
        """ENODEV when `name` (or the new master) does not exist."""

    def addresses(self, index: int = 0) -> tuple[AddrState, ...]:
        """IPv4 addresses (of link `index` only when given)."""

    def addr_add(self, spec: AddrSpec) -> None:
        """EEXIST when present; ENODEV when the link is missing."""

    def addr_delete(self, spec: AddrSpec) -> None:
        """EADDRNOTAVAIL when absent."""

    def routes(self, table: int) -> tuple[RouteState, ...]:
        """IPv4 routes of `table`."""

    def route_add(self, spec: RouteSpec) -> None:
        """EEXIST when a route with the same table, prefix and metric exists; ENETUNREACH
        for a gateway outside every connected subnet (a link that is down has none)."""

    def route_replace(self, spec: RouteSpec) -> None: ...

    def route_delete(self, spec: RouteSpec) -> None:
        """ESRCH when absent."""

    def close(self) -> None: ...


class NetlinkBackend(NetnsSession, Protocol):
    """The node's namespace, plus what only it can do."""

    def link_create(self, spec: LinkSpec) -> None:
        """Create a fabric device: EEXIST when the name is taken; ENODEV for a missing master.

        Applies everything in `spec` (addrgenmode and bridge port settings before up)."""

    def link_delete(self, name: str) -> None:
        """ENODEV when absent.  Deleting one end of a veth pair deletes the other."""

    def veth_create(self, spec: VethSpec) -> None:
        """Create a pod's veth pair: host side up in the master bridge (addrgenmode none,
        alias), peer down in the pod netns (the kernel cannot bring it up in the same
        request).  ENOENT when the netns path does not exist; EEXIST when either name is
        taken."""

    def rules(self) -> tuple[RuleState, ...]:
        """IPv4 policy routing rules."""

    def rule_add(self, spec: RuleSpec) -> None:
        """EEXIST when an identical rule exists."""

    def rule_delete(self, spec: RuleSpec) -> None:
        """ENOENT when absent."""

    def sysctl_get(self, key: str) -> str | None:
        """Value of /proc/sys/`key` (slash separated), None when the key does not exist."""

    def sysctl_set(self, key: str, value: str) -> None:
        """ENOENT when the key does not exist."""

    def open_netns(self, path: str) -> NetnsSession:
        """A session in the pod namespace at `path`; ENOENT when it is gone."""


# -- constants --------------------------------------------------------------------

NETLINK_ROUTE = 0
SOL_NETLINK = 270
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_DUMP_INTR = 0x10
NLM_F_ACK_TLVS = 0x200
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK = 16, 17, 18
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWRULE, RTM_DELRULE, RTM_GETRULE = 32, 33, 34

IFF_UP = 0x1
IFA_F_SECONDARY = 0x01
RTEXT_FILTER_SKIP_STATS = 1 << 3
FR_ACT_TO_TBL = 1
RT_SCOPE_UNIVERSE = 0
IN6_ADDR_GEN_MODE_NONE = 1
CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"

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

_HDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
IFLA_IFNAME = 3
IFLA_AF_SPEC = 26
IFLA_INET_CONF = 1
IPV4_DEVCONF_ARP_NOTIFY = 22


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


NLA_F_NESTED = 0x8000


def _nest(kind: int, payload: bytes) -> bytes:
    # Newer kernels (seen on 7.2) reject IFLA_INET_CONF & co without the nested flag.
    return _attr(kind | NLA_F_NESTED, payload)


_ADDRGEN_NONE = (
    "IFLA_AF_SPEC",
    {"attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]},
)
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name_or_path: str) -> str:
    """A named namespace (`ip netns add NAME`) or an absolute path."""
    if name_or_path.startswith("/"):
        return name_or_path
    return os.path.join(NETNS_RUN_DIR, name_or_path)


class _Job:
    def __init__(self, path: str, fn: Callable[[], Any]) -> None:
        self.path = path
        self.fn = fn
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()

    def execute(self, home: int) -> bool:
        """Run in the worker; False when the worker could not return home (it must end)."""
        at_home = True
        try:
            target = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            self.error = exc
            self.done.set()
            return True
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                self.error = OSError(code, f"setns({self.path}): {os.strerror(code)}")
                return True
            try:
                self.result = self.fn()
            except BaseException as exc:  # handed to the caller, which re-raises it
                self.error = exc
            if _libc.setns(home, CLONE_NEWNET) != 0:
                at_home = False
        finally:
            os.close(target)
            self.done.set()
        return at_home


class NetnsWorker:
    """A dedicated thread that enters a network namespace for each request and goes back
    to its own right after.

    It runs nothing but these requests (socket creation, sysctl file access), so no thread
    that runs other code ever changes namespace.  If it cannot go back, it ends at once and
    the next request starts a new thread.  Cheaper than a thread per request: under User-Mode
    Linux a thread start costs about 4.5 ms.
    """

    def __init__(self, name: str = "netns-worker") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, path: str, fn: Callable[[], T]) -> T:
        """`fn()` with the worker inside the namespace at `path`; its exception re-raised."""
        job = _Job(path, fn)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._loop, args=(self._queue,), name=self._name, daemon=True
                )
                self._thread.start()
            self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        result: T = job.result
        return result

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[_Job | None]) -> None:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            while True:
                job = jobs.get()
                if job is None or not job.execute(home):
                    return
        finally:
            os.close(home)

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)


def _netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind((0, 0))
        for option in (NETLINK_CAP_ACK, NETLINK_EXT_ACK, NETLINK_GET_STRICT_CHK):
            try:
                sock.setsockopt(SOL_NETLINK, option, 1)
            except OSError as exc:
                if exc.errno != errno.ENOPROTOOPT:
                    raise
    except BaseException:
        sock.close()
        raise
    return sock


# -- one netlink channel ----------------------------------------------------------


def split_messages(data: bytes) -> Iterable[tuple[int, int, int, bytes]]:
    """(type, flags, sequence, bytes) of each netlink message in one datagram."""
    offset = 0
    while offset + _HDR.size <= len(data):
        length, mtype, flags, seq, _pid = _HDR.unpack_from(data, offset)
        if length < _HDR.size:
            return
        yield mtype, flags, seq, data[offset : offset + length]
        offset += (length + 3) & ~3


class _Rtnl:
    """Synchronous request/ack and dumps over one netlink socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._seq = itertools.count(1)

    def close(self) -> None:
        self.sock.close()

    def _send(self, msg: Any, mtype: int, flags: int) -> int:
        seq = next(self._seq)
        msg["header"]["type"] = mtype
        msg["header"]["flags"] = flags
        msg["header"]["sequence_number"] = seq
        msg["header"]["pid"] = 0
        msg.encode()
        self.sock.send(bytes(msg.data))
        return seq

    def _messages(self, seq: int) -> Iterable[tuple[int, int, bytes]]:
        """Yield (type, flags, bytes) of every message answering `seq`."""
        while True:
            for mtype, flags, mseq, chunk in split_messages(self.sock.recv(1 << 18)):
                if mseq != seq:
                    continue  # a stale answer to an earlier, abandoned request
                yield mtype, flags, chunk

    @staticmethod
    def _error(chunk: bytes, flags: int, what: str) -> OSError | None:
        (code,) = struct.unpack_from("=i", chunk, _HDR.size)
        if code == 0:
            return None
        code = -code
        detail = ""
        if flags & NLM_F_ACK_TLVS:
            # With NETLINK_CAP_ACK the echoed request is only its header.
            offset = _HDR.size + 4 + _HDR.size
            while offset + 4 <= len(chunk):
                alen, atype = struct.unpack_from("=HH", chunk, offset)
                if alen < 4:
                    break
                if atype & 0x3FFF == NLMSGERR_ATTR_MSG:
                    detail = (
                        chunk[offset + 4 : offset + alen].split(b"\0")[0].decode("utf-8", "replace")
                    )
                offset += (alen + 3) & ~3
        text = os.strerror(code) + (f": {detail}" if detail else "")
        return OSError(code, f"{what}: {text}")

    def request(self, msg: Any, mtype: int, flags: int, what: str) -> None:
        self._ack(self._send(msg, mtype, flags | NLM_F_REQUEST | NLM_F_ACK), what)

    def request_raw(self, body: bytes, mtype: int, flags: int, what: str) -> None:
        """A request encoded by the caller (everything after the netlink header)."""
        seq = next(self._seq)
        header = _HDR.pack(_HDR.size + len(body), mtype, flags | NLM_F_REQUEST | NLM_F_ACK, seq, 0)
        self.sock.send(header + body)
        self._ack(seq, what)

    def _ack(self, seq: int, what: str) -> None:
        for rtype, rflags, chunk in self._messages(seq):
            if rtype == NLMSG_ERROR:
                err = self._error(chunk, rflags, what)
                if err is not None:
                    raise err
                return

    def get(self, msg: Any, mtype: int, cls: Any, what: str) -> Any:
        seq = self._send(msg, mtype, NLM_F_REQUEST)
        for rtype, rflags, chunk in self._messages(seq):
            if rtype == NLMSG_ERROR:
                err = self._error(chunk, rflags, what)
                if err is not None:
                    raise err
                continue
            reply = cls(chunk)
            reply.decode()
            return reply
        raise AssertionError("unreachable")

    def dump(self, make: Callable[[], Any], mtype: int, cls: Any, what: str) -> list[Any]:
        for _attempt in range(10):
            seq = self._send(make(), mtype, NLM_F_REQUEST | NLM_F_DUMP)
            replies: list[Any] = []
            interrupted = False
            for rtype, rflags, chunk in self._messages(seq):
                if rflags & NLM_F_DUMP_INTR:
                    interrupted = True
                if rtype == NLMSG_DONE:
                    if len(chunk) >= _HDR.size + 4:
                        (code,) = struct.unpack_from("=i", chunk, _HDR.size)
                        if code < 0:
                            raise OSError(-code, f"{what}: {os.strerror(-code)}")
                    break
                if rtype == NLMSG_ERROR:
                    err = self._error(chunk, rflags, what)
                    if err is not None:
                        raise err
                    break
                reply = cls(chunk)
                reply.decode()
                replies.append(reply)
            if not interrupted:
                return replies
        raise OSError(errno.EINTR, f"{what}: dump kept being interrupted")


# -- decoding ---------------------------------------------------------------------


def _nested(msg: Any, *names: str) -> Any:
    node = msg
    for name in names:
        if node is None:
            return None
        node = node.get_attr(name)
    return node


def _link_state(msg: Any) -> LinkState:
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


def _addr_state(msg: Any) -> AddrState:
    flags = msg.get_attr("IFA_FLAGS")
    if flags is None:
        flags = msg["flags"]
    return AddrState(
        index=int(msg["index"]),
        address=msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS") or "",
        prefixlen=int(msg["prefixlen"]),
        secondary=bool(flags & IFA_F_SECONDARY),
    )


def _route_state(msg: Any) -> RouteState:
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


def _rule_state(msg: Any) -> RuleState:
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


def _network(cidr: str) -> tuple[str, int]:
    net = ipaddress.IPv4Network(cidr, strict=False)
    return str(net.network_address), net.prefixlen


# -- sessions ---------------------------------------------------------------------


class _Session:
    """rtnetlink operations over one socket (node or pod namespace)."""

    def __init__(self, sock: socket.socket, cache_index: bool = False) -> None:
        self._nl = _Rtnl(sock)
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

    def link_get(self, name: str | int) -> LinkState | None:
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
        state = _link_state(reply)
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

    def links(self, kind: str = "") -> tuple[LinkState, ...]:
        # Decoding costs most of a millisecond per link (pyroute2): with a kind, the kernel
        # filters (when it knows the kind; otherwise it sends all and we filter here).
        def make() -> Any:
            msg = self._ifinfmsg()
            msg["attrs"] = [("IFLA_EXT_MASK", RTEXT_FILTER_SKIP_STATS)]
            if kind:
                msg["attrs"].append(("IFLA_LINKINFO", {"attrs": [("IFLA_INFO_KIND", kind)]}))
            return msg

        found = self._nl.dump(make, RTM_GETLINK, ifinfmsg, f"dump links {kind}".strip())
        return tuple(state for state in map(_link_state, found) if not kind or state.kind == kind)

    def link_set(self, name: str, change: LinkChange) -> None:
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
        conf = _attr(IPV4_DEVCONF_ARP_NOTIFY, struct.pack("=I", 1))
        body = (
            _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
            + _attr(IFLA_IFNAME, name.encode() + b"\0")
            + _nest(IFLA_AF_SPEC, _nest(socket.AF_INET, _nest(IFLA_INET_CONF, conf)))
        )
        self._nl.request_raw(body, RTM_NEWLINK, 0, f"set arp_notify on {name}")

    def _newlink_set(self, name: str, attrs: list[Any], flags: int, change: int) -> None:
        msg = self._ifinfmsg(flags=flags, change=change)
        msg["attrs"] = [("IFLA_IFNAME", name), *attrs]
        self._nl.request(msg, RTM_NEWLINK, 0, f"set link {name}")

    # addresses ------------------------------------------------------------------
    def addresses(self, index: int = 0) -> tuple[AddrState, ...]:
        def make() -> Any:
            msg = ifaddrmsg()
            msg["family"] = socket.AF_INET
            msg["index"] = index
            return msg

        found = (
            _addr_state(m) for m in self._nl.dump(make, RTM_GETADDR, ifaddrmsg, "dump addresses")
        )
        return tuple(a for a in found if not index or a.index == index)

    def _addr_msg(self, spec: AddrSpec) -> Any:
        msg = ifaddrmsg()
        msg["family"] = socket.AF_INET
        msg["prefixlen"] = spec.prefixlen
        msg["index"] = self._index(spec.ifname)
        msg["attrs"] = [("IFA_LOCAL", spec.address), ("IFA_ADDRESS", spec.address)]
        return msg

    def addr_add(self, spec: AddrSpec) -> None:
        self._nl.request(
            self._addr_msg(spec),
            RTM_NEWADDR,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add address {spec.describe()}",
        )

    def addr_delete(self, spec: AddrSpec) -> None:
        self._nl.request(self._addr_msg(spec), RTM_DELADDR, 0, f"delete address {spec.describe()}")

    # routes ---------------------------------------------------------------------
    def routes(self, table: int) -> tuple[RouteState, ...]:
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
        return tuple(r for r in (_route_state(m) for m in found) if r.table == table)

    def _route_msg(self, spec: RouteSpec, deleting: bool) -> Any:
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

    def route_add(self, spec: RouteSpec) -> None:
        self._nl.request(
            self._route_msg(spec, False),
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add route {spec.describe()}",
        )

    def route_replace(self, spec: RouteSpec) -> None:
        self._nl.request(
            self._route_msg(spec, False),
            RTM_NEWROUTE,
            NLM_F_CREATE | NLM_F_REPLACE,
            f"replace route {spec.describe()}",
        )

    def route_delete(self, spec: RouteSpec) -> None:
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
                self._worker.run(self._netns, _netlink_socket) if self._netns else _netlink_socket()
            )
        except BaseException:
            self._worker.close()
            raise
        super().__init__(sock)

    def close(self) -> None:
        super().close()
        self._worker.close()

    # links ------------------------------------------------------------------------
    def link_create(self, spec: LinkSpec) -> None:
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
            LinkChange(
                addrgen_none=spec.addrgen_none, bridge_port=spec.bridge_port, up=spec.up or None
            ),
        )

    def link_delete(self, name: str) -> None:
        msg = self._ifinfmsg()
        msg["attrs"] = [("IFLA_IFNAME", name)]
        self._nl.request(msg, RTM_DELLINK, 0, f"delete link {name}")

    def veth_create(self, spec: VethSpec) -> None:
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
    def rules(self) -> tuple[RuleState, ...]:
        def make() -> Any:
            msg = fibmsg()
            msg["family"] = socket.AF_INET
            return msg

        return tuple(_rule_state(m) for m in self._nl.dump(make, RTM_GETRULE, fibmsg, "dump rules"))

    @staticmethod
    def _rule_msg(spec: RuleSpec) -> Any:
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

    def rule_add(self, spec: RuleSpec) -> None:
        self._nl.request(
            self._rule_msg(spec),
            RTM_NEWRULE,
            NLM_F_CREATE | NLM_F_EXCL,
            f"add rule {spec.describe()}",
        )

    def rule_delete(self, spec: RuleSpec) -> None:
        # Protocol is not a selector for deletion: match on what the rule does.
        self._nl.request(
            self._rule_msg(
                RuleSpec(
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
        return _Session(self._worker.run(netns_path(path), _netlink_socket), cache_index=True)
