"""A real etcd + kube-apiserver on loopback, for the ``api`` test tier and the lab.

``ApiServer`` starts etcd (``--unsafe-no-fsync``, data in a temporary directory) and
kube-apiserver 1.20.2 built by ``scripts/build-kube-apiserver.sh`` (cached outside the
repository, see :func:`kube_apiserver_binary`).  The API server listens on 127.0.0.1 with a
self-signed CA, authenticates one ``system:masters`` bearer token and authorizes with RBAC.

Usage::

    with ApiServer() as api:
        client = api.api_client()
        ...

Command line (used by ``make lab``)::

    python -m tests.harness.apiserver run --state-dir DIR

starts both, writes ``DIR/kubeconfig`` and ``DIR/pids``, prints the kubeconfig path and
runs until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING, TypeVar

from tests.harness.lifecycle import Service

if TYPE_CHECKING:
    import kubernetes.client

KUBE_VERSION = "1.20.2"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-kube-apiserver.sh"
DEFAULT_START_TIMEOUT = 120.0
ADMIN_USER = "pyroute2-cni-admin"

T = TypeVar("T")


class ApiServerError(RuntimeError):
    """etcd or kube-apiserver failed to start or died."""


def cache_root() -> Path:
    return Path(os.environ.get("PYROUTE2_CNI_CACHE", "/var/cache/pyroute2-cni"))


def kube_apiserver_path() -> Path:
    """Where the build script caches the binary (keyed by version)."""
    return cache_root() / f"kube-apiserver-{KUBE_VERSION}" / "kube-apiserver"


def in_guest() -> bool:
    """True inside a guest started by scripts/uml-run (it sets PYROUTE2_CNI_IN_GUEST)."""
    return bool(os.environ.get("PYROUTE2_CNI_IN_GUEST"))


def missing_build_message(path: Path) -> str:
    return f"kube-apiserver {KUBE_VERSION} is not built ({path}): run `make kube-apiserver` first"


def kube_apiserver_binary(build: bool = True) -> Path:
    """Return the cached kube-apiserver, running the build script when it is missing."""
    path = kube_apiserver_path()
    if os.access(path, os.X_OK):
        return path
    # A guest (scripts/uml-run) has no network and must never build: the host builds first.
    if not build or in_guest():
        raise ApiServerError(missing_build_message(path))
    result = subprocess.run(
        ["bash", str(BUILD_SCRIPT)],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ApiServerError(f"{BUILD_SCRIPT} failed with exit code {result.returncode}")
    built = Path(lines[-1])
    if not os.access(built, os.X_OK):
        raise ApiServerError(f"{BUILD_SCRIPT} printed {built}, which is not executable")
    return built


def poll_until(
    probe: Callable[[], T | None],
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call ``probe`` until it returns something other than None (or False); return it.

    Raises TimeoutError after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None and value is not False:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.1f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the process that started it exits."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ApiServerError(f"openssl {' '.join(args)} failed:\n{result.stdout}")


def make_certificates(directory: Path) -> None:
    """Write ca.crt, server.crt/server.key (127.0.0.1, localhost) and sa.key/sa.pub."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "3650",
        "-subj",
        "/CN=pyroute2-cni-test-ca",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )
    _openssl(
        "req",
        "-new",
        *ec,
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=kube-apiserver",
        cwd=directory,
    )
    (directory / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-extfile",
        "server.ext",
        "-out",
        "server.crt",
        cwd=directory,
    )
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=directory)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=directory)


