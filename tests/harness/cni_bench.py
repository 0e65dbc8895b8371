"""CNI latency through the real shim and daemon, next to Debian's bridge + host-local.

``python -m tests.harness.cni_bench [--pods 200] [--concurrency 1,8]`` (``make bench`` runs
it through scripts/run-in-vrf-kernel, so inside User-Mode Linux when the host has no VRF):

1. starts a 1-node lab (tests/harness/lab.py: API server, FRR, the daemon in lab-n1);
2. makes N pod network namespaces and Pod objects;
3. for each concurrency C: ADD every pod through the installed shim (executed the way the
   kubelet's runtime executes a plugin: CNI_* environment, the installed list's first
   plugin config on stdin, from the node's network namespace), then DEL every pod; the
   same with Debian's bridge plugin + host-local IPAM (/usr/lib/cni) on the same pods,
   in the same run, as the reference;
4. measures the shim alone against an answering fake daemon
   (tests.harness.shim_bench.measure_shim_overhead);
5. prints a table: p50/p99 per verb and concurrency, ADD/s sustained (pods / wall time of
   the ADD phase), and the ratios to the reference.  Timings inside User-Mode Linux are
   only comparable to timings of the same run: read the ratios;
6. splits our latency: the time inside the daemon per phase, from its own
   ``pyroute2_cni_request_duration_seconds`` histogram (mean, and the share of calls
   under 100 ms), next to one fork+exec of /bin/true in the same run -- what a process
   start alone costs here;
7. runs our ADD/DEL once more without any plugin process: the bench sends the shim's
   frames itself over zmq (one REQ socket per worker) -- what the daemon serves when
   process starts cost nothing, e.g. on a node rather than in User-Mode Linux.

A JSON copy of the numbers goes to lab-state/bench/cni-bench.json.  Exit status 1 when any
CNI call failed (the table still prints).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from prometheus_client.parser import text_string_to_metric_families

from pyroute2_cni.cni.shim_protocol import ShimRequest, encode_request
from tests.harness.lab import METRICS_PORT, REPO, Lab, LabOptions
from tests.harness.procs import http_get, wait_until
from tests.harness.shim_bench import measure_shim_overhead

NODE = "lab-n1"
OURS = "pyroute2-cni"
DIRECT = "pyroute2-cni, no process"
REFERENCE = "bridge+host-local"
ADD_PARTS = ("ipam", "netlink")
STATE_DIR = REPO / "lab-state" / "bench" / "cni"
RESULT_FILE = REPO / "lab-state" / "bench" / "cni-bench.json"
IP = "/usr/bin/ip"
PLUGINS_DIR = Path("/usr/lib/cni")
NETNS_DIR = Path("/run/netns")
WORK = Path("/run/pyroute2-cni-bench")
NETNS_PREFIX = "pod-bench-"
REFERENCE_SUBNET = "10.123.0.0/16"
CALL_TIMEOUT = 120.0
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def _say(message: str) -> None:
    print(f"cni_bench: {message}", file=sys.stderr, flush=True)


def _enter_netns(name: str) -> None:
    """ThreadPoolExecutor initializer: this worker thread (and what it spawns) lives in
    ``name``; a plugin started from it runs in the node's namespace, as under a kubelet."""
    fd = os.open(NETNS_DIR / name, os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, math.ceil(p * len(ordered)) - 1))
    return ordered[index]


@dataclass(slots=True)
class Phase:
    """One verb at one concurrency for one plugin."""

    plugin: str
    verb: str
    concurrency: int
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    wall: float = 0.0
    # Inside the daemon (ours only): the histogram's growth over the phase.
    daemon: DaemonTime | None = None
    # ADD only: the same for its ipam and netlink parts.
    parts: dict[str, DaemonTime] = field(default_factory=dict)

    @property
    def p50_ms(self) -> float:
        return _percentile(self.latencies, 0.50) * 1000 if self.latencies else math.nan

    @property
    def p99_ms(self) -> float:
        return _percentile(self.latencies, 0.99) * 1000 if self.latencies else math.nan

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall if self.wall > 0 else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "plugin": self.plugin,
            "verb": self.verb,
            "concurrency": self.concurrency,
            "n": len(self.latencies),
            "failures": len(self.failures),
            "p50_ms": round(self.p50_ms, 2),
            "p99_ms": round(self.p99_ms, 2),
            "per_second": round(self.rate, 2),
            "wall_s": round(self.wall, 2),
            "daemon": self.daemon.to_json() if self.daemon else None,
            "parts": {name: part.to_json() for name, part in self.parts.items()},
        }


