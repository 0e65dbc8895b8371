"""CNIServerActor: the daemon's front door for the CNI shim.

A pump thread owns the zmq ROUTER socket (zmq sockets are not thread-safe):
it decodes each request and hands it to a keyed executor, so requests run
concurrently while operations on one attachment stay ordered.  Workers
orchestrate IPAM and netlink through ``Address.ask`` (they are edges, not
actor handlers) and queue their replies back to the pump.  The actor itself
only keeps the cluster view (domains, bindings) that picks a pod's VRF.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from pyroute2_cni.actors.address import ActorUnavailable, Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.cni import install as cni_install
from pyroute2_cni.cni.attachment_gate import AttachmentGate
from pyroute2_cni.cni.log import ROUTINE_VERBS, RequestTrace, render_text
from pyroute2_cni.cni.shim_protocol import BadRequest, encode_reply, split_envelope
from pyroute2_cni.cni.shim_protocol import parse_request as parse_frames
from pyroute2_cni.cni.spec import (
    CniError,
    Code,
    Request,
    expected_from_prev_result,
    parse_request,
    render_add_result,
    render_error,
    render_version,
    valid_attachments,
)
from pyroute2_cni.kube.objects import utc_now
from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.cni import CheckInstall
from pyroute2_cni.messages.crd import (
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    VrfDomainBindingSpec,
    VrfDomainSpec,
)
from pyroute2_cni.messages.events import RecordEvent
from pyroute2_cni.messages.ipam import (
    AddressAllocated,
    AddressesReleased,
    AddressLookupResult,
    AllocateAddress,
    LookupAddress,
    PodRef,
    ReleaseAddress,
    ReleaseAllExcept,
)
from pyroute2_cni.messages.netlink import (
    CheckPod,
    ListPlumbedPods,
    PlumbedPods,
    PlumbPod,
    PodCheckResult,
    PodPlumbed,
    UnplumbPod,
)
from pyroute2_cni.messages.node_state import CniFailureSeen
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.health import HealthReport
from pyroute2_cni.runtime.keyed_executor import KeyedExecutor
from pyroute2_cni.runtime.logsetup import FIELDS
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.attachment import attachment_key


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterView:
    """What picks a pod's VRF; replaced whole, read by workers without locks."""

    domains: dict[str, VrfDomainSpec]
    bindings: dict[str, VrfDomainBindingSpec]  # by namespace
    synced: bool


