"""VtyClient against a scripted daemon speaking the vty socket protocol (kernel tests
run it against the real FRR: tests/kernel/test_frr_actor_real.py)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pyroute2_cni.frr.vty import VtyClient, VtyError

pytestmark = pytest.mark.unit


@dataclass
class Daemon:
    """Answers each NUL-terminated command with output + NUL NUL NUL + status."""

    path: Path
    answers: dict[str, tuple[int, str]] = field(default_factory=dict)
    chunk: int = 0  # > 0: send the answer in pieces this large
    silent: bool = False
    connections: int = 0
    commands: list[str] = field(default_factory=list)
    _server: socket.socket | None = None
    _clients: list[socket.socket] = field(default_factory=list)

    def start(self) -> None:
        self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._server.bind(str(self.path))
        self._server.listen()
        threading.Thread(target=self._accept, args=(self._server,), daemon=True).start()

    def restart(self) -> None:
        """As a daemon restart looks to a client: connections dropped, a new socket."""
        self.stop()
        self.path.unlink()
        self.start()

    def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for client in self._clients:
            client.close()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            self.connections += 1
            self._clients.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        pending = b""
        with client:
            while True:
                try:
                    data = client.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                pending += data
                while b"\0" in pending:
                    raw, pending = pending.split(b"\0", 1)
                    command = raw.decode()
                    self.commands.append(command)
                    if self.silent and command != "enable":
                        continue
                    status, text = self.answers.get(command, (0, ""))
                    reply = text.encode() + b"\0\0\0" + bytes([status])
                    step = self.chunk or len(reply)
                    try:
                        for i in range(0, len(reply), step):
                            client.sendall(reply[i : i + step])
                            time.sleep(0.001 if self.chunk else 0)
                    except OSError:
                        return  # the client gave up (timeout test) or the test ended


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path / "bgpd.vty")
    d.answers = {
        "show bgp l2vpn evpn summary json": (0, '{"peers": {}}\n'),
        "show bgp summary json": (1, "{}\n"),
        "show nonsense": (2, "% [BGP] Unknown command: show nonsense\n"),
    }
    d.start()
    yield d
    d.stop()


def test_answers_over_one_kept_connection(daemon: Daemon) -> None:
    with VtyClient(daemon.path, timeout=2) as client:
        for _ in range(3):
            assert client.ask("show bgp l2vpn evpn summary json") == '{"peers": {}}\n'
        assert client.ask("show bgp summary json") == "{}\n"  # a warning still answers
        assert daemon.connections == 1
        assert daemon.commands[0] == "enable"  # as vtysh does


def test_an_answer_in_pieces_is_put_together(daemon: Daemon) -> None:
    daemon.chunk = 3  # the terminator arrives split over reads
    daemon.answers["show long"] = (0, "x" * 1000 + "\n")
    with VtyClient(daemon.path, timeout=2) as client:
        assert client.ask("show long") == "x" * 1000 + "\n"


def test_an_error_status_is_an_error_naming_the_command(daemon: Daemon) -> None:
    pattern = r"'show nonsense' failed: % \[BGP\] Unknown command"
    with VtyClient(daemon.path, timeout=2) as client, pytest.raises(VtyError, match=pattern):
        client.ask("show nonsense")


def test_a_restarted_daemon_is_reached_again_without_an_error(daemon: Daemon) -> None:
    with VtyClient(daemon.path, timeout=2) as client:
        client.ask("show bgp summary json")
        daemon.restart()
        assert client.ask("show bgp l2vpn evpn summary json") == '{"peers": {}}\n'
        assert daemon.connections == 2


def test_a_missing_daemon_is_an_error_naming_the_socket(tmp_path: Path) -> None:
    client = VtyClient(tmp_path / "zebra.vty", timeout=2)
    with client, pytest.raises(VtyError, match=r"zebra\.vty"):
        client.ask("show vrf vni json")


def test_a_silent_daemon_is_an_error_within_the_timeout(daemon: Daemon) -> None:
    daemon.silent = True
    with VtyClient(daemon.path, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(VtyError, match="no answer"):
            client.ask("show bgp summary json")
        assert time.monotonic() - started < 2
        daemon.silent = False  # the late answer is not mistaken for the next one's
        assert client.ask("show bgp l2vpn evpn summary json") == '{"peers": {}}\n'


def test_one_command_per_call(daemon: Daemon) -> None:
    with VtyClient(daemon.path, timeout=2) as client:
        with pytest.raises(VtyError, match="one command per call"):
            client.ask("show version\nconfigure")
        assert "configure" not in daemon.commands
