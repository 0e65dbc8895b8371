"""The lab's guest side: start the lab, publish its summary, answer the host's requests.

Requests and replies are files in the state directory (the guest sees the host's file
system; its /run and /tmp are its own): ``agent/requests``, ``agent/replies``,
``status.json``, ``summary.txt``.  ``lab_cli`` is the host side.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from tests.harness import lab_scenarios
from tests.harness.lab import REPO, Lab, LabOptions, PrerequisiteError
from tests.harness.procs import HarnessError, in_netns, run, wait_until, write_atomic


class Channel:
    """Requests and replies as files in the state directory (host fs, seen by both sides)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.requests = state_dir / "agent" / "requests"
        self.replies = state_dir / "agent" / "replies"
        self.status_file = state_dir / "status.json"
        self.summary_file = state_dir / "summary.txt"

    def status(self) -> dict[str, Any]:
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return data if isinstance(data, dict) else {}

    def set_status(self, phase: str, **extra: Any) -> None:
        write_atomic(self.status_file, json.dumps({"phase": phase, "time": time.time(), **extra}))

    def request(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Host side: drop a request, wait (bounded) for the reply."""
        rid = uuid.uuid4().hex
        write_atomic(self.requests / f"{rid}.json", json.dumps({**payload, "timeout": timeout}))
        reply = self.replies / f"{rid}.json"

        def answered() -> dict[str, Any] | None:
            if not reply.exists():
                return None
            try:
                data = json.loads(reply.read_text())
            except (OSError, json.JSONDecodeError):
                return None
            return data if isinstance(data, dict) else None

        try:
            return wait_until(
                answered, timeout + 30, f"the lab agent to answer ({self.state_dir})", 0.1
            )
        finally:
            (self.requests / f"{rid}.json").unlink(missing_ok=True)
            reply.unlink(missing_ok=True)


def _guest_exec(lab: Lab, request: dict[str, Any]) -> dict[str, Any]:
    """Run one host request inside the guest; returns rc/stdout/stderr."""
    op = request.get("op")
    timeout = float(request.get("timeout", 120))
    if op in ("kubectl", "exec"):
        if op == "kubectl":
            argv = ["kubectl", "--kubeconfig", str(lab.kubeconfig), *request["args"]]
        else:
            netns, *cmd = request["args"]
            argv = in_netns(None if netns in ("-", "guest") else str(netns), cmd)
        # The host's working directory (the guest sees the host fs), for relative paths.
        cwd = str(request.get("cwd") or REPO)
        stdin = request.get("stdin")
        try:
            proc = run(
                argv,
                check=False,
                timeout=timeout,
                cwd=cwd if os.path.isdir(cwd) else REPO,
                input=str(stdin) if stdin is not None else None,
            )
        except HarnessError as exc:
            return {"rc": 124, "stdout": "", "stderr": str(exc) + "\n"}
        except OSError as exc:
            return {"rc": 127, "stdout": "", "stderr": f"{argv[0]}: {exc}\n"}
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    if op == "scenario":
        if lab.options.real_nodes:
            return {
                "rc": 2,
                "stdout": "",
                "stderr": "scenarios run on the process-mode lab: `scripts/lab up` without "
                "--kubelets\n",
            }
        results = lab_scenarios.run(lab, str(request["args"][0]))
        text = "\n\n".join(f"scenario {r.name}:\n{r.text()}" for r in results)
        ok = all(r.ok for r in results)
        return {"rc": 0 if ok else 1, "stdout": text + "\n", "stderr": ""}
    if op == "summary":
        text, green = lab.summary()
        return {"rc": 0 if green else 1, "stdout": text + "\n", "stderr": ""}
    return {"rc": 2, "stdout": "", "stderr": f"unknown request {op!r}\n"}


def serve(
    state_dir: Path,
    nodes: int,
    pods: int,
    lifetime: float,
    scenarios: Sequence[str],
    daemons: bool = True,
    kubelets: bool = False,
) -> int:
    """The guest's main: start the lab, publish the summary, answer requests until down.
    With `kubelets`, the nodes are real nodes and the product is installed on them
    (tests/harness/kube_lab.py)."""
    channel = Channel(state_dir)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for d in (channel.requests, channel.replies):
        d.mkdir(parents=True, exist_ok=True)
    lab = Lab(LabOptions(state_dir=state_dir, nodes=nodes, pods_per_node=pods, real_nodes=kubelets))
    channel.set_status("starting", pid=os.getpid())
    rc = 0
    failure = ""
    kube: Any = None
    try:
        try:
            if kubelets:
                from tests.harness.kube_lab import KubeLab  # only with real nodes

                lab.start(daemons=False, pods=False)
                kube = KubeLab(lab, pods)
                lab.summarizer = kube.summary
                kube.start()
            else:
                lab.start(daemons=daemons)
            for name in scenarios:
                lab_scenarios.run(lab, name)
            text, green = lab.summary()
            lab._mark("summary")
            timings = ", ".join(f"{k} {v:.1f}s" for k, v in lab.timings.items())
            text += f"\nlab up in {lab.timings['summary']:.1f} s (inside the lab: {timings})"
            write_atomic(channel.summary_file, text + "\n")
            print(text, flush=True)
            channel.set_status("ready", green=green, timings=lab.timings, pid=os.getpid())
        except Exception as exc:
            import traceback

            if not isinstance(exc, PrerequisiteError):  # one line says it all
                traceback.print_exc()
            print(
                f"lab: FAILED: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                flush=True,
            )
            failure = f"{type(exc).__name__}: {exc}"
            channel.set_status("failed", message=failure, pid=os.getpid())
            rc = 1
            return rc
        deadline = time.monotonic() + lifetime
        workers: list[threading.Thread] = []
        while not stop.is_set() and time.monotonic() < deadline:
            for entry in sorted(channel.requests.glob("*.json")):
                try:
                    request = json.loads(entry.read_text())
                except (OSError, json.JSONDecodeError):
                    continue  # being written; seen again next round
                entry.unlink(missing_ok=True)
                if request.get("op") == "down":
                    write_atomic(
                        channel.replies / entry.name,
                        json.dumps({"rc": 0, "stdout": "", "stderr": ""}),
                    )
                    stop.set()
                    break
                worker = threading.Thread(
                    target=_answer, args=(lab, channel, entry.name, request), daemon=True
                )
                worker.start()
                workers.append(worker)
            workers = [w for w in workers if w.is_alive()]
            stop.wait(0.2)
        if not stop.is_set():
            print(f"lab: lifetime of {lifetime:.0f} s reached; stopping", flush=True)
        return rc
    finally:
        channel.set_status("stopping", pid=os.getpid(), message=failure)
        try:
            if kube is not None:
                kube.stop()
            lab.stop()
        finally:
            channel.set_status("stopped", rc=rc, message=failure)


def _answer(lab: Lab, channel: Channel, name: str, request: dict[str, Any]) -> None:
    try:
        reply = _guest_exec(lab, request)
    except Exception as exc:  # the host gets it as a failed command
        reply = {"rc": 1, "stdout": "", "stderr": f"{type(exc).__name__}: {exc}\n"}
    write_atomic(channel.replies / name, json.dumps(reply))
