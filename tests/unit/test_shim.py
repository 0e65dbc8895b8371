"""The static C shim (shim/) against a pyzmq ROUTER, and the Python codec it talks to."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyroute2_cni.cni.shim_protocol import (
    PROTOCOL_TAG,
    BadRequest,
    ShimRequest,
    encode_reply,
    encode_request,
    parse_request,
    split_envelope,
)
from tests.harness.shim_bench import FakeShimDaemon, build_shim
from tests.harness.shim_bench import run_shim as _run_shim

pytestmark = pytest.mark.unit

VERSION_JSON = {
    "cniVersion": "1.1.0",
    "supportedVersions": ["0.3.1", "0.4.0", "1.0.0", "1.1.0"],
}
HINT = "check that the pyroute2-cni DaemonSet pod runs on this node"


# shim/check.sh runs this file against a sanitizer build: PYROUTE2_CNI_SHIM names the
# binary, PYROUTE2_CNI_SANITIZER_ENV holds NAME=VALUE lines every run gets.
SANITIZED = os.environ.get("PYROUTE2_CNI_SHIM", "")
SANITIZER_ENV = dict(
    line.split("=", 1)
    for line in os.environ.get("PYROUTE2_CNI_SANITIZER_ENV", "").splitlines()
    if "=" in line
)


def run_shim(
    binary: Path, env: dict[str, str], stdin: bytes = b"", timeout: float = 60.0
) -> subprocess.CompletedProcess[bytes]:
    return _run_shim(binary, {**env, **SANITIZER_ENV}, stdin, timeout)


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if SANITIZED:
        return Path(SANITIZED)
    binary = build_shim(tmp_path_factory.mktemp("shim") / "pyroute2-cni")
    print(f"shim binary: {binary.stat().st_size} bytes")
    return binary


@pytest.fixture
def sockdir() -> Iterator[Path]:
    # Short on purpose: sun_path holds 107 bytes.
    path = Path(tempfile.mkdtemp(prefix="shim-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def cni_env(endpoint: str | None = None, command: str = "ADD", **extra: str) -> dict[str, str]:
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": "c0ffee",
        "CNI_NETNS": "/var/run/netns/pod",
        "CNI_IFNAME": "eth0",
        "CNI_ARGS": "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        "CNI_PATH": "/opt/cni/bin",
    }
    if endpoint is not None:
        env["PYROUTE2_CNI_SOCKET"] = endpoint
    env.update(extra)
    return env


def error_of(proc: subprocess.CompletedProcess[bytes]) -> dict[str, Any]:
    assert proc.returncode == 1, proc
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# --------------------------------------------------------------- round trip


def test_round_trip_env_and_stdin(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    config = b'{"cniVersion": "1.0.0", "name": "net", "type": "pyroute2-cni"}'
    out = b'{"cniVersion":"1.0.0","ips":[]}'
    with FakeShimDaemon(endpoint, lambda _: encode_reply(0, out)) as daemon:
        proc = run_shim(shim, cni_env(endpoint, UNRELATED="not forwarded"), config)
    assert proc.returncode == 0, proc
    assert proc.stdout == out
    assert proc.stderr == b""
    [frames] = daemon.requests
    assert frames[0] == PROTOCOL_TAG
    request = parse_request(frames)
    assert request == ShimRequest(
        command="ADD",
        container_id="c0ffee",
        netns="/var/run/netns/pod",
        ifname="eth0",
        args="K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0",
        path="/opt/cni/bin",
        stdin=config,
    )
    assert request.cni_args() == {"K8S_POD_NAMESPACE": "default", "K8S_POD_NAME": "web-0"}
    assert b"UNRELATED" not in frames[1]


def test_only_present_env_is_forwarded(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    env = {"CNI_COMMAND": "GC", "CNI_PATH": "", "PYROUTE2_CNI_SOCKET": endpoint}
    with FakeShimDaemon(endpoint) as daemon:
        proc = run_shim(shim, env, b"{}")
    assert proc.returncode == 0, proc
    [frames] = daemon.requests
    assert frames[1] == b"CNI_COMMAND=GC\nCNI_PATH=\n"
    assert parse_request(frames) == ShimRequest(command="GC", stdin=b"{}")


def test_long_frames_both_ways(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    filler = "x" * 100_000
    config = json.dumps({"cniVersion": "1.1.0", "name": "big", "filler": filler}).encode()
    out = json.dumps({"cniVersion": "1.1.0", "echo": filler[::-1]}).encode()
    with FakeShimDaemon(endpoint, lambda _: encode_reply(0, out)) as daemon:
        proc = run_shim(shim, cni_env(endpoint), config)
    assert proc.returncode == 0, proc.stdout[:300]
    assert proc.stdout == out
    assert daemon.requests[0][2] == config


@pytest.mark.parametrize("status", [0, 1, 7, 50, 255])
def test_exit_status_and_stdout_propagate(shim: Path, sockdir: Path, status: int) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    out = json.dumps({"cniVersion": "1.1.0", "code": status, "msg": "from daemon"}).encode()
    with FakeShimDaemon(endpoint, lambda _: encode_reply(status, out)):
        proc = run_shim(shim, cni_env(endpoint, command="CHECK"), b"{}")
    assert proc.returncode == status
    assert proc.stdout == out


@pytest.mark.parametrize("raw", [b"256", b"-3", b"99999999999"])
def test_status_that_does_not_fit_exits_1(shim: Path, sockdir: Path, raw: bytes) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    with FakeShimDaemon(endpoint, lambda _: [raw, b"out"]):
        proc = run_shim(shim, cni_env(endpoint), b"{}")
    assert (proc.returncode, proc.stdout) == (1, b"out")


@pytest.mark.parametrize("reply", [[b"ok", b"out"], [b"0"], [b"0", b"out", b"extra"]])
def test_malformed_reply_is_code_11(shim: Path, sockdir: Path, reply: list[bytes]) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    with FakeShimDaemon(endpoint, lambda _: reply):
        proc = run_shim(shim, cni_env(endpoint), b"{}")
    err = error_of(proc)
    assert err["code"] == 11
    assert err["msg"] == f"pyroute2-cni daemon sent an invalid reply on {endpoint}"


@pytest.mark.parametrize("stdin", [b"", b'{"cniVersion": "1.0.0", "name": ', b"\x00\xffnot json"])
def test_malformed_stdin_is_forwarded(shim: Path, sockdir: Path, stdin: bytes) -> None:
    endpoint = f"ipc://{sockdir}/cni.sock"
    with FakeShimDaemon(endpoint, lambda _: encode_reply(6, b'{"code":6}')) as daemon:
        proc = run_shim(shim, cni_env(endpoint), stdin)
    assert (proc.returncode, proc.stdout) == (6, b'{"code":6}')
    assert daemon.requests[0][2] == stdin


def test_daemon_heartbeats_are_answered(shim: Path, sockdir: Path) -> None:
    """libzmq PINGs the shim while the daemon works; without PONGs it would hang up."""
    endpoint = f"ipc://{sockdir}/hb.sock"
    opts: dict[int, int] = {
        zmq.HEARTBEAT_IVL: 20,
        zmq.HEARTBEAT_TIMEOUT: 250,
        zmq.HEARTBEAT_TTL: 250,
    }

    def slow(_: list[bytes]) -> list[bytes]:
        threading.Event().wait(0.8)  # a slow ADD: several heartbeat timeouts long
        return encode_reply(0, b"late")

    with FakeShimDaemon(endpoint, slow, opts):
        proc = run_shim(shim, cni_env(endpoint), b"{}")
    assert (proc.returncode, proc.stdout) == (0, b"late")


# ------------------------------------------------------ local answers, config


def test_version_is_answered_without_daemon(shim: Path, sockdir: Path) -> None:
    env = cni_env(f"ipc://{sockdir}/absent.sock", command="VERSION")
    proc = run_shim(shim, env, b'{"cniVersion":"1.0.0"}')
    assert proc.returncode == 0, proc
    assert json.loads(proc.stdout) == VERSION_JSON
    assert proc.stdout.startswith(b'{"cniVersion":"1.1.0","supportedVersions":')


def test_missing_cni_command_is_code_4(shim: Path) -> None:
    proc = run_shim(shim, {}, b"{}")
    err = error_of(proc)
    assert err["code"] == 4
    assert err["msg"] == "invalid environment variables"
    assert "CNI_COMMAND" in err["details"]


def test_socket_from_stdin_config(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/from-config.sock"
    config = json.dumps(
        {"cniVersion": "1.0.0", "plugins": [{"socket": "ipc:///nope"}], "socket": endpoint}
    ).encode()
    with FakeShimDaemon(endpoint) as daemon:
        proc = run_shim(shim, cni_env(None), config)
    assert proc.returncode == 0, proc
    assert daemon.requests[0][2] == config


def test_last_duplicate_socket_key_wins(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/second.sock"
    config = f'{{"socket": "ipc://{sockdir}/first.sock", "socket": "{endpoint}"}}'.encode()
    with FakeShimDaemon(endpoint) as daemon:
        proc = run_shim(shim, cni_env(None), config)
    assert proc.returncode == 0, proc
    assert len(daemon.requests) == 1


def test_env_socket_wins_over_stdin(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/from-env.sock"
    config = json.dumps({"cniVersion": "1.0.0", "socket": f"ipc://{sockdir}/no.sock"}).encode()
    with FakeShimDaemon(endpoint) as daemon:
        proc = run_shim(shim, cni_env(endpoint), config)
    assert proc.returncode == 0, proc
    assert len(daemon.requests) == 1


def test_abstract_socket(shim: Path) -> None:
    endpoint = f"ipc://@pyroute2-cni-test-{os.getpid()}"
    with FakeShimDaemon(endpoint) as daemon:
        proc = run_shim(shim, cni_env(endpoint), b"{}")
    assert proc.returncode == 0, proc
    assert len(daemon.requests) == 1


@pytest.mark.parametrize(
    ("env_socket", "config", "code"),
    [
        ("tcp://127.0.0.1:5555", b"{}", 4),
        (None, b'{"socket": "tcp://127.0.0.1:5555"}', 7),
        (None, b'{"socket": 5}', 7),
        (None, b'{"socket": "ipc://"}', 7),
    ],
)
def test_unsupported_endpoint(shim: Path, env_socket: str | None, config: bytes, code: int) -> None:
    err = error_of(run_shim(shim, cni_env(env_socket), config))
    assert err["code"] == code


@pytest.mark.parametrize(
    ("env_timeout", "config", "code"),
    [
        ("soon", b"{}", 4),
        ("0", b"{}", 4),
        (None, b'{"timeout": -1}', 7),
        (None, b'{"timeout": "1"}', 7),
    ],
)
def test_bad_timeout(shim: Path, env_timeout: str | None, config: bytes, code: int) -> None:
    env = cni_env("ipc:///nonexistent.sock")
    if env_timeout is not None:
        env["PYROUTE2_CNI_TIMEOUT"] = env_timeout
    err = error_of(run_shim(shim, env, config))
    assert err["code"] == code


def test_newline_in_env_is_rejected(shim: Path, sockdir: Path) -> None:
    env = cni_env(f"ipc://{sockdir}/cni.sock", CNI_ARGS="a=b\nCNI_COMMAND=DEL")
    err = error_of(run_shim(shim, env, b"{}"))
    assert err["code"] == 4
    assert "CNI_ARGS" in err["details"]


# ---------------------------------------------------------- daemon not there


def test_missing_socket_is_code_11(shim: Path, sockdir: Path) -> None:
    endpoint = f"ipc://{sockdir}/absent.sock"
    err = error_of(run_shim(shim, cni_env(endpoint), b'{"cniVersion": "0.4.0"}'))
    assert err == {
        "cniVersion": "0.4.0",
        "code": 11,
        "msg": f"pyroute2-cni daemon is not answering on {endpoint}",
        "details": f"connect: No such file or directory; {HINT}",
    }


def test_error_json_stays_valid_utf8(shim: Path, sockdir: Path) -> None:
    # A raw 0xff byte, an UTF-8 "é", an escaped newline and an escaped quote.
    path = str(sockdir).encode() + b'/bad\xff\xc3\xa9\\n\\"q'
    config = b'{"cniVersion": "1.0.\xff", "socket": "ipc://' + path + b'"}'
    err = error_of(run_shim(shim, cni_env(None), config))
    assert err["cniVersion"] == "1.0.\ufffd"
    assert err["msg"].endswith('/bad\ufffd\u00e9\n"q')


def test_default_endpoint_and_version(shim: Path) -> None:
    env = cni_env(None, command="DEL")
    proc = run_shim(shim, env, b"not json")
    err = error_of(proc)
    if not Path("/run/pyroute2-cni/cni.sock").exists():
        assert (
            err["msg"] == "pyroute2-cni daemon is not answering on ipc:///run/pyroute2-cni/cni.sock"
        )
    assert err["cniVersion"] == "1.1.0"


def test_refused_socket_is_code_11(shim: Path, sockdir: Path) -> None:
    path = sockdir / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: ECONNREFUSED
    err = error_of(run_shim(shim, cni_env(f"ipc://{path}"), b"{}"))
    assert err["code"] == 11
    assert err["details"] == f"connect: Connection refused; {HINT}"


@pytest.mark.parametrize("how", ["stdin", "env", "status-default"])
def test_silent_daemon_times_out(shim: Path, sockdir: Path, how: str) -> None:
    endpoint = f"ipc://{sockdir}/silent.sock"
    env = cni_env(endpoint)
    config: dict[str, Any] = {"cniVersion": "1.0.0"}
    expected = 1.0
    if how == "stdin":
        config["timeout"] = 1
    elif how == "env":
        env["PYROUTE2_CNI_TIMEOUT"] = "1"
        config["timeout"] = 60  # env wins
    else:
        env["CNI_COMMAND"] = "STATUS"
        expected = 5.0
    with FakeShimDaemon(endpoint, lambda _: None) as daemon:
        start = time.monotonic()
        proc = run_shim(shim, env, json.dumps(config).encode(), timeout=30)
        elapsed = time.monotonic() - start
    print(f"timed out after {elapsed:.3f} s (timeout {expected} s)")
    assert expected - 0.05 <= elapsed < expected + 2
    assert len(daemon.requests) == 1
    err = error_of(proc)
    assert err["code"] == 11
    assert err["msg"] == f"pyroute2-cni daemon is not answering on {endpoint}"
    assert err["details"] == f"no reply within {expected:g} s; {HINT}"


@pytest.mark.parametrize("stdin_closes_after", [0.7, None])
def test_timeout_bounds_the_whole_call(
    shim: Path, sockdir: Path, stdin_closes_after: float | None
) -> None:
    """stdin read + connect + exchange end by start + timeout, not each after its own.

    The runtime's stdin closes late (0.7 of the 1 s) or never; the daemon never answers.
    """
    endpoint = f"ipc://{sockdir}/silent.sock"
    env = cni_env(endpoint, PYROUTE2_CNI_TIMEOUT="1", **SANITIZER_ENV)
    with FakeShimDaemon(endpoint, lambda _: None):
        start = time.monotonic()
        proc = subprocess.Popen([str(shim)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        proc.stdin.write(b'{"cniVersion": "1.0.0"}')
        proc.stdin.flush()
        closer = None
        if stdin_closes_after is not None:
            # The stimulus: a runtime that takes its time to close stdin.
            closer = threading.Timer(stdin_closes_after, proc.stdin.close)
            closer.start()
        try:
            assert proc.stdout is not None
            out = proc.stdout.read()  # until the shim exits
            proc.wait(timeout=10)
        finally:
            if closer is not None:
                closer.join()
            if not proc.stdin.closed:
                proc.stdin.close()
            proc.kill()
            proc.wait(timeout=10)
            if proc.stdout is not None:
                proc.stdout.close()
        elapsed = time.monotonic() - start
    print(f"whole call ended after {elapsed:.3f} s (timeout 1 s)")
    assert elapsed <= 1.0 + 0.25
    err = json.loads(out)
    if stdin_closes_after is None:
        assert (err["code"], err["details"]) == (5, "stdin was not closed within the timeout")
    else:
        assert err["code"] == 11
        assert err["details"].endswith(f"no reply within 1 s; {HINT}")


def test_listener_that_never_speaks(shim: Path, sockdir: Path) -> None:
    path = sockdir / "mute.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(str(path))
        mute.listen(1)  # connect completes in the backlog, nobody answers
        start = time.monotonic()
        err = error_of(run_shim(shim, cni_env(f"ipc://{path}", PYROUTE2_CNI_TIMEOUT="0.5"), b"{}"))
        elapsed = time.monotonic() - start
    assert elapsed < 2.5
    assert err["details"] == f"handshake: no answer within 0.5 s; {HINT}"


# ------------------------------------------------- hand-written ZMTP peers

MORE, LONG, COMMAND = 0x01, 0x02, 0x04


def _recv_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError("peer closed")
        data += chunk
    return data


def _read_frame(conn: socket.socket) -> tuple[int, bytes]:
    flags = _recv_exact(conn, 1)[0]
    if flags & LONG:
        (size,) = struct.unpack(">Q", _recv_exact(conn, 8))
    else:
        size = _recv_exact(conn, 1)[0]
    return flags, _recv_exact(conn, size)


def _frame(flags: int, body: bytes, force_long: bool = False) -> bytes:
    if len(body) > 255 or force_long:
        return bytes([flags | LONG]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def _command(name: bytes, data: bytes) -> bytes:
    return _frame(COMMAND, bytes([len(name)]) + name + data)


def _ready(**props: bytes) -> bytes:
    data = b"".join(
        bytes([len(k)]) + k.encode() + struct.pack(">I", len(v)) + v
        for k, v in ((k.replace("_", "-"), v) for k, v in props.items())
    )
    return _command(b"READY", data)


def _greet(conn: socket.socket, major: int = 3) -> bytes:
    greeting = b"\xff" + bytes(8) + b"\x7f" + bytes([major, 1]) + b"NULL".ljust(20, b"\0")
    conn.sendall(greeting + bytes(64 - len(greeting)))
    return _recv_exact(conn, 64)


class RawPeer:
    """Serve one connection on a unix socket with a scripted ZMTP peer."""

    def __init__(self, path: Path, script: Callable[[socket.socket], None]) -> None:
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.listener.settimeout(20)
        self.script = script
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                conn.settimeout(20)
                self.script(conn)
        except BaseException as exc:
            self.error = exc

    def join(self) -> None:
        self.thread.join(timeout=30)
        self.listener.close()
        assert not self.thread.is_alive()
        if self.error is not None:
            raise self.error


def test_raw_peer_ping_properties_and_long_short_frames(shim: Path, sockdir: Path) -> None:
    seen: dict[str, Any] = {}

    def script(conn: socket.socket) -> None:
        seen["greeting"] = _greet(conn)
        seen["ready"] = _read_frame(conn)
        conn.sendall(_ready(Socket_Type=b"ROUTER", Identity=b"", X_Extra=b"v" * 300))
        frames = []
        while True:
            flags, body = _read_frame(conn)
            frames.append(body)
            if not flags & MORE:
                break
        seen["request"] = frames
        conn.sendall(_command(b"PING", b"\x00\x0actx-42"))
        seen["pong"] = _read_frame(conn)
        conn.sendall(_frame(MORE, b"") + _frame(MORE, b"0", force_long=True) + _frame(0, b"done"))

    path = sockdir / "raw.sock"
    peer = RawPeer(path, script)
    proc = run_shim(shim, cni_env(f"ipc://{path}"), b"{}")
    peer.join()
    assert (proc.returncode, proc.stdout) == (0, b"done")
    greeting = seen["greeting"]
    assert greeting[:10] == b"\xff" + bytes(8) + b"\x7f"
    assert greeting[10] == 3
    assert greeting[12:32] == b"NULL".ljust(20, b"\0")
    assert seen["ready"] == (COMMAND, b"\x05READY\x0bSocket-Type\x00\x00\x00\x03REQ")
    assert seen["request"][:2] == [b"", PROTOCOL_TAG]
    assert seen["pong"] == (COMMAND, b"\x04PONGctx-42")


@pytest.mark.parametrize(
    ("answer", "details"),
    [
        (_ready(Socket_Type=b"PUB"), "handshake: the daemon socket type PUB does not talk to REQ"),
        (_ready(Identity=b""), "handshake: READY without Socket-Type"),
        (_command(b"ERROR", b"\x07go away"), "handshake: the daemon sent ERROR: go away"),
        (b"", "handshake: connection closed by the daemon"),
    ],
)
def test_raw_peer_handshake_failures(
    shim: Path, sockdir: Path, answer: bytes, details: str
) -> None:
    def script(conn: socket.socket) -> None:
        _greet(conn)
        _read_frame(conn)
        conn.sendall(answer)

    path = sockdir / "raw.sock"
    peer = RawPeer(path, script)
    err = error_of(run_shim(shim, cni_env(f"ipc://{path}"), b"{}"))
    peer.join()
    assert err["code"] == 11
    assert err["details"] == f"{details}; {HINT}"


def test_raw_peer_old_zmtp(shim: Path, sockdir: Path) -> None:
    def script(conn: socket.socket) -> None:
        conn.sendall(b"\xff" + bytes(8) + b"\x7f" + b"\x01")
        _recv_exact(conn, 11)

    path = sockdir / "raw.sock"
    peer = RawPeer(path, script)
    err = error_of(run_shim(shim, cni_env(f"ipc://{path}"), b"{}"))
    peer.join()
    assert err["details"] == f"handshake: the peer speaks ZMTP 1.x, need 3.x; {HINT}"


# ------------------------------------ malformed peers and inputs (shim/check.sh)
# Each must end in a CNI error (or the daemon's answer), never a crash; shim/check.sh
# runs them under AddressSanitizer and UBSan as well.

GOOD_GREETING = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\0") + bytes(32)
REPLY_OK = _frame(MORE, b"") + _frame(MORE, b"0") + _frame(0, b"ok")

# (what the peer sends instead of a greeting, or after the handshake's READY)
MALFORMED_GREETINGS = {
    "not-zmtp": b"HTTP/1.1 400 Bad Request\r\n\r\n" + bytes(40),
    "truncated": GOOD_GREETING[:30],
    "curve": GOOD_GREETING[:12] + b"CURVE".ljust(20, b"\0") + bytes(32),
    "no-ready": GOOD_GREETING,
}
MALFORMED_READY = {
    "empty-command": _frame(COMMAND, b""),
    "name-overruns": _frame(COMMAND, b"\x50READY"),
    "property-name-overruns": _command(b"READY", b"\x0bSocket-Type\x00\x00"),
    "property-value-huge": _command(b"READY", b"\x0bSocket-Type\xff\xff\xff\xffROUTER"),
    "property-size-255": _command(b"READY", b"\xff"),
    "error-reason-overruns": _command(b"ERROR", b"\xffshort"),
    "error-empty": _command(b"ERROR", b""),
    "long-size-2^63": bytes([COMMAND | LONG]) + struct.pack(">Q", 1 << 63),
    "message-not-command": _frame(0, b"hello"),
    "cut-mid-body": bytes([COMMAND, 200]) + b"x" * 10,
    "unknown-command": _command(b"HELLO", b""),
}
# After a good handshake, in place of the reply.
MALFORMED_REPLIES = {
    "17-frames": b"".join(_frame(MORE, b"f") for _ in range(16)) + _frame(0, b"f"),
    "over-max-message": bytes([LONG]) + struct.pack(">Q", (64 << 20) + 1),
    "cut-after-more": _frame(MORE, b""),
    "one-empty-frame": _frame(0, b""),
    "ping-empty-then-ok": _command(b"PING", b"") + REPLY_OK,
    "ping-1-byte-then-ok": _command(b"PING", b"\x00") + REPLY_OK,
    "ping-long-context-then-ok": _command(b"PING", b"\x00\x01" + b"c" * 40) + REPLY_OK,
    "unknown-command-then-ok": _command(b"SUBSCRIBE", b"x") + REPLY_OK,
}


def _drain(conn: socket.socket) -> None:
    """Read until the shim hangs up (it exits after its answer or its timeout)."""
    with contextlib.suppress(OSError):
        while conn.recv(65536):
            pass


def _malformed_peer(stage: str, data: bytes) -> Callable[[socket.socket], None]:
    def script(conn: socket.socket) -> None:
        if stage == "greeting":
            conn.sendall(data)
            if data is not GOOD_GREETING:
                conn.shutdown(socket.SHUT_WR)
            _drain(conn)
            return
        _greet(conn)
        _read_frame(conn)
        if stage == "ready":
            conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            _drain(conn)
            return
        conn.sendall(_ready(Socket_Type=b"ROUTER"))
        while _read_frame(conn)[0] & MORE:
            pass
        conn.sendall(data)
        conn.shutdown(socket.SHUT_WR)
        _drain(conn)

    return script


@pytest.mark.parametrize(
    ("stage", "data"),
    [("greeting", v) for v in MALFORMED_GREETINGS.values()]
    + [("ready", v) for v in MALFORMED_READY.values()]
    + [("reply", v) for v in MALFORMED_REPLIES.values()],
    ids=[f"greeting-{k}" for k in MALFORMED_GREETINGS]
    + [f"ready-{k}" for k in MALFORMED_READY]
    + [f"reply-{k}" for k in MALFORMED_REPLIES],
)
def test_malformed_zmtp_peer(shim: Path, sockdir: Path, stage: str, data: bytes) -> None:
    path = sockdir / "bad.sock"
    peer = RawPeer(path, _malformed_peer(stage, data))
    proc = run_shim(shim, cni_env(f"ipc://{path}", PYROUTE2_CNI_TIMEOUT="2"), b"{}", timeout=20)
    peer.join()
    if data.endswith(REPLY_OK):
        assert (proc.returncode, proc.stdout) == (0, b"ok")
    else:
        assert error_of(proc)["code"] == 11


MALFORMED_STDIN = [
    b'{"a": ' + b"[" * 100_000,
    b'{"a": ' + b"{" * 50_000 + b"}" * 50_001,
    b'{"socket": "\\u',
    b'{"socket": "\\ud800"}',
    b'{"socket": "\\udc00"}',
    b'{"socket": "\\ud800\\u0041"}',
    b'{"socket": "ipc:///x\\u0000y"}',
    b'{"socket": "ipc://' + b"a" * 600 + b'"}',
    b'{"socket": "ipc://' + b"a" * 200 + b'"}',
    b'{"socket": "ipc://@"}',
    b'{"socket\x00": 1, "socket": 5}',
    b'{"' + b"k" * 100 + b'": 1, "socket": 5}',
    b'{"cniVersion": "' + b"v" * 100 + b'"}',
    b'{"cniVersion": "\\ud83d\\ude00\xf4\x90\x80\x80\xed\xa0\x80"}',
    b'{"timeout": 1e999}',
    b'{"timeout": 1e-400}',
    b'{"timeout": ' + b"9" * 70 + b"}",
    b'{"timeout": -0}',
    b'{"timeout": 1.}',
    b'{"a" 1}',
    b'{"a": "\\',
    b"\xef\xbb\xbf",
    b"\xef\xbb",
    b"{",
    b"}",
]


@pytest.mark.parametrize("stdin", MALFORMED_STDIN, ids=range(len(MALFORMED_STDIN)))
def test_malformed_stdin_is_a_cni_error(shim: Path, sockdir: Path, stdin: bytes) -> None:
    env = cni_env(None, PYROUTE2_CNI_TIMEOUT="1")
    env.pop("PYROUTE2_CNI_SOCKET", None)
    if b"socket" not in stdin:
        env["PYROUTE2_CNI_SOCKET"] = f"ipc://{sockdir}/absent.sock"
    err = error_of(run_shim(shim, env, stdin))
    assert err["code"] in (7, 11)


@pytest.mark.parametrize(
    ("name", "value", "code"),
    [
        ("PYROUTE2_CNI_TIMEOUT", "1e309", 4),
        ("PYROUTE2_CNI_TIMEOUT", "-0", 4),
        ("PYROUTE2_CNI_TIMEOUT", "0x10", 4),
        ("PYROUTE2_CNI_TIMEOUT", ".5", 4),
        ("PYROUTE2_CNI_TIMEOUT", "9" * 70, 4),
        ("PYROUTE2_CNI_TIMEOUT", "nan", 4),
        ("PYROUTE2_CNI_SOCKET", "ipc:", 4),
        ("PYROUTE2_CNI_SOCKET", "ipc://" + "a" * 5000, 11),
        ("PYROUTE2_CNI_SOCKET", "ipc://@", 11),
        ("CNI_ARGS", "K=" + "v" * 100_000, 11),
        ("CNI_COMMAND", "\x01ADD\x7f", 11),
    ],
)
def test_malformed_env_is_a_cni_error(
    shim: Path, sockdir: Path, name: str, value: str, code: int
) -> None:
    env = cni_env(f"ipc://{sockdir}/absent.sock", PYROUTE2_CNI_TIMEOUT="1")
    env[name] = value
    assert error_of(run_shim(shim, env, b"{}"))["code"] == code


# ---------------------------------------------------------------- binary


def test_binary_is_static_and_small(shim: Path) -> None:
    ldd = subprocess.run(["ldd", str(shim)], capture_output=True, text=True, check=False)
    assert "not a dynamic executable" in ldd.stdout + ldd.stderr
    size = shim.stat().st_size
    print(f"shim binary size: {size} bytes")
    if shutil.which("musl-gcc"):
        assert size < 100_000


# ----------------------------------------------------- the C JSON scanner

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(10**12), 10**12)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(['"socket": "ipc:///decoy"', "}", "]", "{", "\\", '\\"'])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["socket", "timeout", "a", '"}', "s\\ocket"]) | st.text(max_size=6),
            inner,
            max_size=4,
        )
    ),
    max_leaves=25,
)
top_keys = st.text(max_size=8).filter(lambda k: k not in {"socket", "timeout"})


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    before=st.dictionaries(top_keys, json_value, max_size=5),
    after=st.dictionaries(top_keys, json_value, max_size=3),
    name=st.text(
        st.characters(exclude_characters="\x00/", exclude_categories=["Cs"]),
        min_size=1,
        max_size=30,
    ),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 0, 2]),
)
def test_json_scanner_finds_top_level_socket(
    shim: Path,
    sockdir: Path,
    before: dict[str, Any],
    after: dict[str, Any],
    name: str,
    ensure_ascii: bool,
    indent: int | None,
) -> None:
    endpoint = f"ipc://{sockdir}/{name}"
    doc = {**before, "socket": endpoint, **{k: v for k, v in after.items() if k not in before}}
    config = json.dumps(doc, ensure_ascii=ensure_ascii, indent=indent).encode()
    err = error_of(run_shim(shim, cni_env(None), config))
    assert err["msg"] == f"pyroute2-cni daemon is not answering on {endpoint}"
    assert err["code"] == 11


# ----------------------------------------------------------------- codec


def test_codec_round_trip() -> None:
    request = ShimRequest(
        command="DEL", container_id="abc", ifname="eth1", args="K8S_POD_UID=u", stdin=b"{}"
    )
    frames = encode_request(request)
    assert (
        frames[1]
        == b"CNI_COMMAND=DEL\nCNI_CONTAINERID=abc\nCNI_IFNAME=eth1\nCNI_ARGS=K8S_POD_UID=u\n"
    )
    assert parse_request(frames) == request
    assert encode_reply(0, b"ok") == [b"0", b"ok"]
    assert encode_reply(255, b"") == [b"255", b""]


def test_split_envelope() -> None:
    assert split_envelope([b"\x00id", b"", b"tag", b"env", b""]) == (
        [b"\x00id", b""],
        [b"tag", b"env", b""],
    )
    with pytest.raises(BadRequest, match="delimiter"):
        split_envelope([b"\x00id", b"tag"])


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([PROTOCOL_TAG, b"CNI_COMMAND=ADD\n"], "expected 3 frames"),
        ([b"PYROUTE2-CNI/2", b"CNI_COMMAND=ADD\n", b""], "protocol tag"),
        ([PROTOCOL_TAG, b"CNI_IFNAME=eth0\n", b""], "CNI_COMMAND is missing"),
        ([PROTOCOL_TAG, b"CNI_COMMAND=\n", b""], "CNI_COMMAND is missing"),
        ([PROTOCOL_TAG, b"CNI_COMMAND=ADD", b""], "newline"),
        ([PROTOCOL_TAG, b"CNI_COMMAND=ADD\nbogus\n", b""], "no '='"),
        ([PROTOCOL_TAG, b"CNI_COMMAND=ADD\nHOME=/root\n", b""], "unexpected variable"),
        ([PROTOCOL_TAG, b"CNI_COMMAND=ADD\nCNI_COMMAND=DEL\n", b""], "given twice"),
        ([PROTOCOL_TAG, b"CNI_COMMAND=ADD\nCNI_ARGS=\xff\n", b""], "not UTF-8"),
    ],
)
def test_parse_request_rejects(frames: list[bytes], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse_request(frames)
    assert issubclass(BadRequest, ValueError)


@pytest.mark.parametrize("status", [-1, 256, True])
def test_encode_reply_rejects(status: int) -> None:
    with pytest.raises(ValueError, match="exit status"):
        encode_reply(status, b"")
