"""RouteKeeperActor with a fake kernel and monitor: start-up clean-up, events, metrics."""

from __future__ import annotations

import http.server
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from prometheus_client import generate_latest
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.actors.route_keeper_actor import (
    RouteKeeperActor,
    peer_session_from_metrics,
    probe_bgp,
    probe_livez,
)
from pyroute2_cni.messages.base import Ok
from pyroute2_cni.messages.evpn import BgpSessionsSeen, CheckHeld, EvpnChanged
from pyroute2_cni.netlink import evpn_kernel
from pyroute2_cni.netlink.evpn_kernel import AF_BRIDGE
from pyroute2_cni.netlink.transport import split_messages
from pyroute2_cni.runtime.config import FrrSection, Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.evpn_hold import (
    FDB,
    NEIGH,
    NO_ANSWER_IN_TIME,
    ROUTE,
    BgpView,
    EvpnEntry,
    PeerSession,
)
from tests.harness.waiting import wait_for

pytestmark = pytest.mark.unit

PEER = "192.0.2.1"
ZEBRA_ROUTE = EvpnEntry(kind=ROUTE, vtep=PEER, table=42, dst="10.244.1.0/26", onlink=True)
LEFTOVER = EvpnEntry(kind=ROUTE, vtep=PEER, table=42, dst="10.244.9.0/26", owned=False)
RMAC = "02:00:00:00:00:09"
LEFTOVER_NEIGH = EvpnEntry(kind=NEIGH, vtep=PEER, ifindex=7, dst=PEER, lladdr=RMAC, owned=False)
LEFTOVER_FDB = EvpnEntry(kind=FDB, vtep=PEER, ifindex=8, lladdr=RMAC, owned=False)
ZEBRA_NEIGH = EvpnEntry(kind=NEIGH, vtep="192.0.2.7", ifindex=7, dst="192.0.2.7", lladdr=RMAC)


class FakeKernel:
    def __init__(self, entries: list[EvpnEntry]) -> None:
        self.present = {e.key: e for e in entries}
        self.closed = False

    def entries(self) -> list[EvpnEntry]:
        return list(self.present.values())

    def restore_all(self, entries: Sequence[EvpnEntry]) -> list[OSError | None]:
        for entry in entries:
            self.present[entry.key] = EvpnEntry(**{**_fields(entry), "owned": False})
        return [None] * len(entries)

    def release(self, entry: EvpnEntry) -> None:
        if not self.present.get(entry.key, entry).owned:
            self.present.pop(entry.key, None)

    def close(self) -> None:
        self.closed = True


def _fields(entry: EvpnEntry) -> dict[str, Any]:
    return {name: getattr(entry, name) for name in EvpnEntry.__slots__}