class CNIServerActor(BaseActor):
    def __init__(
        self,
        hooks: ActorHooks,
        *,
        settings: Settings,
        ipam: Address,
        netlink: Address,
        readiness: Callable[[], HealthReport],
        metrics: Metrics,
        workers: int = 16,
        state: Address | None = None,
        events: Address | None = None,
    ) -> None:
        super().__init__(hooks)
        self._state = state
        self._events = events
        self._settings = settings
        self._ipam = ipam
        self._netlink = netlink
        self._readiness = readiness
        self._metrics = metrics
        self._workers = workers
        self._current = ClusterView(domains={}, bindings={}, synced=False)
        self._gate = AttachmentGate()
        self._replies: queue.SimpleQueue[list[bytes]] = queue.SimpleQueue()
        self._wake_r, self._wake_w = -1, -1
        self._pump: threading.Thread | None = None
        self._executor: KeyedExecutor | None = None
        self._installed = False
        self._tick: threading.Timer | None = None

    # -- lifecycle ---------------------------------------------------------
    def on_start(self) -> None:
        endpoint = self._settings.daemon.socket
        path = Path(endpoint.removeprefix("ipc://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # A socket file left by a killed daemon would make bind fail.
        path.unlink(missing_ok=True)
        self._context = zmq.Context()
        router = self._context.socket(zmq.ROUTER)
        router.setsockopt(zmq.LINGER, 0)
        router.bind(endpoint)
        os.chmod(path, 0o600)
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        self._executor = KeyedExecutor(self._workers, "cni-worker")
        self._pump = threading.Thread(
            target=self._pump_loop, args=(router,), name="cni-pump", daemon=True
        )
        self._pump.start()
        self.set_ready(False, "waiting for the cluster view")
        self._schedule_tick()

    def release(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
        if self._pump is not None:
            self._wake()
            self._pump.join(timeout=2)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if hasattr(self, "_context"):
            self._context.destroy(linger=0)
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    def _schedule_tick(self) -> None:
        if self.stopping.is_set():
            return
        self._tick = threading.Timer(1.0, self._tell_self, args=(CheckInstall(),))
        self._tick.daemon = True
        self._tick.start()

    def _tell_self(self, message: Any) -> None:
        if not self.stopping.is_set():
            self.actor_ref.tell(message)

    @property
    def _view(self) -> ClusterView:
        return self._current

    @_view.setter
    def _view(self, view: ClusterView) -> None:
        # What ADDs pick VRFs from: a binding this node has not seen yet sends its
        # namespace's pods to the default domain (the lab waits on these).
        self._current = view
        self._metrics.vrfdomains_known.set(len(view.domains))
        self._metrics.bindings_known.set(len(view.bindings))

    # -- messages ----------------------------------------------------------
    def handle(self, message: Any) -> Any:
        match message:
            case ClusterSnapshot():
                self._view = ClusterView(
                    domains={d.name: d for d in message.domains},
                    bindings={b.namespace: b for b in message.bindings},
                    synced=True,
                )
                self.set_ready(True)
                return Ok()
            case ClusterObjectChanged(kind=kind, obj=VrfDomainSpec() as domain):
                domains = dict(self._view.domains)
                if kind is ChangeKind.DELETED:
                    domains.pop(domain.name, None)
                else:
                    domains[domain.name] = domain
                self._view = ClusterView(
                    domains=domains, bindings=self._view.bindings, synced=self._view.synced
                )
                return Ok()
            case ClusterObjectChanged(kind=kind, obj=VrfDomainBindingSpec() as binding):
                bindings = {
                    ns: b for ns, b in self._view.bindings.items() if b.name != binding.name
                }
                if kind is not ChangeKind.DELETED:
                    bindings[binding.namespace] = binding
                self._view = ClusterView(
                    domains=self._view.domains, bindings=bindings, synced=self._view.synced
                )
                return Ok()
            case ClusterObjectChanged() | NamespaceChanged():
                return Ok()
            case CheckInstall():
                self._maybe_install()
                self._schedule_tick()
                return Ok()
            case _:
                return self.unknown(message)

    def _maybe_install(self) -> None:
        daemon = self._settings.daemon
        if self._installed or not daemon.install_cni or not self._readiness().ready:
            return
        if not Path(daemon.shim_source).is_file():
            self.set_ready(False, f"shim binary {daemon.shim_source} is missing")
            return
        cni_install.install_shim(daemon.shim_source, daemon.cni_bin_dir)
        conf = cni_install.install_conflist(daemon.cni_conf_dir, daemon.socket)
        self._installed = True
        self.log.info("installed the shim in %s and %s", daemon.cni_bin_dir, conf)

    # -- the pump (its own thread; the only user of the ROUTER socket) -------
    def _wake(self) -> None:
        if self._wake_w >= 0:
            # A full pipe means the pump is awake anyway.
            with contextlib.suppress(BlockingIOError):
                os.write(self._wake_w, b"x")

    def _pump_loop(self, router: zmq.Socket[bytes]) -> None:
        poller = zmq.Poller()
        poller.register(router, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        seq = 0
        try:
            while not self.stopping.is_set():
                events = dict(poller.poll(500))
                if self._wake_r in events:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                while True:
                    try:
                        router.send_multipart(self._replies.get_nowait())
                    except queue.Empty:
                        break
                if router not in events:
                    continue
                while True:
                    try:
                        frames = router.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    seq += 1
                    self._dispatch(frames, seq)
        finally:
            router.close(linger=0)

    def _dispatch(self, frames: list[bytes], seq: int) -> None:
        try:
            envelope, body = split_envelope(frames)
        except BadRequest as exc:
            self.log.error("dropping a malformed zmq message: %s", exc)
            return
        try:
            shim = parse_frames(body)
        except BadRequest as exc:
            error = CniError(Code.DECODE_FAILURE, "malformed request from the shim", str(exc))
            self._reply(envelope, 1, render_error(None, error))
            return
        env = {
            "CNI_COMMAND": shim.command,
            "CNI_CONTAINERID": shim.container_id,
            "CNI_NETNS": shim.netns,
            "CNI_IFNAME": shim.ifname,
            "CNI_ARGS": shim.args,
        }
        key = f"{shim.container_id}/{shim.ifname}" if shim.container_id else f"#{seq}"
        assert self._executor is not None
        self._executor.submit(key, lambda: self._serve(envelope, env, shim.stdin))

    def _reply(self, envelope: list[bytes], status: int, payload: dict[str, Any] | None) -> None:
        output = b"" if payload is None else json.dumps(payload).encode() + b"\n"
        self._replies.put(envelope + encode_reply(status, output))
        self._wake()

    # -- workers -----------------------------------------------------------
    def _serve(self, envelope: list[bytes], env: dict[str, str], stdin: bytes) -> None:
        trace = RequestTrace(verb=env.get("CNI_COMMAND", "") or "UNKNOWN")
        trace.container_id = env.get("CNI_CONTAINERID", "")
        trace.ifname = env.get("CNI_IFNAME", "")
        version: str | None = None
        try:
            request = parse_request(env, stdin)
            version = request.cni_version
            trace.identify(request)
            result = self._run(request, trace)
            self._reply(envelope, 0, result)
            trace.result = "ok"
        except CniError as exc:
            self._reply(envelope, 1, render_error(version, exc))
            trace.result = str(int(exc.code))
            trace.error = str(exc)
        except Exception as exc:
            self.log.exception("%s failed unexpectedly", trace.verb)
            error = CniError(
                Code.TRY_AGAIN_LATER, f"{trace.verb} failed inside the daemon", repr(exc)
            )
            self._reply(envelope, 1, render_error(version, error))
            trace.result = str(int(error.code))
            trace.error = repr(exc)
        verb = trace.verb
        if verb not in ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"):
            verb = trace.verb = "UNKNOWN"
        self._metrics.requests.labels(verb, trace.result).inc()
        self._metrics.request_duration.labels(verb).observe(time.monotonic() - trace.started)
        self._log_request(trace)
        if self._state is not None and trace.result != "ok" and verb in ("ADD", "DEL", "CHECK"):
            # A failed STATUS is the readiness, already in the node's state.
            self._state.tell(
                CniFailureSeen(verb=verb, pod=trace.pod, message=trace.error, at=utc_now())
            )

    def _log_request(self, trace: RequestTrace) -> None:
        """One line per request; a runtime's "not ready yet" (code 50) is no warning."""
        if trace.result == "ok":
            level = logging.DEBUG if trace.verb in ROUTINE_VERBS else logging.INFO
        elif trace.result == str(int(Code.NOT_AVAILABLE)):
            level = logging.INFO
        else:
            level = logging.WARNING
        if self.log.isEnabledFor(level):
            fields = trace.fields()
            self.log.log(level, "%s", render_text(fields), extra={FIELDS: fields})

    def _run(self, request: Request, trace: RequestTrace) -> dict[str, Any] | None:
        match request.command:
            case "ADD":
                with self._gate.working(request.key):
                    return self._add(request, trace)
            case "DEL":
                with self._gate.working(request.key):
                    self._del(request)
                return None
            case "CHECK":
                with self._gate.working(request.key):
                    self._check(request)
                return None
            case "STATUS":
                self._status()
                return None
            case "GC":
                self._gc(request)
                return None
            case _:
                return render_version()

    def _ask(self, address: Address, message: Any, deadline: float | None = None) -> Any:
        # server.ini [cni] ask_timeout; within an ADD also what is left of add_timeout.
        timeout = self._settings.cni.ask_timeout
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
            if timeout <= 0:
                raise CniError(
                    Code.TRY_AGAIN_LATER,
                    f"ADD did not finish within server.ini [cni] add_timeout "
                    f"({self._settings.cni.add_timeout:g} s)",
                    f"{address.name} was not asked; the runtime will retry",
                )
        try:
            reply = address.ask(message, timeout=timeout)
        except ActorUnavailable as exc:
            raise CniError(
                Code.TRY_AGAIN_LATER,
                f"the daemon's {address.name} is not available",
                f"{exc}; the runtime will retry",
            ) from None
        if isinstance(reply, Failure):
            code = Code.TRY_AGAIN_LATER
            if reply.kind is ErrorKind.INVALID:
                code = Code.INVALID_CONFIG
            raise CniError(code, reply.reason, reply.details)
        return reply

    def _domain_for(self, request: Request) -> VrfDomainSpec:
        view = self._view
        if not view.synced:
            raise CniError(
                Code.TRY_AGAIN_LATER,
                "the daemon has not read the cluster's VRFDomains yet",
                "it is starting; the runtime will retry",
            )
        binding = view.bindings.get(request.pod_namespace)
        if binding is not None:
            domain = view.domains.get(binding.domain)
            if domain is None:
                self._binding_broken(binding.name, binding.domain, request.pod_namespace)
                raise CniError(
                    Code.TRY_AGAIN_LATER,
                    f"namespace {request.pod_namespace} is bound to VRFDomain {binding.domain} "
                    f"by VRFDomainBinding {binding.name}, but that VRFDomain does not exist "
                    "or was not accepted",
                    f"create VRFDomain {binding.domain} (see its status conditions if it exists) "
                    f"or delete VRFDomainBinding {binding.name}",
                )
            return domain
        vrf = self._settings.default.vrf
        for domain in view.domains.values():
            if domain.vrf == vrf:
                return domain
        raise CniError(
            Code.TRY_AGAIN_LATER,
            f"the system VRFDomain (vrf {vrf}) does not exist yet",
            "the daemon creates it from server.ini [default] when no VRFDomain exists",
        )

    def _binding_broken(self, binding: str, domain: str, namespace: str) -> None:
        """A Warning on the binding (aggregated by the EventActor): `kubectl describe
        vrfdb` is where the fix is."""
        if self._events is None:
            return
        node = self._settings.daemon.node_name
        self._events.tell(
            RecordEvent(
                kind="VRFDomainBinding",
                name=binding,
                reason="VRFDomainMissing",
                message=(
                    f"node {node}: pods of namespace {namespace} get no network: VRFDomain "
                    f"{domain} does not exist or was not accepted; create it (see its status "
                    "if it exists) or delete this binding"
                ),
            )
        )

    def _add(self, request: Request, trace: RequestTrace) -> dict[str, Any]:
        domain = self._domain_for(request)
        trace.vrf = domain.vrf
        pod = PodRef(namespace=request.pod_namespace, name=request.pod_name, uid=request.pod_uid)
        # Answered within add_timeout, before the shim (shim_timeout) gives up.
        deadline = time.monotonic() + self._settings.cni.add_timeout
        with self._phase("ipam", trace):
            allocated: AddressAllocated = self._ask(
                self._ipam, AllocateAddress(key=request.key, pod=pod, domain=domain), deadline
            )
        trace.address = allocated.address
        try:
            with self._phase("netlink", trace):
                plumbed: PodPlumbed = self._ask(
                    self._netlink,
                    PlumbPod(
                        container_id=request.container_id,
                        ifname=request.ifname,
                        network=request.network,
                        netns=request.netns,
                        vrf=allocated.vrf,
                        attachment=allocated.attachment,
                        address=allocated.address,
                        prefixlen=allocated.prefixlen,
                        gateway=allocated.gateway,
                    ),
                    deadline,
                )
        except CniError:
            self._rollback(request, deadline)
            raise
        dns = request.config.get("dns") or {}
        return render_add_result(request.cni_version, plumbed, dns if isinstance(dns, dict) else {})

    @contextmanager
    def _phase(self, name: str, trace: RequestTrace) -> Iterator[None]:
        """Time one ADD phase for the metric and the request's log line."""
        started = time.monotonic()
        try:
            yield
        finally:
            spent = time.monotonic() - started
            self._metrics.add_phase_duration.labels(name).observe(spent)
            trace.phases[name] = spent

    def _rollback(self, request: Request, deadline: float | None = None) -> None:
        """A failed ADD leaves nothing behind: devices removed, address released.

        Within the ADD's budget when time is left; a step the budget cannot cover
        (and those after it) runs after the error is answered, in the attachment's
        own queue, so a retried ADD or a DEL of it still comes after.
        """
        unplumb = UnplumbPod(
            container_id=request.container_id,
            ifname=request.ifname,
            netns=request.netns,
            network=request.network,
        )
        for address, message in (
            (self._netlink, unplumb),
            (self._ipam, ReleaseAddress(key=request.key)),
        ):
            try:
                self._ask(address, message, deadline)
            except CniError as exc:
                if deadline is not None and time.monotonic() >= deadline and self._executor:
                    # Unplumb and release are idempotent: the whole rollback again.
                    key = f"{request.container_id}/{request.ifname}"
                    self._executor.submit(key, lambda: self._rollback(request))
                    self.log.info(
                        "rollback of %s continues after the answer (add_timeout spent)",
                        request.key,
                    )
                    return
                self.log.error(
                    "rollback of %s: %s failed: %s", request.key, type(message).__name__, exc
                )

    def _del(self, request: Request) -> None:
        # Always release the address, even when unplumbing fails.
        failure: CniError | None = None
        try:
            self._ask(
                self._netlink,
                UnplumbPod(
                    container_id=request.container_id,
                    ifname=request.ifname,
                    netns=request.netns,
                    network=request.network,
                ),
            )
        except CniError as exc:
            failure = exc
        self._ask(self._ipam, ReleaseAddress(key=request.key))
        if failure is not None:
            raise failure

    def _check(self, request: Request) -> None:
        expected = expected_from_prev_result(request.config, request.ifname)
        lookup: AddressLookupResult = self._ask(self._ipam, LookupAddress(key=request.key))
        if lookup.allocation is None or lookup.allocation.address != expected.address:
            held = lookup.allocation.address if lookup.allocation else "nothing"
            raise CniError(
                Code.CHECK_FAILED,
                f"IPAM holds {held} for {request.key}, prevResult says {expected.address}",
                "delete and re-create the pod",
            )
        mtu = 0
        prev = request.config.get("prevResult") or {}
        for iface in prev.get("interfaces") or []:
            if isinstance(iface, dict) and iface.get("sandbox") and iface.get("mtu"):
                mtu = int(iface["mtu"])
        result: PodCheckResult = self._ask(
            self._netlink,
            CheckPod(
                container_id=request.container_id,
                ifname=request.ifname,
                netns=request.netns,
                network=request.network,
                address=expected.address,
                prefixlen=expected.prefixlen,
                gateway=expected.gateway,
                mtu=mtu,
            ),
        )
        if not result.ok:
            raise CniError(
                Code.CHECK_FAILED,
                f"the live state of {request.key} differs from prevResult",
                "; ".join(result.differences),
            )

    def _status(self) -> None:
        report = self._readiness()
        if not report.ready:
            problems = [line for line in report.lines if "not ready" in line]
            raise CniError(
                Code.NOT_AVAILABLE,
                f"pyroute2-cni on node {self._settings.daemon.node_name} cannot serve ADD yet",
                "; ".join(problems) or "the daemon is not ready",
            )

    def _gc(self, request: Request) -> None:
        """Release and unplumb this network's attachments that are neither in the runtime's
        valid list nor being worked on; other networks' attachments are not ours to judge."""
        network = request.network
        listed = valid_attachments(request.config)
        with self._gate.exclusive() as in_flight:
            keep = listed | in_flight
            released: AddressesReleased = self._ask(
                self._ipam, ReleaseAllExcept(network=network, keep=keep)
            )
            plumbed: PlumbedPods = self._ask(self._netlink, ListPlumbedPods())
            unplumbed = 0
            for pod in plumbed.pods:
                key = attachment_key(pod.network, pod.container_id, pod.ifname)
                if pod.network != network or key in keep:
                    continue
                self._ask(
                    self._netlink,
                    UnplumbPod(
                        container_id=pod.container_id,
                        ifname=pod.ifname,
                        netns="",
                        network=pod.network,
                    ),
                )
                unplumbed += 1
        if released.keys or unplumbed:
            self.log.info(
                "GC of network %s: released %d addresses, unplumbed %d pods (kept %d listed, "
                "%d in flight)",
                network,
                len(released.keys),
                unplumbed,
                len(listed),
                len(in_flight - listed),
            )
