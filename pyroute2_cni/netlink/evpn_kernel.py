"""The kernel side of :mod:`pyroute2_cni.values.evpn_hold`: zebra's EVPN entries as events,
and the copies put back while a peer's FRR restarts.

Entries followed (IPv4 underlay, the node's own network namespace):

- routes of protocol bgp (186) with a gateway in any table but local/main/default:
  the type-5 routes zebra installs in VRF tables;
- IPv4 neighbours: zebra's router-MAC entries on the l3vni bridges are externally
  learned (NTF_EXT_LEARNED); the VTEP is the neighbour's own address;
- VXLAN FDB entries (AF_BRIDGE, NTF_SELF) with a remote destination.

Copies are plain kernel entries: routes with protocol :data:`HOLD_PROTO` and metric
:data:`HOLD_METRIC` (zebra's metric-20 route wins as soon as it is back and the
NetlinkActor's reconcile, which owns protocol 77, leaves them alone), neighbours in
state NOARP marked with protocol :data:`HOLD_NEIGH_PROTO`, and FDB entries without the
externally-learned flag.  A neighbour or FDB copy that zebra has taken over again
(externally learned) is never deleted.  The dump reports copies too (not owned), so
a new instance removes what a stopped one left.

A withdrawal comes as a burst (one session down: every route, neighbour and FDB entry
towards that VTEP): the monitor hands over what it reads within :data:`BURST_GAP` of
the previous datagram as one batch, and :meth:`KernelEvpn.restore_all` sends a batch's
copies in one datagram (the kernel answers each message in it) instead of one round
trip each.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyroute2_cni.netlink.names import vxlan_vni_of
from pyroute2_cni.netlink.netns import NetnsWorker, netns_path
from pyroute2_cni.netlink.transport import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_REPLACE,
    NLM_F_REQUEST,
    NLMSG_ERROR,
    RT_SCOPE_UNIVERSE,
    RTM_DELROUTE,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_NEWROUTE,
    Rtnl,
    netlink_socket,
    split_messages,
)
from pyroute2_cni.values.evpn_hold import FDB, NEIGH, ROUTE, EvpnEntry

# RTPROT_KERNEL: zebra ignores kernel-protocol routes, so a copy never becomes zebra's
# "kernel route" (distance 0), which would keep zebra from installing its BGP route
# next to it when the peer is back.  Copies are told apart by their metric.
HOLD_PROTO = 2
HOLD_METRIC = 60000
RTPROT_BGP = 186
# Marks our neighbour copies (NDA_PROTOCOL; zebra writes 11, ARP leaves it unset).
HOLD_NEIGH_PROTO = 250
ZERO_MAC = "00:00:00:00:00:00"
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTMGRP_NEIGH = 0x4
RTMGRP_IPV4_ROUTE = 0x40
NTF_SELF = 0x02
NTF_EXT_LEARNED = 0x10
NUD_FAILED = 0x20
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
RTNH_F_ONLINK = 0x4
RTN_UNICAST = 1
log = logging.getLogger("pyroute2_cni.netlink.evpn_kernel")
AF_BRIDGE = 7
_SKIP_TABLES = frozenset({0, 253, 254, 255})
# A burst: datagrams that follow each other within BURST_GAP seconds, for at most
# BURST_MAX seconds or BURST_READS datagrams (a lone deletion waits BURST_GAP at most).
# The first entry of a burst is missing from the kernel while the rest is read: each
# millisecond here is a millisecond of traffic lost (issue 15), so a long withdrawal
# goes back in several exchanges rather than waiting for all of it.
BURST_GAP = 0.003
BURST_MAX = 0.01
BURST_READS = 256
# Scheduling priority (nice) of the threads that read a withdrawal and put the copies
# back: while the copies are missing, traffic is lost, and a withdrawal comes exactly
# when the node is busiest (FRR restarting, zebra re-reading the kernel).  Measured in
# the lab (one CPU under User-Mode Linux): 5-18 ms from zebra's deletion to the copy,
# 46 ms when the node was busy.
RESTORE_NICE = -10


def hurry_this_thread() -> None:
    """Run the calling thread at :data:`RESTORE_NICE` (Linux: nice is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), RESTORE_NICE)
    except OSError as exc:  # no CAP_SYS_NICE: the copies still come, a little later
        log.debug("cannot raise the priority of %s: %s", threading.current_thread().name, exc)


# Sequence numbers of batched requests: apart from Rtnl's own (which count from 1), so
# neither takes the other's answers for its own.
_BATCH_SEQ_START = 1 << 30


