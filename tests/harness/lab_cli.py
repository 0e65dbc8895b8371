"""``scripts/lab``: the host's commands for the lab (up, down, kubectl, exec, scenario, ...).

``up`` starts ``lab_cli serve`` (the guest side, ``lab_agent.serve``) in this kernel or, when
it lacks VRF, in a User-Mode Linux guest, follows its console and prints the summary; the
other commands reach the running lab through ``lab_agent.Channel``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.harness.lab import (
    DEFAULT_STATE_DIR,
    REPO,
    VENV_BIN,
    Lab,
    LabOptions,
    missing_prerequisites,
)
from tests.harness.lab_agent import Channel, serve
from tests.harness.procs import NETNS_DIR, HarnessError, alive, run, wait_until

PYTHON = VENV_BIN / "python"
UML_MEM = "3000M"
# Real nodes: the images unpacked on each node's containerd live in the guest's tmpfs.
KUBELETS_UML_MEM = "6000M"
DEFAULT_LIFETIME = 7200.0
UP_TIMEOUT = 900.0
DOWN_TIMEOUT = 180.0
SCENARIOS = (
    "tenant",
    "l2vni",
    "rr",
    "frr-restart",
    "rr-restart",
    "node-restart",
    "external",
)


def _state_dir() -> Path:
    return Path(os.environ.get("LAB_STATE_DIR", str(DEFAULT_STATE_DIR))).resolve()


def _launcher_pid(state_dir: Path) -> int | None:
    """The pid of uml-run (or of the direct `serve`) if it is still ours and alive."""
    try:
        pid = int((state_dir / "launcher.pid").read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if str(state_dir).encode() not in cmdline or not alive(pid):
        return None
    return pid


# The guest mounts tmpfs on these (scripts/uml-run's GUEST_TMPFS; a unit test keeps the two
# equal); the host files below them are hidden from it, so uml-run refuses a work dir there.
GUEST_TMPFS = ("/run", "/tmp", "/etc/frr", "/var/log", "/var/tmp", "/dev/shm")


def _uml_workdir(state_dir: Path) -> Path:
    """uml-run's work dir for the lab: ``<state>/uml``; when the checkout is below a guest
    tmpfs (a clone in /tmp), one keyed by the state dir in the user's cache instead."""
    text = str(state_dir)
    if not any(text == t or text.startswith(t + "/") for t in GUEST_TMPFS):
        return state_dir / "uml"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    key = hashlib.sha256(text.encode()).hexdigest()[:12]
    return base / "pyroute2-cni" / "uml" / f"lab-{key}"


def _uml_pids(state_dir: Path) -> list[int]:
    """linux.uml processes whose uml_dir is our work dir (other users' guests are not ours)."""
    marker = f"uml_dir={_uml_workdir(state_dir)}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
    return pids


def _vrf_kernel() -> bool:
    if os.environ.get("PYROUTE2_CNI_FORCE_UML") == "1":
        return False
    return run([str(REPO / "scripts" / "kernel-has-vrf")], check=False).returncode == 0


# What `up` creates in the state directory besides the logs (console.log, logs/,
# uml/console.log); other users of lab-state/ (the e2e tier, the benchmark) keep theirs.
UP_STATE_FILES = ("agent", "status.json", "summary.txt", "launcher.pid", "kubeconfig")