@dataclass(frozen=True, slots=True)
class DaemonTime:
    """Cumulative ``pyroute2_cni_request_duration_seconds`` samples for one verb."""

    count: float
    total: float
    buckets: tuple[tuple[float, float], ...]  # (upper bound, cumulative count)

    def __sub__(self, before: DaemonTime) -> DaemonTime:
        earlier = dict(before.buckets)
        return DaemonTime(
            count=self.count - before.count,
            total=self.total - before.total,
            buckets=tuple((le, n - earlier.get(le, 0.0)) for le, n in self.buckets),
        )

    @property
    def mean_ms(self) -> float:
        return self.total / self.count * 1000 if self.count else math.nan

    def share_within(self, seconds: float) -> float:
        within = dict(self.buckets).get(seconds)
        return within / self.count if within is not None and self.count else math.nan

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.count,
            "mean_ms": round(self.mean_ms, 2),
            "share_within_100ms": round(self.share_within(0.1), 4),
        }


def daemon_time(
    metrics_text: str,
    verb: str,
    family_name: str = "pyroute2_cni_request_duration_seconds",
    label: str = "verb",
) -> DaemonTime:
    """One series of a daemon histogram (by default: requests of ``verb``)."""
    count = total = 0.0
    buckets: list[tuple[float, float]] = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name != family_name:
            continue
        for sample in family.samples:
            if sample.labels.get(label) != verb:
                continue
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket"):
                buckets.append((float(sample.labels["le"]), sample.value))
    return DaemonTime(count=count, total=total, buckets=tuple(sorted(buckets)))


@dataclass(frozen=True, slots=True)
class Plugin:
    name: str
    binary: Path
    config: dict[str, Any]
    cni_path: str


@dataclass(frozen=True, slots=True, kw_only=True)
class BenchPod:
    index: int
    name: str
    uid: str
    netns: str