def route_entry(msg: Any) -> EvpnEntry | None:
    if msg["family"] != socket.AF_INET:
        return None
    proto = int(msg["proto"])
    metric = int(msg.get_attr("RTA_PRIORITY") or 0)
    if proto != RTPROT_BGP and (proto, metric) != (HOLD_PROTO, HOLD_METRIC):
        return None
    table = int(msg.get_attr("RTA_TABLE") or msg["table"])
    gateway = msg.get_attr("RTA_GATEWAY")
    if table in _SKIP_TABLES or not gateway:
        return None
    return EvpnEntry(
        kind=ROUTE,
        vtep=str(gateway),
        ifindex=int(msg.get_attr("RTA_OIF") or 0),
        table=table,
        dst=f"{msg.get_attr('RTA_DST') or '0.0.0.0'}/{msg['dst_len']}",
        onlink=bool(int(msg["flags"]) & RTNH_F_ONLINK),
        owned=proto == RTPROT_BGP,
    )


def neigh_entry(msg: Any, deleted: bool = False) -> EvpnEntry | None:
    """Externally learned (zebra's) neighbours and FDB entries; for a deletion any entry,
    as the notice may lack the flag (EvpnHold matches it against what it saw added)."""
    owned = bool(int(msg["flags"]) & NTF_EXT_LEARNED)
    if not (owned or deleted):
        return None  # ARP and our own copies: nothing to follow (and pods' ARP is busy)
    return _neigh_or_fdb(msg, owned)


def copy_entry(msg: Any, vxlans: frozenset[int]) -> EvpnEntry | None:
    """A neighbour or FDB copy of ours (not owned): neighbours carry HOLD_NEIGH_PROTO;
    FDB copies are the unicast entries towards a remote VTEP on our VXLAN devices
    (``vxlans``: their ifindexes) that zebra did not learn."""
    if int(msg["flags"]) & NTF_EXT_LEARNED:
        return None
    family = int(msg["family"])
    if family == socket.AF_INET and msg.get_attr("NDA_PROTOCOL") != HOLD_NEIGH_PROTO:
        return None
    if family == AF_BRIDGE and (
        int(msg["ifindex"]) not in vxlans or msg.get_attr("NDA_LLADDR") == ZERO_MAC
    ):
        return None
    return _neigh_or_fdb(msg, owned=False)


def _neigh_or_fdb(msg: Any, owned: bool) -> EvpnEntry | None:
    """An IPv4 neighbour, or a VXLAN FDB entry towards an IPv4 VTEP, as an EvpnEntry."""
    family, flags = int(msg["family"]), int(msg["flags"])
    dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR") or ""
    if not dst:
        return None
    if family == socket.AF_INET:
        return EvpnEntry(
            kind=NEIGH,
            vtep=str(dst),
            ifindex=int(msg["ifindex"]),
            dst=str(dst),
            lladdr=str(lladdr),
            owned=owned,
        )
    if family == AF_BRIDGE and flags & NTF_SELF and lladdr and ":" not in str(dst):
        return EvpnEntry(
            kind=FDB,
            vtep=str(dst),
            ifindex=int(msg["ifindex"]),
            lladdr=str(lladdr),
            vni=int(msg.get_attr("NDA_VNI") or 0),
            owned=owned,
        )
    return None


def decode(data: bytes) -> Iterable[tuple[bool, EvpnEntry]]:
    """(added, entry) for each route or neighbour message in one netlink datagram."""
    for mtype, _flags, _seq, chunk in split_messages(data):
        entry: EvpnEntry | None = None
        if mtype in (RTM_NEWROUTE, RTM_DELROUTE):
            msg = rtmsg(chunk)
            msg.decode()
            entry = route_entry(msg)
        elif mtype in (RTM_NEWNEIGH, RTM_DELNEIGH):
            msg = ndmsg(chunk)
            msg.decode()
            gone = mtype == RTM_DELNEIGH or _failing(msg)
            entry = neigh_entry(msg, deleted=gone)
            if entry is not None:
                yield not gone, entry
            continue
        if entry is not None:
            yield mtype == RTM_NEWROUTE, entry


def _failing(msg: Any) -> bool:
    """zebra removes a neighbour in two steps, FAILED then deleted, up to 30 ms apart on
    a busy node; a packet sent meanwhile is queued on the FAILED entry and dropped with
    it (issue 15: one echo lost).  So FAILED counts as the deletion."""
    return int(msg["family"]) == socket.AF_INET and bool(int(msg["state"]) & NUD_FAILED)


