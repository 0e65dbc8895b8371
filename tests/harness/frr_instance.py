"""FRR as the FRR container runs it (watchfrr starting zebra, bgpd and staticd with the
options of frr/daemons), one instance per network namespace and FRR pathspace.

Used by the lab's nodes and reflector and by the kernel tier's FRR tests.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.harness.procs import (
    HarnessError,
    alive,
    in_netns,
    ip,
    kill_pids,
    remove_netns,
    run,
    wait_until,
)

# The FRR image's daemon list and options (the lab runs FRR the way the image does).
FRR_DAEMONS_FILE = Path(__file__).resolve().parents[2] / "frr" / "daemons"
FRR_BIN = Path("/usr/lib/frr")
FRR_DAEMONS = ("zebra", "bgpd", "staticd")
VTYSH = "/usr/bin/vtysh"
FRR_START_TIMEOUT = 60.0


def _frr_options() -> dict[str, list[str]]:
    """The daemon options the FRR container uses (frr/daemons), so the lab runs FRR the same."""
    options = {d: ["-P", "0"] for d in FRR_DAEMONS}
    options["watchfrr"] = []
    if FRR_DAEMONS_FILE.is_file():
        for line in FRR_DAEMONS_FILE.read_text().splitlines():
            m = re.match(r'^(\w+)_options="(.*)"\s*$', line.strip())
            if m and m.group(1) in options:
                options[m.group(1)] = shlex.split(m.group(2))
    return options


FRR_BASE_CONFIG = """\
frr defaults traditional
log syslog informational
no ipv6 forwarding
service integrated-vtysh-config
!
end
"""


@contextlib.contextmanager
def frr_in_new_netns(name: str, config: str | None = None) -> Iterator[FrrInstance]:
    """A namespace of its own (lo up) with FRR in it, as kernel tests want it; the daemons,
    their directories and the namespace are gone afterwards."""
    ip("netns", "add", name)
    frr = FrrInstance(name)
    try:
        ip("link", "set", "lo", "up", netns=name)
        frr.start(config)
        yield frr
    finally:
        frr.remove()
        remove_netns(name)


class FrrInstance:
    """zebra + bgpd + staticd in network namespace ``name`` with FRR pathspace ``name``.

    Config in /etc/frr/<name>/frr.conf, vty sockets and pid files in /run/frr/<name>/, both
    owned by user frr (see notes/test-infra.md).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.conf_dir = Path("/etc/frr") / name
        self.run_dir = Path("/run/frr") / name
        self.config_file = self.conf_dir / "frr.conf"
        self.watchfrr_log = self.run_dir / "watchfrr.log"
        self._watchfrr: subprocess.Popen[bytes] | None = None

    def start(self, config: str | None = None) -> None:
        """Start the daemons; ``config`` replaces frr.conf, else the last one (or the base)."""
        if self.running():
            raise HarnessError(f"FRR {self.name} is already running")
        for directory in (self.conf_dir, self.run_dir, Path("/var/tmp/frr")):
            directory.mkdir(parents=True, exist_ok=True)
            shutil.chown(directory, "frr", "frr")
        if config is not None or not self.config_file.exists():
            self.config_file.write_text(config if config is not None else FRR_BASE_CONFIG)
        vtysh_conf = self.conf_dir / "vtysh.conf"
        vtysh_conf.write_text("service integrated-vtysh-config\n")
        for path in (self.config_file, vtysh_conf):
            shutil.chown(path, "frr", "frr")
        # watchfrr.sh (frrcommon.sh) reads the daemon list and options from here.
        daemons = self.conf_dir / "daemons"
        shutil.copyfile(FRR_DAEMONS_FILE, daemons)
        shutil.chown(daemons, "frr", "frr")
        for daemon in FRR_DAEMONS:
            (self.run_dir / f"{daemon}.vty").unlink(missing_ok=True)
        # As frr/entrypoint.sh does in the FRR container: only watchfrr is started.  It
        # finds no daemon, runs `watchfrr.sh restart all` (start each, then `vtysh -b`),
        # and restarts any daemon that dies, loading its part of frr.conf (`vtysh -b -d`).
        argv = [
            str(FRR_BIN / "watchfrr"),
            "-N",
            self.name,
            *_frr_options()["watchfrr"],
            *FRR_DAEMONS,
        ]
        with self.watchfrr_log.open("ab") as log:
            self._watchfrr = subprocess.Popen(
                in_netns(self.name, argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(
            lambda: self.running() and not self._starting(),
            FRR_START_TIMEOUT,
            f"FRR {self.name} started by watchfrr (see {self.watchfrr_log})",
            0.2,
        )

    def _starting(self) -> bool:
        """watchfrr still runs a start or restart command (a child process)."""
        watchfrr = self._watchfrr
        if watchfrr is None or watchfrr.poll() is not None:
            return False
        children = Path(f"/proc/{watchfrr.pid}/task/{watchfrr.pid}/children")
        try:
            return bool(children.read_text().split())
        except OSError:
            return False

    def pids(self) -> list[int]:
        pids = []
        for daemon in FRR_DAEMONS:
            with contextlib.suppress(OSError, ValueError):
                pid = int((self.run_dir / f"{daemon}.pid").read_text().strip())
                if self._is_ours(pid):
                    pids.append(pid)
        return pids

    def _is_ours(self, pid: int) -> bool:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"-N" in argv and self.name.encode() in argv and alive(pid)

    def running(self) -> bool:
        return len(self.pids()) == len(FRR_DAEMONS)

    def daemon_pid(self, daemon: str) -> int | None:
        """The live pid of one of this instance's daemons (its pid file), else None."""
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.run_dir / f"{daemon}.pid").read_text().strip())
            if self._is_ours(pid):
                return pid
        return None

    def kill(self, daemon: str) -> int:
        """SIGKILL one daemon (a crash); returns the pid it had."""
        pid = self.daemon_pid(daemon)
        if pid is None:
            raise HarnessError(f"{daemon} of FRR {self.name} is not running")
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not alive(pid) or None, 10, f"{daemon} of FRR {self.name} gone")
        return pid

    def _stop_watchfrr(self, hard: bool) -> None:
        """watchfrr exits (its daemons stay): nothing restarts them any more."""
        watchfrr, self._watchfrr = self._watchfrr, None
        if watchfrr is None:
            return
        if hard:
            watchfrr.kill()
        else:
            watchfrr.terminate()
        try:
            watchfrr.wait(timeout=10)
        except subprocess.TimeoutExpired:
            watchfrr.kill()
            watchfrr.wait()

    def stop_daemon(self, daemon: str) -> None:
        """Stop one daemon for good (SIGTERM), as an operator or a crash loop would:
        watchfrr goes first, or it would start it again.  stop() then start() brings
        all back."""
        self._stop_watchfrr(hard=False)
        pid = self.daemon_pid(daemon)
        if pid is None:
            raise HarnessError(f"{daemon} of FRR {self.name} is not running")
        kill_pids([pid])

    def stop(self, hard: bool = False) -> None:
        """SIGTERM (or SIGKILL when ``hard``) the daemons, zebra first, as the FRR
        container's entrypoint does: zebra (--retain) leaves the kernel routes, and
        bgpd's shutdown then cannot withdraw them.  watchfrr goes first, or it would
        start them again."""
        self._stop_watchfrr(hard)
        pids = self.pids()
        if hard:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not any(alive(p) for p in pids) or None, 10, f"FRR {self.name} gone")
            return
        for pid in pids:
            kill_pids([pid])

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.conf_dir, ignore_errors=True)
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def reload(self, mode: str, path: Path) -> subprocess.CompletedProcess[str]:
        """``frr-reload.py MODE --stdout`` (--test or --reload) of the file at ``path``."""
        argv = [str(FRR_BIN / "frr-reload.py"), mode, "--stdout", "-N", self.name, str(path)]
        return run(argv, check=False, timeout=120)

    def vtysh(self, *commands: str, check: bool = True) -> str:
        argv = [VTYSH, "-N", self.name]
        for command in commands:
            argv += ["-c", command]
        return run(argv, check=check).stdout

    def vtysh_json(self, command: str) -> Any:
        out = self.vtysh(command, check=False)
        try:
            return json.loads(out or "null")
        except json.JSONDecodeError:
            return None

    def bgp_sessions(self) -> dict[str, str]:
        """Neighbour -> state from ``show bgp l2vpn evpn summary json``."""
        data = self.vtysh_json("show bgp l2vpn evpn summary json")
        peers = data.get("peers") if isinstance(data, dict) else None
        if not isinstance(peers, dict):
            return {}
        return {str(k): str(v.get("state", "?")) for k, v in peers.items() if isinstance(v, dict)}
