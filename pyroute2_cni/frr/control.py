"""The FRR edge: write frr.conf atomically, validate and reload with frr-reload.py,
read state from vtysh JSON.  Only FRRActor uses it; tests substitute a fake.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pyroute2_cni.frr.vty import VtyClient, VtyError
from pyroute2_cni.runtime.config import FrrSection

# Every wait is a server.ini [frr] key: reload_timeout (frr-reload.py), vtysh_timeout
# (a vtysh process), vty_timeout (one vty socket ask); config.frr_apply_bound adds
# them up for the hung limit.  Keep in sync with it.


@dataclass(frozen=True, slots=True, kw_only=True)
class CommandResult:
    ok: bool
    output: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FrrState:
    # BGP session states ("Established", "Active", ...) by neighbour address.
    sessions: dict[str, str]
    # L3VNIs zebra has mapped to a VRF with a VXLAN device: vrf name -> vni.
    l3vnis: dict[str, int]
    # L2VNIs zebra knows.
    l2vnis: frozenset[int]
    # Seconds each Established session has been up.
    uptimes: dict[str, float] = field(default_factory=dict)
    # False when bgpd did not answer (FRR down or restarting).
    answered: bool = True
    # Seconds since zebra started (its vty socket's age); 0.0 while it does not answer,
    # None when unknown.
    zebra_uptime: float | None = None


class FrrControl(Protocol):
    def available(self) -> str | None:
        """None when FRR can be driven; else what is missing and what to do."""

    def validate(self, text: str) -> CommandResult: ...

    def apply(self, text: str, vrf_bindings: str) -> CommandResult: ...

    def restore(self, text: str | None) -> CommandResult:
        """After a failed apply: FRR runs `text` again (None: frr.conf as it was before
        that apply), checked with frr-reload.py --test; ok only when no difference is left."""

    def running_config(self) -> str | None:
        """zebra's and bgpd's `show running-config`; None when one does not answer."""

    def state(self) -> FrrState: ...

    def close(self) -> None:
        """Let go of what the control keeps open (vty sockets)."""


class FrrProcessControl:
    def __init__(self, settings: FrrSection) -> None:
        self._s = settings
        # frr.conf as it was before the last apply: what a failed first apply restores.
        self._kept_before: str | None = None
        vty_dir = Path(settings.vty_dir) / settings.pathspace
        self._zebra_socket = vty_dir / "zebra.vty"
        self._vty = {
            daemon: VtyClient(vty_dir / f"{daemon}.vty", settings.vty_timeout)
            for daemon in ("bgpd", "zebra")
        }

    def _pathspace(self) -> list[str]:
        return ["-N", self._s.pathspace] if self._s.pathspace else []

    def available(self) -> str | None:
        for tool in (self._s.vtysh, self._s.reload_command):
            if not os.access(tool, os.X_OK):
                return (
                    f"{tool} is missing or not executable: FRR (frr and frr-pythontools) "
                    "must be installed; in Kubernetes the pyroute2-frr container provides it"
                )
        probe = self._run(
            [self._s.vtysh, *self._pathspace(), "-c", "show version"], self._s.vtysh_timeout
        )
        if not probe.ok:
            return f"vtysh cannot reach FRR: {probe.output.strip()[:200]}; is FRR running?"
        return None

    def _run(self, argv: list[str], timeout: float, stdout_only: bool = False) -> CommandResult:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return CommandResult(ok=False, output=f"{argv[0]} did not finish in {timeout:g} s")
        except OSError as exc:
            return CommandResult(ok=False, output=f"{argv[0]}: {exc.strerror}")
        output = proc.stdout if stdout_only else proc.stdout + proc.stderr
        return CommandResult(ok=proc.returncode == 0, output=output)

    def _candidate(self, text: str) -> Path:
        target = Path(self._s.config_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".frr.conf.", suffix=".new", dir=target.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(name, 0o644)
        return Path(name)

    def _reload(self, mode: str, path: Path) -> CommandResult:
        argv = [self._s.reload_command, mode, "--stdout", *self._pathspace(), str(path)]
        return self._run(argv, self._s.reload_timeout)

    def validate(self, text: str) -> CommandResult:
        candidate = self._candidate(text)
        try:
            return self._reload("--test", candidate)
        finally:
            candidate.unlink(missing_ok=True)

    def apply(self, text: str, vrf_bindings: str) -> CommandResult:
        """Reload FRR to `text`; frr.conf is replaced only after the reload succeeded.

        A failed reload leaves FRR running a mix of old and new, and frr-reload.py's
        closing `write` has put that mix into frr.conf: the caller restores
        (:meth:`restore`), which also puts the last good text back into frr.conf.

        frr-reload.py 8.4 misplaces a new `vrf X / vni N` block when the same
        reload also changes the default `router bgp` (it lands inside the
        router context and fails).  Loading the VRF-to-VNI bindings first with
        `vtysh -f` (additive, harmless when repeated) avoids that.  Empty
        `vrf_bindings`: FRR already has them, no vtysh call.
        """
        self._kept_before = self._kept()
        loaded = CommandResult(ok=True, output="")
        if vrf_bindings.strip():
            bindings = self._candidate(vrf_bindings)
            try:
                loaded = self._run(
                    [self._s.vtysh, *self._pathspace(), "-f", str(bindings)], self._s.vtysh_timeout
                )
            finally:
                bindings.unlink(missing_ok=True)
        candidate = self._candidate(text)
        try:
            result = self._reload("--reload", candidate)
            if result.ok:
                os.replace(candidate, self._s.config_file)
            elif not loaded.ok:
                # A binding the reload did not settle either: say so with the failure.
                # After a successful reload the FRRActor's drift check looks for the
                # bindings in the running configuration.
                output = (
                    f"vtysh -f of the VRF-to-VNI bindings failed: {loaded.output}\n{result.output}"
                )
                result = CommandResult(ok=False, output=output)
            return result
        finally:
            candidate.unlink(missing_ok=True)

    def _kept(self) -> str | None:
        try:
            return Path(self._s.config_file).read_text()
        except FileNotFoundError:
            return None

    def restore(self, text: str | None) -> CommandResult:
        target = text if text is not None else self._kept_before
        if target is None:
            return CommandResult(
                ok=False,
                output=f"no last good configuration to restore: {self._s.config_file} did not "
                "exist before the failed reload",
            )
        candidate = self._candidate(target)
        try:
            reload = self._reload("--reload", candidate)
            # Only stdout: it has the differences; its log lines go to stderr.
            argv = [
                self._s.reload_command,
                "--test",
                "--stdout",
                *self._pathspace(),
                str(candidate),
            ]
            check = self._run(argv, self._s.reload_timeout, stdout_only=True)
        finally:
            candidate.unlink(missing_ok=True)
        # frr.conf is what a restarted daemon loads: the last good text, never the mix.
        kept = self._candidate(target)
        os.replace(kept, self._s.config_file)
        if not check.ok:
            return CommandResult(ok=False, output=f"frr-reload.py --test failed: {check.output}")
        left = reload_differences(check.output)
        if left:
            return CommandResult(
                ok=False,
                output="FRR still differs from the last good configuration: "
                + " | ".join(left[:20]),
            )
        # The reload may report errors (a `no` it could not send) and still get there:
        # what counts is that --test finds no difference.
        return CommandResult(ok=True, output=reload.output)

    def running_config(self) -> str | None:
        parts = []
        for daemon in ("zebra", "bgpd"):
            try:
                parts.append(self._vty[daemon].ask("show running-config"))
            except VtyError:
                return None
        return "\n".join(parts)

    def close(self) -> None:
        for client in self._vty.values():
            client.close()

    def _zebra_uptime(self) -> float | None:
        # zebra binds its vty socket once, at start; FRR has no uptime command.
        try:
            return max(time.time() - self._zebra_socket.stat().st_mtime, 0.0)
        except OSError:
            return None

    def _ask_json(self, daemon: str, command: str) -> Any:
        try:
            output = self._vty[daemon].ask(command)
        except VtyError:
            return None
        try:
            return json.loads(output) if output.strip() else None
        except json.JSONDecodeError:
            return None

    def state(self) -> FrrState:
        # Straight from the daemons' vty sockets: a vtysh process per poll costs
        # ~50 ms on a node and ~1 s under User-Mode Linux.
        summary = self._ask_json("bgpd", "show bgp l2vpn evpn summary json")
        vrf_vnis = self._ask_json("zebra", "show vrf vni json")
        evpn_vnis = self._ask_json("zebra", "show evpn vni json")
        return FrrState(
            zebra_uptime=self._zebra_uptime() if vrf_vnis is not None else 0.0,
            sessions=parse_bgp_sessions(summary),
            uptimes=parse_bgp_uptimes(summary),
            answered=summary is not None,
            l3vnis=parse_vrf_vnis(vrf_vnis),
            l2vnis=parse_l2vnis(evpn_vnis),
        )


def reload_differences(output: str) -> list[str]:
    """The lines ``frr-reload.py --test`` lists under "Lines To Delete" and "Lines To Add".

    `hostname` lines are left out: FRR always shows one (the host's), so a file
    without one (the seeded base) always differs on it, and that is harmless.
    """
    differences: list[str] = []
    listing = False
    for raw in output.splitlines():
        line = raw.strip()
        if line in ("Lines To Delete", "Lines To Add"):
            listing = True
        elif (
            listing
            and line
            and not line.startswith("===")
            and not line.removeprefix("no ").startswith("hostname ")
        ):
            differences.append(line)
    return differences


def _summary_peers(data: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(data, dict):
        return {}
    peers = data.get("peers")
    if not isinstance(peers, dict):
        # Some versions nest the summary under the address family.
        for value in data.values():
            if isinstance(value, dict) and isinstance(value.get("peers"), dict):
                peers = value["peers"]
                break
    if not isinstance(peers, dict):
        return {}
    return {str(addr): info for addr, info in peers.items() if isinstance(info, dict)}


def parse_bgp_sessions(data: Any) -> dict[str, str]:
    """Neighbour -> state from `show bgp l2vpn evpn summary json` (FRR 8.x shapes)."""
    return {addr: str(info.get("state", "unknown")) for addr, info in _summary_peers(data).items()}


def parse_bgp_uptimes(data: Any) -> dict[str, float]:
    """Neighbour -> seconds Established (peerUptimeMsec), for Established sessions only."""
    uptimes: dict[str, float] = {}
    for addr, info in _summary_peers(data).items():
        msec = info.get("peerUptimeMsec")
        if info.get("state") == "Established" and isinstance(msec, int | float):
            uptimes[addr] = msec / 1000.0
    return uptimes


def parse_vrf_vnis(data: Any) -> dict[str, int]:
    """VRF -> L3VNI from `show vrf vni json`, only where zebra has the VXLAN device."""
    result: dict[str, int] = {}
    entries = data.get("vrfs") if isinstance(data, dict) else None
    for entry in entries or []:
        if not isinstance(entry, dict):
            continue
        vxlan = str(entry.get("vxlanIntf", "None"))
        if vxlan in ("None", "") or not entry.get("vni"):
            continue
        result[str(entry.get("vrf"))] = int(entry["vni"])
    return result


def parse_l2vnis(data: Any) -> frozenset[int]:
    """L2VNIs from `show evpn vni json` (a map keyed by VNI)."""
    if not isinstance(data, dict):
        return frozenset()
    vnis = set()
    for key, entry in data.items():
        if isinstance(entry, dict) and str(entry.get("type", "L2")).upper().startswith("L2"):
            try:
                vnis.add(int(key))
            except ValueError:
                continue
    return frozenset(vnis)


def zebra_socket(settings: FrrSection) -> Path:
    """zebra's vty socket, where vtysh finds it."""
    return Path(settings.vty_dir) / settings.pathspace / "zebra.vty"


def wait_zebra_gone(
    settings: FrrSection,
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    interval: float = 0.1,
) -> bool:
    """Until zebra's vty socket stops accepting connections (zebra has exited), at most
    ``timeout`` seconds; whether it did.

    Why: when the DaemonSet's pod is replaced both containers stop together, and zebra
    takes its EVPN neighbour and FDB entries with it on the way out (--retain keeps only
    routes).  The daemon's RouteKeeperActor holds them while it runs, and the next
    instance adopts what it held, so the daemon waits for zebra before it stops.
    """
    path = zebra_socket(settings)
    deadline = clock() + timeout
    while True:
        if not _accepts(path):
            return True
        if clock() >= deadline:
            return False
        sleep(interval)


def _accepts(path: Path) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(1.0)
        sock.connect(str(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True