class EvpnMonitor:
    """A thread reading route and neighbour notifications; ``on_events(changes)`` with
    the (added, entry) pairs of one burst, in order; ``on_lost("")`` when the kernel
    dropped notifications (socket buffer overrun), ``on_lost(error)`` when the socket
    failed and the thread ends."""

    def __init__(
        self,
        on_events: Callable[[tuple[tuple[bool, EvpnEntry], ...]], None],
        on_lost: Callable[[str], None],
        netns: str | None = None,
    ) -> None:
        self._on_events = on_events
        self._on_lost = on_lost
        self._stop = threading.Event()
        self._sock = _in_netns(netns, _monitor_socket)
        self._thread = threading.Thread(target=self._run, name="evpn-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        hurry_this_thread()
        while not self._stop.is_set():
            try:
                data = self._sock.recv(1 << 20)
                burst, overrun = self._burst(data)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._stop.is_set():
                    return
                if exc.errno == errno.ENOBUFS:
                    self._on_lost("")
                    continue
                self._on_lost(f"reading netlink notifications: {exc}")
                return
            changes = tuple(change for datagram in burst for change in decode(datagram))
            if changes:
                self._on_events(changes)
            if overrun:
                self._on_lost("")

    def _burst(self, first: bytes) -> tuple[list[bytes], bool]:
        """``first`` and the datagrams that follow it closely; True when the kernel
        dropped some meanwhile (what was read still counts)."""
        burst = [first]
        deadline = time.monotonic() + BURST_MAX
        while len(burst) < BURST_READS:
            wait = min(BURST_GAP, deadline - time.monotonic())
            if wait <= 0 or not select.select([self._sock], [], [], wait)[0]:
                break
            try:
                burst.append(self._sock.recv(1 << 20, socket.MSG_DONTWAIT))
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                return burst, True
        return burst, False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._sock.close()


def _monitor_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, RTMGRP_NEIGH | RTMGRP_IPV4_ROUTE))
    sock.settimeout(0.5)
    return sock


def _in_netns(netns: str | None, make: Callable[[], socket.socket]) -> socket.socket:
    """A socket opened in ``netns`` (tests) by a throw-away worker thread, or here."""
    if not netns:
        return make()
    worker = NetnsWorker("evpn-netns")
    try:
        return worker.run(netns_path(netns), make)
    finally:
        worker.close()