def _clean_state(state_dir: Path) -> None:
    """Remove what `up` left in the state directory, except the logs."""
    if not state_dir.is_dir():
        return
    for name in UP_STATE_FILES:
        _remove(state_dir / name)
    uml = _uml_workdir(state_dir)
    if uml.is_dir():
        for sub in uml.iterdir():
            if sub.name != "console.log":
                _remove(sub)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    channel = Channel(state_dir)
    if _launcher_pid(state_dir) is not None:
        print(
            f"lab: already running (state in {state_dir}); `scripts/lab down` first",
            file=sys.stderr,
        )
        return 1
    if args.kubelets and (args.scenario or args.no_daemons):
        print(
            "lab: --kubelets runs the product as installed; --scenario and --no-daemons are "
            "for the process-mode lab",
            file=sys.stderr,
        )
        return 2
    problem = missing_prerequisites(daemons=not args.no_daemons)
    if problem:
        print(f"lab: {problem}", file=sys.stderr)
        return 2
    _clean_state(state_dir)
    shutil.rmtree(state_dir / "logs", ignore_errors=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    for d in (channel.requests, channel.replies):
        d.mkdir(parents=True, exist_ok=True)
    lifetime = float(os.environ.get("LAB_LIFETIME", DEFAULT_LIFETIME))
    serve_argv = [
        str(PYTHON),
        "-m",
        "tests.harness.lab_cli",
        "serve",
        "--state-dir",
        str(state_dir),
        "--nodes",
        str(args.nodes),
        "--pods",
        str(args.pods),
        "--lifetime",
        str(lifetime),
        *(f"--scenario={s}" for s in args.scenario),
        *(["--no-daemons"] if args.no_daemons else []),
        *(["--kubelets"] if args.kubelets else []),
    ]
    uml = not _vrf_kernel()
    if uml:
        argv = [
            str(REPO / "scripts" / "uml-run"),
            "--mem",
            os.environ.get("LAB_UML_MEM", KUBELETS_UML_MEM if args.kubelets else UML_MEM),
            "--timeout",
            str(int(lifetime + 900)),
            "--workdir",
            str(_uml_workdir(state_dir)),
            "--",
            *serve_argv,
        ]
        where = "a User-Mode Linux guest (the host kernel lacks VRF)"
    else:
        argv = serve_argv
        where = "this kernel"
    began = time.monotonic()
    console = state_dir / "console.log"
    with console.open("wb") as out:
        launcher = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (state_dir / "launcher.pid").write_text(f"{launcher.pid}\n")
    print(
        f"lab: starting {args.nodes} nodes x {args.pods} pods in {where}; console: {console}",
        flush=True,
    )
    offset = 0
    deadline = began + UP_TIMEOUT
    phase = ""
    try:
        while True:
            offset = _follow(console, offset)
            phase = str(channel.status().get("phase", ""))
            if phase in ("ready", "failed", "stopping", "stopped") or launcher.poll() is not None:
                break
            if time.monotonic() > deadline:
                print(f"lab: not up after {UP_TIMEOUT:.0f} s; see {console}; cleaning up")
                _down(state_dir, quiet=True)
                return 1
            time.sleep(0.3)
    except KeyboardInterrupt:
        print("lab: interrupted; stopping the lab", flush=True)
        _down(state_dir, quiet=True)
        return 130
    _follow(console, offset)
    if phase != "ready":
        status = channel.status()
        print(f"lab: failed to start: {status.get('message') or 'the lab process exited'}")
        print(f"lab: console: {console}; logs: {state_dir / 'logs'}/; cleaning up", flush=True)
        _down(state_dir, quiet=True)
        return 1
    wall = time.monotonic() - began
    green = bool(channel.status().get("green"))
    with contextlib.suppress(OSError):
        print()
        print(channel.summary_file.read_text(), flush=True)
    print(
        f"lab: up in {wall:.1f} s (host wall clock); "
        f"ping matrix {'all green' if green else 'NOT all green'}"
    )
    print(
        "lab: scripts/lab kubectl ... | exec NETNS CMD ... "
        "| scenario tenant|l2vni|rr|frr-restart|rr-restart|node-restart|external | down"
    )
    launcher.returncode = 0  # detached on purpose: it keeps the guest running
    return 0 if green else 1


def _follow(path: Path, offset: int) -> int:
    """Print the lab's progress lines from the console log after ``offset``."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except OSError:
        return offset
    end = data.rfind(b"\n") + 1
    for raw in data[:end].splitlines():
        line = raw.decode(errors="replace").rstrip("\r")
        if line.startswith(("lab:", "uml-run:")):
            print(line, flush=True)
    return offset + end


def _down(state_dir: Path, quiet: bool = False) -> int:
    channel = Channel(state_dir)
    pid = _launcher_pid(state_dir)
    say: Callable[[str], None] = (lambda s: None) if quiet else (lambda s: print(s, flush=True))
    problems: list[str] = []
    if pid is not None:
        if channel.status().get("phase") in ("ready", "starting"):
            with contextlib.suppress(HarnessError):
                channel.request({"op": "down"}, timeout=20)
        say("lab: asked the lab to stop; waiting")
        try:
            wait_until(lambda: not alive(pid), DOWN_TIMEOUT, "the lab to stop", 0.3)
        except HarnessError:
            say("lab: the lab did not stop in time; killing it")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            with contextlib.suppress(HarnessError):
                wait_until(lambda: not alive(pid), 20, "the launcher to exit", 0.2)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    # A guest that outlived its launcher (uml-run SIGKILLed): kill its process groups.
    for upid in _uml_pids(state_dir):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(os.getpgid(upid), signal.SIGKILL)
    with contextlib.suppress(HarnessError):
        wait_until(lambda: not _uml_pids(state_dir), 20, "the UML processes to exit", 0.2)
    if _uml_pids(state_dir):
        problems.append(f"UML processes left: {_uml_pids(state_dir)}")
    if _vrf_kernel():
        # Direct mode: the lab ran in this kernel; remove whatever a killed lab left.
        Lab(LabOptions(state_dir=state_dir))._cleanup_kernel()
        left = (
            [n for n in os.listdir(NETNS_DIR) if n.startswith(("lab-", "pod-lab-"))]
            if NETNS_DIR.is_dir()
            else []
        )
        if left:
            problems.append(f"namespaces left: {left}")
    _clean_state(state_dir)
    if problems:
        print("lab: " + "; ".join(problems), file=sys.stderr)
        return 1
    say(f"lab: down; logs kept in {state_dir}/console.log and {state_dir}/logs/")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    return _down(_state_dir())


def _relay(payload: dict[str, Any], timeout: float) -> int:
    state_dir = _state_dir()
    channel = Channel(state_dir)
    if _launcher_pid(state_dir) is None or channel.status().get("phase") != "ready":
        print(f"lab: not running (state in {state_dir}); `scripts/lab up` first", file=sys.stderr)
        return 1
    payload = {**payload, "cwd": os.getcwd()}
    if "-" in payload.get("args", ()) and not sys.stdin.isatty():
        payload["stdin"] = sys.stdin.read()  # kubectl apply -f - < file.yaml
    try:
        reply = channel.request(payload, timeout)
    except HarnessError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(str(reply.get("stdout", "")))
    sys.stderr.write(str(reply.get("stderr", "")))
    return int(reply.get("rc", 1))


def cmd_kubectl(args: argparse.Namespace) -> int:
    # `scripts/lab kubectl -- -n NS ...`: kubectl options first need the `--`, which is
    # ours, not kubectl's.
    rest = args.args[1:] if args.args[:1] == ["--"] else args.args
    return _relay({"op": "kubectl", "args": rest}, args.timeout)


def cmd_exec(args: argparse.Namespace) -> int:
    return _relay({"op": "exec", "args": [args.netns, *args.args]}, args.timeout)


def cmd_scenario(args: argparse.Namespace) -> int:
    rc = 0
    for name in args.names:
        rc = max(rc, _relay({"op": "scenario", "args": [name]}, args.timeout))
    return rc


def cmd_summary(args: argparse.Namespace) -> int:
    return _relay({"op": "summary"}, args.timeout)


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    status = Channel(state_dir).status()
    pid = _launcher_pid(state_dir)
    print(json.dumps({"state_dir": str(state_dir), "launcher": pid, **status}, indent=2))
    return 0 if pid is not None and status.get("phase") == "ready" else 1


def cmd_logs(args: argparse.Namespace) -> int:
    state_dir = _state_dir()
    path = (
        state_dir / "logs" / f"{args.node}-daemon.log" if args.node else state_dir / "console.log"
    )
    try:
        sys.stdout.write(path.read_text(errors="replace"))
    except OSError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_run_e2e(args: argparse.Namespace) -> int:
    argv = [
        str(REPO / "scripts" / "run-in-vrf-kernel"),
        "--",
        str(REPO / "scripts" / "pytest-tier"),
        "e2e",
        *args.args,
    ]
    return subprocess.run(argv, cwd=REPO, check=False).returncode


def cmd_serve(args: argparse.Namespace) -> int:
    return serve(
        Path(args.state_dir).resolve(),
        args.nodes,
        args.pods,
        args.lifetime,
        args.scenario,
        daemons=not args.no_daemons,
        kubelets=args.kubelets,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/lab",
        description="A multi-node pyroute2-cni cluster on one machine (see tests/harness/lab.py).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    nodes = int(os.environ.get("LAB_NODES", "3"))
    pods = int(os.environ.get("LAB_PODS", "2"))

    up = sub.add_parser("up", help="start the lab in the background and print its summary")
    up.add_argument("--nodes", type=int, default=nodes, help="nodes (LAB_NODES, default 3)")
    up.add_argument("--pods", type=int, default=pods, help="pods per node (LAB_PODS, default 2)")
    up.add_argument(
        "--scenario",
        action="append",
        default=[],
        choices=[*SCENARIOS, "all"],
        help="also run these scenarios",
    )
    up.add_argument(
        "--no-daemons",
        action="store_true",
        help="infrastructure only: API server, namespaces, FRR (to debug the lab itself)",
    )
    up.add_argument(
        "--kubelets",
        action="store_true",
        default=os.environ.get("LAB_KUBELETS", "") == "1",
        help="real nodes: a kubelet and containerd per node, the product installed as the "
        "README says, a Deployment's pods (LAB_KUBELETS=1; needs make kube-node images)",
    )
    up.set_defaults(func=cmd_up)

    sub.add_parser("down", help="stop the lab and clean up").set_defaults(func=cmd_down)

    for name, func, helptext in (
        ("kubectl", cmd_kubectl, "kubectl against the lab's API server"),
        ("exec", cmd_exec, "run a command in a lab namespace (e.g. lab-n1; '-' = guest root)"),
    ):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
        if name == "exec":
            p.add_argument("netns")
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(func=func)

    sc = sub.add_parser(
        "scenario",
        help=f"run scenarios in the running lab: {' '.join(SCENARIOS)} all",
    )
    sc.add_argument("--timeout", type=float, default=600.0)
    sc.add_argument("names", nargs="+", choices=[*SCENARIOS, "all"])
    sc.set_defaults(func=cmd_scenario)

    sm = sub.add_parser("summary", help="print the summary again (fresh ping matrix)")
    sm.add_argument("--timeout", type=float, default=300.0)
    sm.set_defaults(func=cmd_summary)

    sub.add_parser("status", help="the lab's phase as JSON").set_defaults(func=cmd_status)

    lg = sub.add_parser("logs", help="the console log, or a node's daemon log")
    lg.add_argument("node", nargs="?")
    lg.set_defaults(func=cmd_logs)

    e2e = sub.add_parser("run-e2e", help="the e2e tier (its own lab, inside the VRF kernel)")
    e2e.add_argument("args", nargs=argparse.REMAINDER)
    e2e.set_defaults(func=cmd_run_e2e)

    sv = sub.add_parser("serve", help="(internal) run the lab in this kernel; what up starts")
    sv.add_argument("--state-dir", required=True)
    sv.add_argument("--nodes", type=int, default=nodes)
    sv.add_argument("--pods", type=int, default=pods)
    sv.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME)
    sv.add_argument("--scenario", action="append", default=[])
    sv.add_argument("--no-daemons", action="store_true")
    sv.add_argument("--kubelets", action="store_true")
    sv.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    rc: int = args.func(args)
    return rc


if __name__ == "__main__":
    sys.exit(main())