class ApiServer(Service):
    """etcd + kube-apiserver on loopback; see the module docstring."""

    def __init__(
        self,
        *,
        start_timeout: float | None = None,
        binary: str | os.PathLike[str] | None = None,
        etcd_binary: str = "etcd",
        log_dir: str | os.PathLike[str] | None = None,
        kubeconfig_path: str | os.PathLike[str] | None = None,
        extra_args: Sequence[str] = (),
        die_with_parent: bool = True,
    ) -> None:
        if start_timeout is None:
            start_timeout = float(
                os.environ.get("PYROUTE2_CNI_API_START_TIMEOUT", DEFAULT_START_TIMEOUT)
            )
        self.start_timeout = start_timeout
        self._binary = Path(binary) if binary is not None else None
        self._etcd_binary = etcd_binary
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._kubeconfig_path = Path(kubeconfig_path) if kubeconfig_path is not None else None
        self._extra_args = list(extra_args)
        self._die_with_parent = die_with_parent
        self.token = secrets.token_hex(24)
        self._tmp: Path | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._logs: list[IO[bytes]] = []
        self._etcd_url = ""
        self._port = 0
        self._lock = threading.Lock()
        self.start_seconds = 0.0

    # -- public properties -----------------------------------------------------------

    @property
    def url(self) -> str:
        self._require_running()
        return f"https://127.0.0.1:{self._port}"

    @property
    def ca_file(self) -> str:
        return str(self._workdir() / "ca.crt")

    @property
    def service_account_key(self) -> Path:
        """The key service account tokens are signed with (kube-controller-manager's)."""
        return self._workdir() / "sa.key"

    @property
    def kubeconfig(self) -> str:
        self._require_running()
        if self._kubeconfig_path is not None:
            return str(self._kubeconfig_path)
        return str(self._workdir() / "kubeconfig")

    @property
    def etcd_url(self) -> str:
        self._require_running()
        return self._etcd_url

    @property
    def pids(self) -> dict[str, int]:
        out: dict[str, int] = {}
        if self._etcd is not None:
            out["etcd"] = self._etcd.pid
        if self._apiserver is not None:
            out["kube-apiserver"] = self._apiserver.pid
        return out

    @property
    def log_dir(self) -> Path:
        return self._log_dir if self._log_dir is not None else self._workdir()

    def running(self) -> bool:
        procs = (self._etcd, self._apiserver)
        return all(p is not None and p.poll() is None for p in procs)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        with self._lock:
            if self._tmp is not None:
                raise ApiServerError("already started")
            began = time.monotonic()
            binary = self._binary if self._binary is not None else kube_apiserver_binary()
            self._tmp = Path(tempfile.mkdtemp(prefix="pyroute2-cni-apiserver-"))
            try:
                if self._log_dir is not None:
                    self._log_dir.mkdir(parents=True, exist_ok=True)
                make_certificates(self._tmp)
                (self._tmp / "tokens.csv").write_text(
                    f'{self.token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
                )
                deadline = began + self.start_timeout
                self._start_etcd(deadline)
                self._start_apiserver(binary, deadline)
                self._write_kubeconfig()
            except BaseException:
                self._stop_locked()
                raise
            self.start_seconds = time.monotonic() - began

    def stop(self) -> None:
        with self._lock:
            self._stop_locked()

    def restart_apiserver(self) -> float:
        """Kill kube-apiserver with SIGKILL and start it again on the same port and
        kubeconfig (etcd keeps running); returns the seconds until it is ready again.

        For fault-injection tests: requests in flight are cut, possibly after they
        committed.
        """
        with self._lock:
            proc = self._apiserver
            if proc is None:
                raise ApiServerError("restart_apiserver: not started (call start() first)")
            began = time.monotonic()
            argv = [str(arg) for arg in proc.args]  # type: ignore[union-attr]
            proc.kill()
            proc.wait()
            self._apiserver = self._spawn("kube-apiserver", argv)
            if not self._wait(
                "kube-apiserver", self._apiserver, self._apiserver_ready, began + self.start_timeout
            ):
                raise ApiServerError(
                    "kube-apiserver exited during restart; log tail:\n"
                    + self._log_tail("kube-apiserver")
                )
            return time.monotonic() - began

    # -- clients -------------------------------------------------------------------------

    def api_client(self) -> kubernetes.client.ApiClient:
        """A new ``kubernetes.client.ApiClient`` talking to this server (caller closes it)."""
        import kubernetes.client

        config = kubernetes.client.Configuration()
        config.host = self.url
        config.api_key = {"authorization": self.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        config.ssl_ca_cert = self.ca_file
        config.verify_ssl = True
        return kubernetes.client.ApiClient(configuration=config)

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.ca_file)

    def request(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET ``path`` with the admin token; returns (status, body) for any HTTP status."""
        req = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return int(resp.status), bytes(resp.read())
        except urllib.error.HTTPError as err:
            with err:
                return int(err.code), bytes(err.read())

    # -- internals -----------------------------------------------------------------------

    def _workdir(self) -> Path:
        if self._tmp is None:
            raise ApiServerError("not started")
        return self._tmp

    def _require_running(self) -> None:
        if self._tmp is None or self._apiserver is None:
            raise ApiServerError("not started")

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        self._logs.append(log)
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._workdir(),
            preexec_fn=_die_with_parent if self._die_with_parent else None,
        )

    def _log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _wait(
        self,
        name: str,
        proc: subprocess.Popen[bytes],
        probe: Callable[[], bool],
        deadline: float,
    ) -> bool:
        """Poll ``probe`` until it holds; False if ``proc`` exited first (error if late)."""

        def check() -> bool | None:
            if proc.poll() is not None:
                return True
            return True if probe() else None

        try:
            poll_until(check, max(deadline - time.monotonic(), 0.0), 0.1, f"{name} ready")
        except TimeoutError as err:
            raise ApiServerError(
                f"{name} not ready after {self.start_timeout:.0f} s; log tail:\n"
                + self._log_tail(name)
            ) from err
        return proc.poll() is None

    def _start_etcd(self, deadline: float) -> None:
        data = self._workdir() / "etcd-data"
        for _attempt in range(5):
            client, peer = free_port(), free_port()
            self._etcd_url = f"http://127.0.0.1:{client}"
            peer_url = f"http://127.0.0.1:{peer}"
            shutil.rmtree(data, ignore_errors=True)
            proc = self._spawn(
                "etcd",
                [
                    self._etcd_binary,
                    "--name=default",
                    f"--data-dir={data}",
                    f"--listen-client-urls={self._etcd_url}",
                    f"--advertise-client-urls={self._etcd_url}",
                    f"--listen-peer-urls={peer_url}",
                    f"--initial-advertise-peer-urls={peer_url}",
                    f"--initial-cluster=default={peer_url}",
                    "--initial-cluster-state=new",
                    "--unsafe-no-fsync",
                    "--logger=zap",
                    "--log-level=warn",
                    "--quota-backend-bytes=1073741824",
                ],
            )
            self._etcd = proc
            if self._wait("etcd", proc, self._etcd_healthy, deadline):
                return
            proc.wait()
            self._etcd = None
            if "address already in use" not in self._log_tail("etcd"):
                break
        raise ApiServerError("etcd exited during start; log tail:\n" + self._log_tail("etcd"))

    def _etcd_healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self._etcd_url + "/health", timeout=2) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError, http.client.HTTPException):
            return False
        return isinstance(body, dict) and body.get("health") == "true"

    def _start_apiserver(self, binary: Path, deadline: float) -> None:
        work = self._workdir()
        (work / "cert-dir").mkdir(exist_ok=True)
        for _attempt in range(5):
            self._port = free_port()
            argv = [
                str(binary),
                f"--etcd-servers={self._etcd_url}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={self._port}",
                "--insecure-port=0",
                f"--cert-dir={work / 'cert-dir'}",
                f"--tls-cert-file={work / 'server.crt'}",
                f"--tls-private-key-file={work / 'server.key'}",
                f"--token-auth-file={work / 'tokens.csv'}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={work / 'sa.pub'}",
                f"--service-account-signing-key-file={work / 'sa.key'}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                "--service-cluster-ip-range=10.96.0.0/16",
                "--endpoint-reconciler-type=none",
                "--allow-privileged=true",
                # exec and logs dial a kubelet at its node's address, never its name
                # (which only a DNS server outside the test could resolve).
                "--kubelet-preferred-address-types=InternalIP",
                "--profiling=false",
                "--enable-priority-and-fairness=false",
                "--logtostderr=true",
                "--v=1",
                *self._extra_args,
            ]
            proc = self._spawn("kube-apiserver", argv)
            self._apiserver = proc
            if self._wait("kube-apiserver", proc, self._apiserver_ready, deadline):
                return
            proc.wait()
            self._apiserver = None
            if "address already in use" not in self._log_tail("kube-apiserver"):
                break
        raise ApiServerError(
            "kube-apiserver exited during start; log tail:\n" + self._log_tail("kube-apiserver")
        )

    def _apiserver_ready(self) -> bool:
        try:
            status, _ = self.request("/readyz", timeout=5)
            if status != 200:
                return False
            # The bootstrap controller creates the default namespace shortly after start.
            status, _ = self.request("/api/v1/namespaces/default", timeout=5)
        except (OSError, http.client.HTTPException):
            return False
        return status == 200

    def kubeconfig_dict(self) -> dict[str, object]:
        ca = base64.b64encode(Path(self.ca_file).read_bytes()).decode()
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "pyroute2-cni-test",
                    "cluster": {"server": self.url, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": ADMIN_USER, "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "pyroute2-cni-test",
                    "context": {"cluster": "pyroute2-cni-test", "user": ADMIN_USER},
                }
            ],
            "current-context": "pyroute2-cni-test",
            "preferences": {},
        }

    def _write_kubeconfig(self) -> None:
        path = Path(self.kubeconfig)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(self.kubeconfig_dict(), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)

    def _stop_locked(self) -> None:
        for attr in ("_apiserver", "_etcd"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is None:
                continue
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            setattr(self, attr, None)
        for log in self._logs:
            log.close()
        self._logs.clear()
        if self._kubeconfig_path is not None and self._tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._kubeconfig_path.unlink()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


# -- command line ------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    state = Path(args.state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = ApiServer(
        start_timeout=args.start_timeout,
        log_dir=state / "logs",
        kubeconfig_path=state / "kubeconfig",
    )
    pids_file = state / "pids"
    try:
        server.start()
        pids = {"harness": os.getpid(), **server.pids}
        pids_file.write_text("".join(f"{name} {pid}\n" for name, pid in pids.items()))
        print(
            f"apiserver ready at {server.url} in {server.start_seconds:.1f} s",
            file=sys.stderr,
            flush=True,
        )
        print(server.kubeconfig, flush=True)
        while not stop.wait(1.0):
            if not server.running():
                print("etcd or kube-apiserver exited; stopping", file=sys.stderr, flush=True)
                return 1
        return 0
    finally:
        server.stop()
        with contextlib.suppress(FileNotFoundError):
            pids_file.unlink()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.harness.apiserver",
        description="Run a real etcd + kube-apiserver on loopback.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start and keep running until SIGTERM/SIGINT")
    run.add_argument("--state-dir", required=True, help="writes kubeconfig, pids and logs/")
    run.add_argument(
        "--start-timeout",
        type=float,
        default=float(os.environ.get("PYROUTE2_CNI_API_START_TIMEOUT", DEFAULT_START_TIMEOUT)),
        help="seconds to wait for /readyz (default %(default)s)",
    )
    sub.add_parser("build", help="build (or find) the cached kube-apiserver and print its path")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(kube_apiserver_binary())
        return 0
    return _run(args)


if __name__ == "__main__":
    sys.exit(main())