class CniBench:
    def __init__(self, lab: Lab, pods: int) -> None:
        self.lab = lab
        self.node = lab.nodes[NODE]
        self.count = pods
        conflist_path = self.node.cni_conf_dir / "10-pyroute2-cni.conflist"
        conflist: dict[str, Any] = wait_until(
            lambda: json.loads(conflist_path.read_text()) if conflist_path.is_file() else None,
            60,
            f"the conflist at {conflist_path}",
        )
        self.ours_config = {
            "cniVersion": conflist["cniVersion"],
            "name": conflist["name"],
            **conflist["plugins"][0],
        }
        self.ours_binary = self.node.cni_bin_dir / "pyroute2-cni"
        self.ref_config = {
            "cniVersion": "1.0.0",
            "name": "bench-bridge",
            "type": "bridge",
            "bridge": "cnibench0",
            "isGateway": True,
            "ipMasq": False,
            "ipam": {
                "type": "host-local",
                "subnet": REFERENCE_SUBNET,
                "dataDir": str(WORK / "host-local"),
            },
        }
        self.ref_binary = PLUGINS_DIR / "bridge"
        self.pods: list[BenchPod] = []
        self.zmq = zmq.Context()
        self._sockets: list[zmq.Socket[bytes]] = []
        self._local = threading.local()

    # -- setup / teardown --------------------------------------------------------------
    def make_pods(self) -> None:
        core = self.lab.core()
        names = [f"bench-{i}" for i in range(1, self.count + 1)]

        def create(name: str) -> str:
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {
                    "nodeName": NODE,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.9"}],
                },
            }
            return str(core.create_namespaced_pod("default", body).metadata.uid)

        with ThreadPoolExecutor(8) as pool:
            uids = list(pool.map(create, names))
        self.pods = [
            BenchPod(index=i, name=name, uid=uid, netns=f"{NETNS_PREFIX}{i}")
            for i, (name, uid) in enumerate(zip(names, uids, strict=True), 1)
        ]
        script = "".join(f"netns add {p.netns}\n" for p in self.pods)
        subprocess.run([IP, "-batch", "-"], input=script, text=True, check=True, timeout=300)

    def remove_netns(self) -> None:
        """The pods' network namespaces (a veth pair goes with its pod end)."""
        script = "".join(
            f"netns del {p.netns}\n" for p in self.pods if (NETNS_DIR / p.netns).exists()
        )
        if script:
            subprocess.run([IP, "-force", "-batch", "-"], input=script, text=True, check=False)

    def remove_pods(self) -> None:
        self.remove_netns()
        core = self.lab.core()

        def delete(pod: BenchPod) -> None:
            try:
                core.delete_namespaced_pod(pod.name, "default", grace_period_seconds=0)
            except Exception as exc:  # best effort: the lab goes away next
                _say(f"deleting Pod {pod.name}: {exc}")

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(delete, self.pods))

    # -- one CNI call ----------------------------------------------------------------------
    def _env(self, command: str, pod: BenchPod, container_id: str, cni_path: str) -> dict[str, str]:
        return {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": container_id,
            "CNI_NETNS": str(NETNS_DIR / pod.netns),
            "CNI_IFNAME": "eth0",
            "CNI_PATH": cni_path,
            "CNI_ARGS": ";".join(
                [
                    "IgnoreUnknown=1",
                    "K8S_POD_NAMESPACE=default",
                    f"K8S_POD_NAME={pod.name}",
                    f"K8S_POD_INFRA_CONTAINER_ID={container_id}",
                    f"K8S_POD_UID={pod.uid}",
                ]
            ),
        }

    def _call(
        self, binary: Path, config: dict[str, Any], env: dict[str, str]
    ) -> tuple[float, str | None]:
        stdin = json.dumps(config).encode()
        began = time.perf_counter()
        proc = subprocess.run(
            [str(binary)],
            input=stdin,
            env=env,
            capture_output=True,
            timeout=CALL_TIMEOUT,
            check=False,
        )
        elapsed = time.perf_counter() - began
        if proc.returncode != 0:
            out = (proc.stdout or proc.stderr).decode(errors="replace").strip()
            return elapsed, f"{env['CNI_COMMAND']} {env['CNI_CONTAINERID'][:12]}: {out[:300]}"
        return elapsed, None

    def _socket(self) -> zmq.Socket[bytes]:
        """This worker thread's REQ socket to the daemon (where the conflist says)."""
        sock: zmq.Socket[bytes] | None = getattr(self._local, "sock", None)
        if sock is None:
            sock = self.zmq.socket(zmq.REQ)
            sock.setsockopt(zmq.RCVTIMEO, int(CALL_TIMEOUT * 1000))
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.ours_config["socket"])
            self._local.sock = sock
            self._sockets.append(sock)
        return sock

    def _direct(self, verb: str, tag: str, pod: BenchPod) -> tuple[float, str | None]:
        """The shim's request, sent by this process: the daemon's part of a CNI call."""
        container_id = f"{tag}zmq{pod.index:05d}".ljust(64, "0")
        env = self._env(verb, pod, container_id, str(self.node.cni_bin_dir))
        request = ShimRequest(
            command=verb,
            container_id=container_id,
            netns=env["CNI_NETNS"],
            ifname=env["CNI_IFNAME"],
            args=env["CNI_ARGS"],
            path=env["CNI_PATH"],
            stdin=json.dumps(self.ours_config).encode(),
        )
        sock = self._socket()
        began = time.perf_counter()
        sock.send_multipart(encode_request(request))  # REQ adds the empty delimiter
        status, out = sock.recv_multipart()
        elapsed = time.perf_counter() - began
        if status != b"0":
            return elapsed, f"{verb} {container_id[:12]}: {out.decode(errors='replace')[:300]}"
        return elapsed, None

    def close(self) -> None:
        for sock in self._sockets:
            sock.close()
        self.zmq.term()

    def run_phase(
        self,
        plugin: str,
        verb: str,
        concurrency: int,
        call: Callable[[BenchPod], tuple[float, str | None]],
        pods: Sequence[BenchPod] | None = None,
    ) -> Phase:
        """``call`` for each of ``pods`` (default: every pod), ``concurrency`` at a time."""
        phase = Phase(plugin=plugin, verb=verb, concurrency=concurrency)
        ours = plugin in (OURS, DIRECT)
        before = self.daemon_time(verb) if ours else None
        parts_before = self.add_parts() if ours and verb == "ADD" else {}
        began = time.monotonic()
        with ThreadPoolExecutor(concurrency, initializer=_enter_netns, initargs=(NODE,)) as pool:
            for elapsed, error in pool.map(call, self.pods if pods is None else pods):
                if error is None:
                    phase.latencies.append(elapsed)
                else:
                    phase.failures.append(error)
        phase.wall = time.monotonic() - began
        if before is not None:
            phase.daemon = self.daemon_time(verb) - before
        if parts_before:
            after = self.add_parts()
            phase.parts = {name: after[name] - parts_before[name] for name in ADD_PARTS}
        _say(
            f"{plugin:<18} {verb:<3} c={concurrency}: p50 {phase.p50_ms:7.1f} ms, "
            f"p99 {phase.p99_ms:7.1f} ms, {phase.rate:6.1f}/s, {len(phase.failures)} failed"
        )
        for error in phase.failures[:3]:
            _say(f"  failure: {error}")
        return phase

    def _metrics(self) -> str:
        status, body = http_get(NODE, METRICS_PORT, "/metrics", timeout=10)
        if status != 200:
            raise RuntimeError(f"/metrics of {NODE} answered {status}")
        return body

    def daemon_time(self, verb: str) -> DaemonTime:
        return daemon_time(self._metrics(), verb)

    def add_parts(self) -> dict[str, DaemonTime]:
        body = self._metrics()
        return {
            name: daemon_time(body, name, "pyroute2_cni_add_phase_seconds", "phase")
            for name in ADD_PARTS
        }

    def round(self, concurrency: int) -> list[Phase]:
        """ADD then DEL of every pod, ours and then the reference, at one concurrency."""
        tag = uuid.uuid4().hex[:8]
        phases: list[Phase] = []
        plugins = (
            self.ours(),
            Plugin(REFERENCE, self.ref_binary, self.ref_config, str(PLUGINS_DIR)),
        )
        for plugin in plugins:
            for verb in ("ADD", "DEL"):
                call = functools.partial(self.exec_plugin, plugin, verb, tag)
                phase = self.run_phase(plugin.name, verb, concurrency, call)
                phases.append(phase)
                if plugin.name == OURS:
                    held = len(self.pods) - len(phase.failures) if verb == "ADD" else 0
                    self.check_allocated(expected=held)
        for verb in ("ADD", "DEL"):
            call = functools.partial(self._direct, verb, tag)
            phase = self.run_phase(DIRECT, verb, concurrency, call)
            phases.append(phase)
            held = len(self.pods) - len(phase.failures) if verb == "ADD" else 0
            self.check_allocated(expected=held)
        return phases

    def ours(self) -> Plugin:
        """The shim the daemon installed, with the conflist's first plugin config."""
        return Plugin(OURS, self.ours_binary, self.ours_config, str(self.node.cni_bin_dir))

    def exec_plugin(
        self, plugin: Plugin, verb: str, tag: str, pod: BenchPod
    ) -> tuple[float, str | None]:
        container_id = f"{tag}{plugin.name[:4]}{pod.index:05d}".ljust(64, "0")
        env = self._env(verb, pod, container_id, plugin.cni_path)
        return self._call(plugin.binary, plugin.config, env)

    def check_allocated(self, expected: int) -> None:
        """Sanity: the IPBlocks hold what the ADDs got (the daemon is not cutting corners)."""
        held = 0
        for block in self.lab.ipblocks():
            allocations = (block.get("status") or {}).get("allocations") or {}
            held += sum(1 for r in allocations.values() if r.get("key") != "gateway")
        if held != expected:
            _say(f"WARNING: IPBlocks hold {held} pod addresses, expected {expected}")