class FakeMonitor:
    def __init__(
        self,
        on_events: Callable[[tuple[tuple[bool, EvpnEntry], ...]], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.on_events = on_events
        self.on_lost = on_lost
        self.started = self.closed = False

    def start(self) -> None:
        self.started = True

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, hold: float = 120.0) -> None:
        self.kernel = FakeKernel([ZEBRA_ROUTE, LEFTOVER, LEFTOVER_NEIGH, LEFTOVER_FDB, ZEBRA_NEIGH])
        self.monitors: list[FakeMonitor] = []
        self.metrics = Metrics()
        self.crashes: list[BaseException | None] = []

        def monitor(on_events: Any, on_lost: Any) -> FakeMonitor:
            self.monitors.append(FakeMonitor(on_events, on_lost))
            return self.monitors[-1]

        self.ref = RouteKeeperActor.start(
            ActorHooks(
                name="route-keeper",
                generation=1,
                on_crash=lambda _name, _gen, exc: self.crashes.append(exc),
            ),
            settings=Settings(frr=FrrSection(evpn_hold=hold)),
            kernel_factory=lambda: self.kernel,
            monitor_factory=monitor,
            probe=lambda _address: True,
            metrics=self.metrics,
        )

    def ask(self, message: Any) -> Any:
        return self.ref.ask(message, timeout=5)

    def held(self) -> float:
        return self.metrics.registry.get_sample_value("pyroute2_cni_evpn_held_entries") or 0.0


@pytest.fixture
def rig() -> Iterator[Rig]:
    rig = Rig()
    yield rig
    rig.ref.stop()


def test_start_holds_leftover_copies_again_and_keeps_zebras_routes(rig: Rig) -> None:
    assert isinstance(rig.ask(CheckHeld()), Ok)
    # A previous instance's route, neighbour and FDB copies are held again (what this
    # node forwards with until its FRR re-learns them); zebra's own entries stay.
    assert len(rig.kernel.present) == 5
    assert rig.held() == 3.0
    assert rig.monitors and rig.monitors[0].started


def test_a_deleted_route_of_an_away_peer_is_held_and_counted(rig: Rig) -> None:
    view = BgpView(answered=True, taken=0.0, sessions={PEER: PeerSession(state="Active", uptime=0)})
    rig.ask(BgpSessionsSeen(view=view))
    rig.kernel.present.pop(ZEBRA_ROUTE.key)  # zebra deletes it ...
    rig.ask(EvpnChanged(added=False, entry=ZEBRA_ROUTE))  # ... and the monitor says so
    assert ZEBRA_ROUTE.key in rig.kernel.present
    assert not rig.kernel.present[ZEBRA_ROUTE.key].owned
    assert rig.held() == 1.0 + 3.0, "and the three copies left by a previous instance"


def test_stop_closes_monitor_and_kernel(rig: Rig) -> None:
    rig.ref.stop()
    assert rig.monitors[0].closed and rig.kernel.closed


def test_hold_zero_opens_nothing() -> None:
    rig = Rig(hold=0)
    try:
        assert isinstance(rig.ask(CheckHeld()), Ok)
        assert rig.monitors == [] and len(rig.kernel.present) == 5, "nothing touched"
    finally:
        rig.ref.stop()


def test_the_lab_knows_the_copies_metric() -> None:
    from pyroute2_cni.netlink import evpn_kernel
    from tests.harness import lab

    assert lab.HOLD_METRIC == evpn_kernel.HOLD_METRIC


def test_a_failed_monitor_fails_the_actor_for_a_restart(rig: Rig) -> None:
    rig.monitors[0].on_lost("reading netlink notifications: [Errno 9] Bad file descriptor")
    wait_for(lambda: rig.crashes, 5, "the crash reported to the supervisor")
    assert "EVPN monitor failed" in str(rig.crashes[0])
    assert rig.monitors[0].closed and rig.kernel.closed


def test_an_overrun_reads_the_kernel_again(rig: Rig) -> None:
    extra = EvpnEntry(kind=ROUTE, vtep=PEER, table=42, dst="10.244.2.0/26")
    rig.kernel.present[extra.key] = extra
    rig.monitors[0].on_lost("")
    view = BgpView(answered=True, taken=0.0, sessions={PEER: PeerSession(state="Active", uptime=0)})
    rig.ask(BgpSessionsSeen(view=view))
    rig.kernel.present.pop(extra.key)
    rig.ask(EvpnChanged(added=False, entry=extra))
    assert extra.key in rig.kernel.present, "known from the re-read, so held"


def test_a_peers_bgp_view_is_read_from_its_metrics() -> None:
    peer = Metrics()
    peer.bgp_established_seconds.set(42.5)
    peer.frr_zebra_uptime_seconds.set(900.0)
    text = generate_latest(peer.registry).decode()
    assert peer_session_from_metrics(text) == PeerSession(
        state="Established", uptime=42.5, zebra_uptime=900.0
    )
    peer.bgp_established_seconds.set(0)
    peer.frr_zebra_uptime_seconds.set(0)
    text = generate_latest(peer.registry).decode()
    assert peer_session_from_metrics(text) == PeerSession(
        state="Down", uptime=0.0, zebra_uptime=0.0
    )
    older = "pyroute2_cni_bgp_established_seconds 5.0\n"  # a daemon without the zebra gauge
    assert peer_session_from_metrics(older) == PeerSession(state="Established", uptime=5.0)
    assert peer_session_from_metrics("# an older daemon says nothing about it\n") is None
    assert peer_session_from_metrics("not prometheus {{{") is None


# -- the real monitor and kernel code over fake netlink sockets -------------------------

NL_HDR = struct.Struct("=IHHII")
NLMSG_ERROR, NLMSG_DONE = 2, 3
RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWNEIGH, RTM_DELNEIGH = 24, 25, 28, 29
NTF_SELF, NTF_EXT_LEARNED = 0x02, 0x10
VTEP = "192.168.124.2"
L3BR, L3VX = 7, 8


def _encode(msg: Any, mtype: int) -> bytes:
    msg["header"]["type"] = mtype
    msg.encode()
    data = bytes(msg.data)
    return data + b"\0" * (-len(data) % 4)


def zebra_route(mtype: int) -> bytes:
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = 26
    msg["table"] = 42
    msg["proto"] = 186  # bgp
    msg["type"] = 1
    msg["flags"] = 0x4  # onlink
    msg["attrs"] = [
        ("RTA_TABLE", 42),
        ("RTA_DST", "10.244.1.0"),
        ("RTA_PRIORITY", 20),
        ("RTA_GATEWAY", VTEP),
        ("RTA_OIF", L3BR),
    ]
    return _encode(msg, mtype)


def zebra_neigh(mtype: int, family: int) -> bytes:
    msg = ndmsg()
    msg["family"] = family
    msg["state"] = 0x40
    if family == socket.AF_INET:
        msg["ifindex"] = L3BR
        msg["flags"] = NTF_EXT_LEARNED
        msg["attrs"] = [("NDA_DST", VTEP), ("NDA_LLADDR", RMAC)]
    else:
        msg["ifindex"] = L3VX
        msg["flags"] = NTF_SELF | NTF_EXT_LEARNED
        msg["attrs"] = [("NDA_LLADDR", RMAC), ("NDA_DST", VTEP)]
    return _encode(msg, mtype)


class FakeRtnlSocket:
    """The keeper's request socket: records each datagram sent, acks every request and
    answers dumps with an empty NLMSG_DONE."""

    def __init__(self) -> None:
        self.sent: list[list[tuple[int, int]]] = []  # per datagram: (type, family)
        self._replies: list[bytes] = []

    def send(self, data: bytes) -> int:
        messages, replies = [], b""
        for mtype, _flags, seq, chunk in split_messages(data):
            messages.append((mtype, chunk[NL_HDR.size]))
            if mtype % 4 == 2:  # RTM_GET*: a dump
                replies += NL_HDR.pack(NL_HDR.size + 4, NLMSG_DONE, 0x2, seq, 0) + bytes(4)
            else:
                body = struct.pack("=i", 0) + chunk[: NL_HDR.size]
                replies += NL_HDR.pack(NL_HDR.size + len(body), NLMSG_ERROR, 0x100, seq, 0) + body
        self.sent.append(messages)
        self._replies.append(replies)
        return len(data)

    def recv(self, _size: int, _flags: int = 0) -> bytes:
        if not self._replies:
            raise AssertionError("the keeper waits for an answer to nothing it sent")
        return self._replies.pop(0)

    def close(self) -> None:
        pass


class FakeNetlink:
    """zebra's notifications go in at ``kernel_end``; the monitor reads the other end of a
    datagram socket pair (one send, one read: a burst in one datagram, as the kernel may
    pack it)."""

    def __init__(self) -> None:
        self.kernel_end, self.monitor_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.monitor_end.settimeout(0.5)
        self.rtnl = FakeRtnlSocket()

    def notify(self, *messages: bytes) -> None:
        self.kernel_end.send(b"".join(messages))

    def close(self) -> None:
        self.kernel_end.close()


@pytest.fixture
def fake_netlink(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeNetlink]:
    fake = FakeNetlink()
    monkeypatch.setattr(evpn_kernel, "_monitor_socket", lambda: fake.monitor_end)
    monkeypatch.setattr(evpn_kernel, "netlink_socket", lambda: fake.rtnl)
    yield fake
    fake.close()


def test_a_withdrawal_burst_is_restored_routes_first_in_one_netlink_exchange(
    fake_netlink: FakeNetlink,
) -> None:
    metrics = Metrics()
    ref = RouteKeeperActor.start(
        ActorHooks(name="route-keeper", generation=1, on_crash=lambda *_args: None),
        settings=Settings(frr=FrrSection(evpn_hold=120.0)),
        kernel_factory=evpn_kernel.KernelEvpn,
        monitor_factory=evpn_kernel.EvpnMonitor,
        probe=lambda _address: True,
        metrics=metrics,
    )
    try:
        view = BgpView(
            answered=True, taken=0.0, sessions={VTEP: PeerSession(state="Active", uptime=0)}
        )
        ref.ask(BgpSessionsSeen(view=view), timeout=5)
        fake_netlink.notify(zebra_route(RTM_NEWROUTE))
        fake_netlink.notify(zebra_neigh(RTM_NEWNEIGH, socket.AF_INET))
        fake_netlink.notify(zebra_neigh(RTM_NEWNEIGH, AF_BRIDGE))
        before = len(fake_netlink.rtnl.sent)
        # zebra's withdrawal burst as one read: remote MAC and neighbour go before the route.
        fake_netlink.notify(
            zebra_neigh(RTM_DELNEIGH, AF_BRIDGE),
            zebra_neigh(RTM_DELNEIGH, socket.AF_INET),
            zebra_route(RTM_DELROUTE),
        )

        def held() -> float:
            return metrics.registry.get_sample_value("pyroute2_cni_evpn_held_entries") or 0.0

        wait_for(lambda: held() == 3.0, 5, "the three entries held")
        restores = fake_netlink.rtnl.sent[before:]
        assert restores == [
            [
                (RTM_NEWROUTE, socket.AF_INET),
                (RTM_NEWNEIGH, socket.AF_INET),
                (RTM_NEWNEIGH, AF_BRIDGE),
            ]
        ], "one datagram: the route first, then the router-MAC neighbour, then the FDB entry"
    finally:
        ref.stop()


# -- peer probes: a slow answer is not a dead node --------------------------------------


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A port whose listener never answers: the kernel completes the TCP handshake (the
    daemon's listening socket exists) but no HTTP answer comes, as from a daemon busy
    under load."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture
def closed_port() -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    sock.close()  # nothing listens there now: connections are refused
    return port


def test_a_slow_metrics_answer_is_not_a_dead_node(silent_peer: int) -> None:
    session = probe_bgp(silent_peer, timeout=0.2)("127.0.0.1")
    assert session is not None, "connected but slow: the daemon is there"
    assert session.state != "Established", "nothing is known about its sessions"
    assert probe_livez(silent_peer, timeout=0.2)("127.0.0.1") is True


def test_a_refused_connection_is_a_node_whose_daemon_is_away(closed_port: int) -> None:
    # The node's kernel answered: it is there and still forwards while its DaemonSet pod
    # is replaced, so its entries stay held (the hold time bounds it).
    session = probe_bgp(closed_port, timeout=0.2)("127.0.0.1")
    assert session is not None and session.state == NO_ANSWER_IN_TIME
    assert probe_livez(closed_port, timeout=0.2)("127.0.0.1") is True


@pytest.fixture
def unanswering_port() -> Iterator[int]:
    """A port where the connection itself times out, as towards a node that is gone: a
    listener whose accept queue is full drops further SYNs."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    queued: list[socket.socket] = []
    try:
        for _ in range(4):  # the queue holds one or two, whatever the kernel rounds to
            client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            client.settimeout(0.2)
            queued.append(client)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("the listener kept accepting connections; cannot make one time out")
        yield port
    finally:
        for client in queued:
            client.close()
        listener.close()


def test_a_node_that_does_not_answer_at_all_is_no_answer(unanswering_port: int) -> None:
    assert probe_bgp(unanswering_port, timeout=0.2)("127.0.0.1") is None
    assert probe_livez(unanswering_port, timeout=0.2)("127.0.0.1") is False


@pytest.fixture
def starting_peer() -> Iterator[int]:
    """A daemon still starting: it answers /livez and /metrics with 503."""

    class Starting(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(503)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Starting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_a_daemon_still_starting_is_a_node_that_is_there(starting_peer: int) -> None:
    assert probe_livez(starting_peer, timeout=2.0)("127.0.0.1") is True
    session = probe_bgp(starting_peer, timeout=2.0)("127.0.0.1")
    assert session is not None and session.state == NO_ANSWER_IN_TIME
