"""Every golden frr.conf must pass the real FRR parser (frr-reload.py --test).

One FRR instance (zebra, bgpd, staticd) runs in a fresh network namespace
with its own pathspace (-N): config in /etc/frr/<name>, sockets and pid files
in /run/frr/<name>.  No VRF devices are needed: FRR parses and holds VRF
configuration for VRFs the kernel does not have yet.

Inside User-Mode Linux each frr-reload.py call costs about 2 s, so this module
starts FRR once and runs one call per golden file, one for the broken file and
three for the reload round trip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "golden" / "frr"
GOLDEN_FILES = sorted(GOLDEN_DIR.glob("*.conf"))
FRR_BIN = Path("/usr/lib/frr")
RELOAD = FRR_BIN / "frr-reload.py"
DAEMONS = ("zebra", "bgpd", "staticd")
IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin") or "/usr/sbin/ip"
VTYSH = shutil.which("vtysh", path="/usr/bin:/bin") or "/usr/bin/vtysh"

START_TIMEOUT = 30.0  # daemons up and vty sockets present (UML is slow)
CALL_TIMEOUT = 120.0  # one vtysh / frr-reload.py call
STOP_TIMEOUT = 10.0  # SIGTERM to exit, per daemon, before SIGKILL

BASE_CONFIG = """\
frr defaults traditional
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
!
end
"""


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    for path in (*(FRR_BIN / d for d in DAEMONS), RELOAD, Path(VTYSH), Path(IP)):
        if not path.exists():
            return f"{path} not installed (frr, frr-pythontools)"
    try:
        pwd.getpwnam("frr")
    except KeyError:
        return "no user frr"
    return None


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=CALL_TIMEOUT, check=check)


def _own(path: Path) -> None:
    shutil.chown(path, user="frr", group="frr")


class FrrInstance:
    """zebra + bgpd + staticd in netns `name`, pathspace `name`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.conf_dir = Path("/etc/frr") / name
        self.run_dir = Path("/run/frr") / name
        self.pids: list[int] = []
        self.crash_dir = Path("/var/tmp/frr")  # FRR makes it; empty after a clean exit
        self.crash_dir_existed = self.crash_dir.exists()

    def start(self) -> None:
        _run(IP, "netns", "add", self.name)
        _run(IP, "-n", self.name, "link", "set", "lo", "up")
        for directory in (self.conf_dir, self.run_dir):
            directory.mkdir(parents=True, exist_ok=False)
            _own(directory)
        for filename, text in (
            ("frr.conf", BASE_CONFIG),
            ("vtysh.conf", "service integrated-vtysh-config\n"),
        ):
            path = self.conf_dir / filename
            path.write_text(text)
            _own(path)
        for daemon in DAEMONS:
            _run(
                IP, "netns", "exec", self.name, str(FRR_BIN / daemon),
                "-d", "-N", self.name, "-P", "0", "-F", "traditional",
                "-u", "frr", "-g", "frr",
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not all((self.run_dir / f"{d}.vty").exists() for d in DAEMONS):
            if time.monotonic() > deadline:
                raise TimeoutError(f"FRR vty sockets missing in {self.run_dir}")
            time.sleep(0.1)
        self.pids = [self._pid(d) for d in DAEMONS]
        _run(VTYSH, "-N", self.name, "-b")  # load the base configuration

    def _pid(self, daemon: str) -> int:
        return int((self.run_dir / f"{daemon}.pid").read_text().strip())

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"-N" in argv and self.name.encode() in argv

    def stop(self) -> None:
        pids = list(self.pids)
        for daemon in DAEMONS:  # also daemons started before a failed start()
            with contextlib.suppress(OSError, ValueError):
                pids.append(self._pid(daemon))
        for pid in sorted(set(pids), reverse=True):  # zebra, started first, last
            if not self._is_ours(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT
            while self._is_ours(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if self._is_ours(pid):
                os.kill(pid, signal.SIGKILL)
        _run(IP, "netns", "del", self.name, check=False)
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)
        if not self.crash_dir_existed:
            with contextlib.suppress(OSError):
                self.crash_dir.rmdir()

    def reload(self, mode: str, path: Path) -> subprocess.CompletedProcess[str]:
        return _run(str(RELOAD), mode, "--stdout", "-N", self.name, str(path), check=False)


@pytest.fixture(scope="module")
def frr() -> Iterator[FrrInstance]:
    reason = _missing()
    if reason:
        pytest.fail(reason)
    instance = FrrInstance(f"p2cni-golden-{os.getpid()}")
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


def _differences(output: str) -> list[str]:
    """The lines frr-reload.py --test would change, minus the host's hostname.

    FRR always shows `hostname <uname>`; the rendered file has no hostname
    line on purpose, so `no hostname ...` is the one expected difference.
    """
    lines = []
    section = False
    for line in output.splitlines():
        if line in ("Lines To Delete", "Lines To Add"):
            section = True
            continue
        if not section or not line.strip() or set(line) == {"="}:
            continue
        if line.startswith(("no hostname ", "hostname ")):
            continue
        lines.append(line)
    return lines


def test_golden_files_exist() -> None:
    assert len(GOLDEN_FILES) >= 6, f"golden files missing in {GOLDEN_DIR}"


@pytest.mark.parametrize("golden", GOLDEN_FILES, ids=[p.stem for p in GOLDEN_FILES])
def test_golden_file_parses(frr: FrrInstance, golden: Path) -> None:
    result = frr.reload("--test", golden)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vtysh failed" not in result.stderr
    assert "router bgp 65000" in result.stdout  # the diff against the base config


def test_broken_config_fails(frr: FrrInstance, tmp_path: Path) -> None:
    text = (GOLDEN_DIR / "l2vni-l3vni.conf").read_text()
    broken = tmp_path / "broken.conf"
    broken.write_text(text.replace("router bgp 65000\n", "router bgp notanumber\n", 1))
    result = frr.reload("--test", broken)
    assert result.returncode != 0
    assert "Unknown command: router bgp notanumber" in result.stderr


def test_reload_adds_a_domain_and_peers_then_nothing_left_to_change(
    frr: FrrInstance, tmp_path: Path
) -> None:
    """single-node-vrf42 -> l2vni-l3vni: new peers and a new VRF in one reload.

    The VRF bindings go in first (vtysh -f), as frr_model's docstring tells the
    FRRActor: without them frr-reload.py 8.4 parses the new `vrf vrf-200` block
    inside `router bgp`.  Afterwards FRR runs exactly the rendered file.
    """
    first = frr.reload("--reload", GOLDEN_DIR / "single-node-vrf42.conf")
    assert first.returncode == 0, first.stdout + first.stderr
    golden = GOLDEN_DIR / "l2vni-l3vni.conf"
    bindings = tmp_path / "bindings.conf"
    bindings.write_text(
        "".join(re.findall(r"^vrf \S+\n vni \d+\nexit-vrf\n", golden.read_text(), re.M))
    )
    _run(VTYSH, "-N", frr.name, "-f", str(bindings))
    applied = frr.reload("--reload", golden)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "Configuration failed" not in applied.stdout + applied.stderr
    again = frr.reload("--test", golden)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _differences(again.stdout) == []