def _ratio(ours: float, ref: float) -> str:
    if not (ref > 0) or math.isnan(ours) or math.isnan(ref):
        return "   -"
    return f"{ours / ref:5.2f}x"


def render(phases: Sequence[Phase], shim: dict[str, Any], pods: int, kernel: str) -> str:
    by_key = {(p.plugin, p.verb, p.concurrency): p for p in phases}
    concurrencies = sorted({p.concurrency for p in phases})
    lines = [
        f"CNI bench: {pods} pods, 1-node lab, {kernel}",
        "ratios = pyroute2-cni / Debian bridge+host-local, measured in the same run "
        "(latency below 1x, ops/s above 1x: pyroute2-cni is faster)",
        "",
        f"{'conc':>4} {'verb':<4} | {'pyroute2-cni':^26} | {'bridge+host-local':^26} |"
        f" {'ratio':^20}",
        f"{'':>4} {'':<4} | {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>8} |"
        f" {'p50 ms':>8} {'p99 ms':>8} {'ops/s':>8} | {'p50':>6} {'p99':>6} {'ops/s':>6}",
        "-" * 97,
    ]
    for c in concurrencies:
        for verb in ("ADD", "DEL"):
            ours = by_key.get((OURS, verb, c))
            ref = by_key.get((REFERENCE, verb, c))
            if ours is None or ref is None:
                continue
            lines.append(
                f"{c:>4} {verb:<4} | {ours.p50_ms:8.1f} {ours.p99_ms:8.1f} {ours.rate:8.1f} |"
                f" {ref.p50_ms:8.1f} {ref.p99_ms:8.1f} {ref.rate:8.1f} |"
                f" {_ratio(ours.p50_ms, ref.p50_ms):>6} {_ratio(ours.p99_ms, ref.p99_ms):>6}"
                f" {_ratio(ours.rate, ref.rate):>6}"
            )
    lines.append("")
    for c in concurrencies:
        ours = by_key.get((OURS, "ADD", c))
        ref = by_key.get((REFERENCE, "ADD", c))
        if ours and ref:
            lines.append(
                f"ADD/s sustained at concurrency {c}: pyroute2-cni {ours.rate:.1f}, "
                f"bridge+host-local {ref.rate:.1f} ({_ratio(ours.rate, ref.rate).strip()})"
            )
    lines.append(
        f"shim alone (installed binary, {shim['binary_bytes']} bytes, against an answering "
        f"fake daemon, n={shim['n']}): p50 {shim['shim']['p50_ms']:.2f} ms, "
        f"p99 {shim['shim']['p99_ms']:.2f} ms; fork+exec of /bin/true p50 "
        f"{shim['bin_true']['p50_ms']:.2f} ms; overhead p50 {shim['overhead_p50_ms']:.2f} ms"
    )
    for p in phases:
        if p.daemon is not None and p.daemon.count:
            parts = ", ".join(f"{name} {t.mean_ms:.1f} ms" for name, t in p.parts.items())
            how = "through the shim" if p.plugin == OURS else "over zmq, no process"
            lines.append(
                f"inside the daemon, {p.verb} c={p.concurrency} ({how}): mean "
                f"{p.daemon.mean_ms:.1f} ms{f' ({parts})' if parts else ''}, "
                f"{p.daemon.share_within(0.1):.0%} within 100 ms (its histograms); "
                f"the call p50 {p.p50_ms:.1f} ms"
            )
    for p in phases:
        if p.plugin == DIRECT:
            lines.append(
                f"without a plugin process (the bench sends the shim's frames over zmq), "
                f"{p.verb} c={p.concurrency}: p50 {p.p50_ms:.1f} ms, p99 {p.p99_ms:.1f} ms, "
                f"{p.rate:.1f}/s"
            )
    failures = sum(len(p.failures) for p in phases)
    lines.append(f"failed CNI calls: {failures}")
    return "\n".join(lines)