class KernelEvpn:
    """Dumps, restores and releases over one netlink socket (the owner's thread only).
    ``netns`` (a name or path) works on that namespace instead; tests use it."""

    def __init__(self, netns: str | None = None) -> None:
        self._nl = Rtnl(_in_netns(netns, netlink_socket))
        self._batch_seq = itertools.count(_BATCH_SEQ_START)

    def close(self) -> None:
        self._nl.close()

    def entries(self) -> list[EvpnEntry]:
        def routes() -> Any:
            msg = rtmsg()
            msg["family"] = socket.AF_INET
            return msg

        def neighbours(family: int) -> Callable[[], Any]:
            def make() -> Any:
                msg = ndmsg()
                msg["family"] = family
                return msg

            return make

        def links() -> Any:
            msg = ifinfmsg()
            msg["family"] = socket.AF_UNSPEC
            return msg

        vxlans = frozenset(
            int(msg["index"])
            for msg in self._nl.dump(links, RTM_GETLINK, ifinfmsg, "dump links")
            if vxlan_vni_of(str(msg.get_attr("IFLA_IFNAME") or "")) is not None
        )
        found: list[EvpnEntry] = []
        for msg in self._nl.dump(routes, RTM_GETROUTE, rtmsg, "dump routes"):
            entry = route_entry(msg)
            if entry is not None:
                found.append(entry)
        for family in (socket.AF_INET, AF_BRIDGE):
            for msg in self._nl.dump(neighbours(family), RTM_GETNEIGH, ndmsg, "dump neighbours"):
                entry = neigh_entry(msg) or copy_entry(msg, vxlans)
                if entry is not None:
                    found.append(entry)
        return found

    def restore(self, entry: EvpnEntry) -> None:
        (error,) = self.restore_all([entry])
        if error is not None:
            raise error

    def restore_all(self, entries: Sequence[EvpnEntry]) -> list[OSError | None]:
        """All copies in one datagram, in order; the kernel acks each message in it."""
        if not entries:
            return []
        flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
        pending: dict[int, int] = {}  # sequence -> index in entries
        datagram = bytearray()
        for index, entry in enumerate(entries):
            msg, mtype = (
                (self._route(entry), RTM_NEWROUTE)
                if entry.kind == ROUTE
                else (self._neigh(entry), RTM_NEWNEIGH)
            )
            seq = next(self._batch_seq)
            msg["header"]["type"] = mtype
            msg["header"]["flags"] = flags
            msg["header"]["sequence_number"] = seq
            msg["header"]["pid"] = 0
            msg.encode()
            data = bytes(msg.data)
            datagram += data + b"\0" * (-len(data) % 4)
            pending[seq] = index
        self._nl.sock.send(bytes(datagram))
        errors: list[OSError | None] = [None] * len(entries)
        while pending:
            for mtype, rflags, seq, chunk in split_messages(self._nl.sock.recv(1 << 18)):
                index = pending.pop(seq, -1) if mtype == NLMSG_ERROR else -1
                if index >= 0:
                    what = f"restore {entries[index].describe()}"
                    errors[index] = Rtnl.error_of(chunk, rflags, what)
        return errors

    def release(self, entry: EvpnEntry) -> None:
        what = f"release {entry.describe()}"
        try:
            if entry.kind == ROUTE:
                self._nl.request(self._route(entry), RTM_DELROUTE, 0, what)
                return
            owned, wanted = self._zebra_state(entry)
            if owned:
                return
            self._nl.request(self._neigh(entry), RTM_DELNEIGH, 0, what)
            if wanted:
                # zebra re-installed this remote MAC while our copy was there, and the
                # kernel kept the copy as it was (replacing a VXLAN FDB entry does not
                # set extern_learn; zebra does not install an RMAC twice): without this
                # the MAC would be missing for good.  Put zebra's own entry in its place.
                flags = NLM_F_CREATE | NLM_F_REPLACE
                self._nl.request(self._zebra_fdb(entry), RTM_NEWNEIGH, flags, what)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH):
                raise

    def _zebra_state(self, entry: EvpnEntry) -> tuple[bool, bool]:
        """(owned, wanted): whether zebra has replaced our copy (no notice comes when only
        flags change), and, for an FDB entry, whether zebra has the MAC on the VXLAN
        device's bridge port (its externally learned bridge entry): it wants the MAC
        there.  Read whole: filtered FDB dumps leave out the VXLAN device's own entries."""
        family = socket.AF_INET if entry.kind == NEIGH else AF_BRIDGE

        def make() -> Any:
            msg = ndmsg()
            msg["family"] = family
            return msg

        owned = wanted = False
        for msg in self._nl.dump(make, RTM_GETNEIGH, ndmsg, "dump neighbours"):
            found = neigh_entry(msg)
            if found is not None and found.key == entry.key:
                owned = found.owned
            elif (
                entry.kind == FDB
                and int(msg["ifindex"]) == entry.ifindex
                # the bridge's own entries: dumped without NTF_MASTER, never NTF_SELF
                and int(msg["flags"]) & (NTF_SELF | NTF_EXT_LEARNED) == NTF_EXT_LEARNED
                and str(msg.get_attr("NDA_LLADDR") or "") == entry.lladdr
            ):
                wanted = True
        return owned, wanted

    @staticmethod
    def _zebra_fdb(entry: EvpnEntry) -> Any:
        """An FDB entry as zebra installs a remote MAC: externally learned, static (the
        VXLAN driver takes only permanent or reachable entries)."""
        msg = KernelEvpn._neigh(entry)
        msg["state"] = NUD_NOARP | NUD_PERMANENT
        msg["flags"] = NTF_SELF | NTF_EXT_LEARNED
        return msg

    @staticmethod
    def _route(entry: EvpnEntry) -> Any:
        address, length = entry.dst.split("/")
        msg = rtmsg()
        msg["family"] = socket.AF_INET
        msg["dst_len"] = int(length)
        msg["table"] = entry.table if entry.table < 256 else 0
        msg["proto"] = HOLD_PROTO
        msg["scope"] = RT_SCOPE_UNIVERSE
        msg["type"] = RTN_UNICAST
        msg["flags"] = RTNH_F_ONLINK if entry.onlink else 0
        attrs: list[Any] = [
            ("RTA_TABLE", entry.table),
            ("RTA_PRIORITY", HOLD_METRIC),
            ("RTA_GATEWAY", entry.vtep),
        ]
        if int(length):
            attrs.append(("RTA_DST", address))
        if entry.ifindex:
            attrs.append(("RTA_OIF", entry.ifindex))
        msg["attrs"] = attrs
        return msg

    @staticmethod
    def _neigh(entry: EvpnEntry) -> Any:
        msg = ndmsg()
        msg["ifindex"] = entry.ifindex
        msg["state"] = NUD_NOARP
        if entry.kind == NEIGH:
            msg["family"] = socket.AF_INET
            msg["attrs"] = [
                ("NDA_DST", entry.dst),
                ("NDA_LLADDR", entry.lladdr),
                ("NDA_PROTOCOL", HOLD_NEIGH_PROTO),
            ]
        else:
            msg["family"] = AF_BRIDGE
            msg["state"] = NUD_NOARP | NUD_PERMANENT
            msg["flags"] = NTF_SELF
            attrs: list[Any] = [("NDA_LLADDR", entry.lladdr), ("NDA_DST", entry.vtep)]
            if entry.vni:
                attrs.append(("NDA_VNI", entry.vni))
            msg["attrs"] = attrs
        return msg


__all__ = ["EvpnMonitor", "KernelEvpn", "copy_entry", "decode", "neigh_entry", "route_entry"]