def kernel() -> str:
    # scripts/uml-run exports UML_WORKDIR to the command it runs in the guest.
    where = "a User-Mode Linux guest" if os.environ.get("UML_WORKDIR") else "this kernel"
    return f"Linux {os.uname().release} in {where}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.cni_bench")
    parser.add_argument("--pods", type=int, default=200, help="pods per round (default 200)")
    parser.add_argument(
        "--concurrency", default="1,8", help="comma-separated concurrencies (default 1,8)"
    )
    parser.add_argument("--shim-n", type=int, default=300, help="shim-alone round trips")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if args.pods < 1 or not concurrencies or min(concurrencies) < 1:
        parser.error("--pods and every --concurrency must be at least 1")

    began = time.monotonic()
    shutil.rmtree(STATE_DIR, ignore_errors=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    phases: list[Phase] = []
    lab = Lab(LabOptions(state_dir=STATE_DIR, nodes=1, pods_per_node=0, progress=_say))
    try:
        lab.start()
        bench = CniBench(lab, args.pods)
        bench.make_pods()
        _say(f"lab up and {args.pods} pods made in {time.monotonic() - began:.1f} s")
        for concurrency in concurrencies:
            phases += bench.round(concurrency)
        shim = measure_shim_overhead(args.shim_n, binary=bench.ours_binary)
        bench.remove_pods()
        bench.close()
    finally:
        lab.stop()
        shutil.rmtree(WORK, ignore_errors=True)
    text = render(phases, shim, args.pods, kernel())
    print(text, flush=True)
    RESULT_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULT_FILE.write_text(
        json.dumps(
            {
                "pods": args.pods,
                "kernel": kernel(),
                "phases": [p.to_json() for p in phases],
                "shim_alone": shim,
                "seconds": round(time.monotonic() - began, 1),
            },
            indent=2,
        )
        + "\n"
    )
    _say(f"done in {time.monotonic() - began:.1f} s; numbers in {RESULT_FILE}")
    return 1 if any(p.failures for p in phases) else 0


if __name__ == "__main__":
    sys.exit(main())
