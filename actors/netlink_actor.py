"""NetlinkActor: the node fabric (VRFs, bridges, VXLANs, rules) and pod plumbing.

Inputs: EnsureVrfDomain / RemoveVrfDomain / BringUpVrfDomain (commands), VniKnown (FRR),
NodeBlocksChanged (IPAM), ClusterSnapshot / ClusterObjectChanged (CRD watcher: the
desired domains and this node's VRFNodeConfig), PlumbPod / UnplumbPod / CheckPod /
ListPlumbedPods (CNI server) and Reconcile (its own timer).

How it works: every domain change recomputes the desired state with the pure
``netlink.model`` from a fresh kernel dump and executes the difference through a
:class:`NetlinkBackend`.  Every change is "ensure present/absent": the errno that means
"already so" (EEXIST, ENODEV, ESRCH, ENOENT, EADDRNOTAVAIL) is success, nothing else is.

Invariants:

- The kernel is the record.  Plumbed pods are found again from the alias on their host
  veth; domains from device names.  A restarted actor neither duplicates nor forgets.
- An attachment is network name + container id + ifname: an UnplumbPod or CheckPod of
  another network never touches ours.
- A pod whose pair vanished is plumbed again only after IPAM confirms its attachment
  still holds the address (ConfirmAllocation, answered by tell): IPAM may have reclaimed
  it meanwhile, and then two pods would share it.
- Nothing is deleted before it is known to be unwanted: devices of domains that are not
  desired go only after a ClusterSnapshot (the complete desired set) or a
  RemoveVrfDomain; gateway addresses are pruned only after the first NodeBlocksChanged.
- Devices are created down and come up when FRR knows their VNI (VniKnown) or on
  BringUpVrfDomain; devices found up at start stay up.
- Pod operations never fork and never call setns in this thread: the backend enters a pod
  namespace from a dedicated short-lived thread.

Keep in sync with: pyroute2_cni/netlink/model.py (names, routing design),
pyroute2_cni/netlink/backend.py (the protocol), tests/harness/fake_netlink.py.
"""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import closing, suppress
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks, BaseActor
from pyroute2_cni.messages.base import ErrorKind, Failure, Ok
from pyroute2_cni.messages.crd import (
    ChangeKind,
    ClusterObjectChanged,
    ClusterSnapshot,
    NamespaceChanged,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)
from pyroute2_cni.messages.frr import VniKnown
from pyroute2_cni.messages.ipam import (
    AllocationConfirmed,
    BlockInfo,
    ConfirmAllocation,
    NodeBlocksChanged,
)
from pyroute2_cni.messages.netlink import (
    BringUpVrfDomain,
    CheckPod,
    CniInterface,
    DomainState,
    EnsureVrfDomain,
    ListPlumbedPods,
    PlumbedPod,
    PlumbedPods,
    PlumbPod,
    PodCheckResult,
    PodPlumbed,
    Reconcile,
    ReconcileResult,
    RemoveVrfDomain,
    UnplumbPod,
    Vtep,
)
from pyroute2_cni.netlink.backend import NetlinkBackend, NetnsSession
from pyroute2_cni.netlink.desired import (
    NODE_RULES,
    DomainDesired,
    DomainIntent,
    desired_domain,
    domain_conflicts,
)
from pyroute2_cni.netlink.names import (
    bridge_name,
    host_veth_name,
    is_fabric_name,
    is_host_veth_name,
    pod_macs,
    pod_mtu,
    valid_container_id,
    valid_ifname,
    vrf_name,
    vxlan_name,
)
from pyroute2_cni.netlink.plan import (
    Action,
    AddAddress,
    AddRoute,
    AddRule,
    ChangeLink,
    CreateLink,
    DeleteAddress,
    DeleteLink,
    DeleteRoute,
    DeleteRule,
    LiveView,
    owned_by_domain,
    plan_addresses,
    plan_links,
    plan_orphan_routes,
    plan_orphans,
    plan_routes,
    plan_rules,
)
from pyroute2_cni.netlink.pods import (
    PodAlias,
    PodExpectation,
    PodSide,
    parse_pod_alias,
    pod_alias,
    pod_differences,
)
from pyroute2_cni.netlink.specs import (
    NODE_SYSCTLS,
    OUR_PROTO,
    RTPROT_BOOT,
    TABLE_MAIN,
    AddrSpec,
    LinkChange,
    LinkState,
    RouteSpec,
    RuleSpec,
    SysctlSpec,
    VethSpec,
)
from pyroute2_cni.netlink.vtep import choose_vtep
from pyroute2_cni.runtime.config import Settings
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.values.attachment import attachment_key, parse_key

FABRIC_KINDS = ("vrf", "bridge", "vxlan")

# The errno that means "already so" for each change.
_ALREADY: dict[type[Any], int] = {
    CreateLink: errno.EEXIST,
    DeleteLink: errno.ENODEV,
    AddAddress: errno.EEXIST,
    DeleteAddress: errno.EADDRNOTAVAIL,
    AddRoute: errno.EEXIST,
    DeleteRoute: errno.ESRCH,
    AddRule: errno.EEXIST,
    DeleteRule: errno.ENOENT,
}


class DomainConflict(Exception):
    """The domain's devices would collide with another domain's."""


class NetlinkActor(BaseActor):
    actor_name = "netlink"

    def __init__(
        self,
        hooks: ActorHooks,
        *,
        node: str,
        settings: Settings,
        backend_factory: Callable[[], NetlinkBackend],
        metrics: Metrics,
        ipam: Address | None = None,
    ) -> None:
        super().__init__(hooks)
        self._node = node
        # Confirms a pod's address before it is plumbed again; without it (tests of the
        # fabric alone) nothing is plumbed again.
        self._ipam = ipam
        self._settings = settings
        self._backend_factory = backend_factory
        self._metrics = metrics
        self._backend: NetlinkBackend | None = None
        self._intents: dict[int, DomainIntent] = {}
        self._blocks: tuple[BlockInfo, ...] = ()
        self._blocks_known = False
        self._desired_known = False
        self._brought_up: set[int] = set()
        self._known_vnis: set[int] = set()
        self._up_at_start: frozenset[str] = frozenset()
        self._node_configs: dict[str, VrfNodeConfigSpec] = {}
        self._vtep: Vtep | None = None
        self._pods: dict[str, PodAlias] = {}
        # What each pod this instance plumbed asked for, by host veth: a pair deleted by
        # hand is plumbed again from it (the alias alone lacks the address).
        self._plumbed: dict[str, PlumbPod] = {}
        # Pods to plumb again once IPAM confirms their address, by host veth.
        self._awaiting: dict[str, PlumbPod] = {}
        self._timer: threading.Timer | None = None
        self._timer_lock = threading.Lock()
        self._repairs: list[str] | None = None  # collecting during a Reconcile

    # -- lifecycle -------------------------------------------------------------------------
    def on_start(self) -> None:
        self._backend = self._backend_factory()
        self._inventory()
        self._schedule()
        self.set_ready(True, f"{len(self._pods)} pods found in the kernel")

    def release(self) -> None:
        with self._timer_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    def _schedule(self) -> None:
        with self._timer_lock:
            if self.stopping.is_set():
                return
            timer = threading.Timer(self._settings.netlink.reconcile_interval, self._tick)
            timer.daemon = True
            timer.name = f"{self.hooks.name}-reconcile-timer"
            self._timer = timer
            timer.start()

    def _tick(self) -> None:
        if self.stopping.is_set():
            return
        with suppress(pykka.ActorDeadError):
            self.actor_ref.tell(Reconcile(scheduled=True))

    @property
    def backend(self) -> NetlinkBackend:
        if self._backend is None:
            raise RuntimeError("the netlink backend is not open (actor not started)")
        return self._backend

    # -- dispatch --------------------------------------------------------------------------
    def handle(self, message: Any) -> Any:
        match message:
            case EnsureVrfDomain():
                return self._guard(message, lambda: self._on_ensure(message))
            case BringUpVrfDomain():
                return self._guard(message, lambda: self._on_bring_up(message))
            case VniKnown():
                return self._guard(message, lambda: self._on_vni_known(message))
            case RemoveVrfDomain():
                return self._guard(message, lambda: self._on_remove(message))
            case NodeBlocksChanged():
                return self._guard(message, lambda: self._on_blocks(message))
            case PlumbPod():
                return self._guard(message, lambda: self._on_plumb(message))
            case UnplumbPod():
                return self._guard(message, lambda: self._on_unplumb(message))
            case CheckPod():
                return self._guard(message, lambda: self._on_check(message))
            case ListPlumbedPods():
                return self._guard(message, self._on_list)
            case ClusterSnapshot():
                return self._guard(message, lambda: self._on_snapshot(message))
            case ClusterObjectChanged():
                return self._guard(message, lambda: self._on_object(message))
            case NamespaceChanged():
                return None  # published to every watcher subscriber; not ours
            case Reconcile():
                return self._on_reconcile(message)
            case AllocationConfirmed():
                return self._guard(message, lambda: self._on_confirmed(message))
            case _:
                return self.unknown(message)

    def _guard(self, message: Any, fn: Callable[[], Any]) -> Any:
        """Kernel errors become a typed Failure (and a log line); bugs still crash."""
        try:
            return fn()
        except DomainConflict as exc:
            self.log.error("%s: %s", type(message).__name__, exc)
            return Failure(reason=str(exc), kind=ErrorKind.INVALID)
        except OSError as exc:
            self.log.error("%s failed: %s", type(message).__name__, exc)
            return Failure(
                reason=f"{type(message).__name__} failed: {exc}",
                kind=ErrorKind.TEMPORARY,
                details=errno.errorcode.get(exc.errno or 0, ""),
            )

    # -- inventory -------------------------------------------------------------------------
    def _fabric_links(self) -> list[LinkState]:
        # Filtered by kind in the kernel: a node's hundreds of pod veths are not decoded.
        backend = self.backend
        return [link for kind in FABRIC_KINDS for link in backend.links(kind)]

    def _inventory(self) -> None:
        self._pods = self._pods_from(self.backend.links("veth"))
        self._remember(self._pods)
        self._up_at_start = frozenset(
            link.name for link in self._fabric_links() if link.up and is_fabric_name(link.name)
        )
        self._refresh_vtep()
        self.log.info(
            "inventory: %d plumbed pods, fabric devices up: %s; vtep %s",
            len(self._pods),
            ", ".join(sorted(self._up_at_start)) or "none",
            self._vtep,
        )

    @staticmethod
    def _pods_from(links: Iterable[LinkState]) -> dict[str, PodAlias]:
        pods: dict[str, PodAlias] = {}
        for link in links:
            if link.kind != "veth" or not is_host_veth_name(link.name):
                continue
            record = parse_pod_alias(link.alias)
            if record is not None:
                pods[link.name] = record
        return pods

    # -- VTEP and MTU ----------------------------------------------------------------------
    def _refresh_vtep(self) -> bool:
        backend = self.backend
        main_routes = backend.routes(TABLE_MAIN)
        # Only the candidates are read: configured names and default route interfaces.
        wanted: list[str | int] = [self._settings.netlink.vtep_interface]
        for config in self._node_configs.values():
            if config.node == self._node:
                wanted.extend(iface.name for iface in config.interfaces)
        wanted.extend(r.oif for r in main_routes if r.dst == "0.0.0.0/0" and r.oif)
        candidates = [link for key in wanted if key and (link := backend.link_get(key))]
        vtep = choose_vtep(
            node=self._node,
            node_configs=self._node_configs.values(),
            configured_interface=self._settings.netlink.vtep_interface,
            links=candidates,
            addresses=backend.addresses(),
            main_routes=main_routes,
        )
        changed = vtep != self._vtep
        if changed:
            self.log.info("VTEP %s (was %s)", vtep, self._vtep)
        self._vtep = vtep
        return changed

    def _mtu(self) -> int:
        return pod_mtu(self._settings.daemon.mtu, self._vtep.mtu if self._vtep else None)

    # -- domains ---------------------------------------------------------------------------
    def _known_vnis_for(self, intent: DomainIntent) -> frozenset[int]:
        known = set(self._known_vnis)
        for attachment in intent.domain.attachments:
            names = {
                bridge_name(attachment.type, intent.domain.vrf),
                vxlan_name(attachment.type, attachment.vni),
            }
            if names & self._up_at_start:
                known.add(attachment.vni)
        return frozenset(known)

    def _desired(self, intent: DomainIntent) -> DomainDesired:
        return desired_domain(
            intent,
            node=self._node,
            vtep=self._vtep,
            mtu=self._mtu(),
            blocks=self._blocks,
            brought_up=frozenset(self._brought_up),
            known_vnis=self._known_vnis_for(intent),
        )

    def _view(self, tables: Iterable[int]) -> LiveView:
        backend = self.backend
        routes = [route for table in sorted(set(tables)) for route in backend.routes(table)]
        return LiveView.build(self._fabric_links(), backend.addresses(), routes, backend.rules())

    def _apply_domain(self, vrf: int, view: LiveView | None = None) -> DomainState:
        """Bring one domain's devices, addresses and routes to the desired state.

        `view` may be shared by several domains: their objects are disjoint.  Without it,
        the node's sysctls and rules are ensured too (with it, the caller does that once).
        """
        intent = self._intents[vrf]
        conflict = domain_conflicts(self._intents.values()).get(vrf)
        if conflict:
            raise DomainConflict(f"VRFDomain {intent.domain.name} (vrf {vrf}): {conflict}")
        desired = self._desired(intent)
        alone = view is None
        if view is None:
            view = self._view([desired.table])
        self._execute(
            [
                *plan_links(desired, view),
                *plan_addresses(desired, view, prune=self._blocks_known),
                *plan_routes(desired, view),
            ]
        )
        if alone:
            self._ensure_node(desired.sysctls)
        vrf_link = next(link for link in desired.links if link.kind == "vrf")
        return DomainState(vrf=vrf, devices=tuple(sorted(desired.names)), up=vrf_link.up)

    def _ensure_node(self, extra_sysctls: Sequence[SysctlSpec] = ()) -> None:
        """Node sysctls and rules (after the domain's devices: the first VRF loads the
        vrf module, which brings net/vrf/strict_mode and the l3mdev rule)."""
        self._ensure_sysctls([*NODE_SYSCTLS, *extra_sysctls])
        wanted = list(NODE_RULES)
        conflicts = domain_conflicts(self._intents.values())
        for intent in self._intents.values():
            if intent.domain.vrf not in conflicts:
                wanted.extend(self._desired(intent).rules)
        tables = frozenset(i.domain.table for i in self._intents.values())
        view = LiveView.build((), (), (), self.backend.rules())
        self._execute(
            plan_rules(wanted, view, prune_tables=None if self._desired_known else tables)
        )

    def _ensure_sysctls(self, specs: Iterable[SysctlSpec]) -> None:
        backend = self.backend
        for spec in specs:
            current = backend.sysctl_get(spec.key)
            if current is None:
                if not spec.optional:
                    self.log.warning("sysctl %s does not exist", spec.key)
                continue
            if current == spec.value:
                continue
            try:
                backend.sysctl_set(spec.key, spec.value)
            except OSError as exc:
                # strict_mode cannot be turned on while foreign VRFs share a table.
                if spec.optional and exc.errno == errno.EBUSY:
                    self.log.error("cannot set %s=%s: %s", spec.key, spec.value, exc)
                    continue
                raise
            self._done("sysctl", f"sysctl {spec.key}={spec.value} (was {current})")

    def _execute(self, actions: Iterable[Action]) -> None:
        backend = self.backend
        for action in actions:
            try:
                match action:
                    case CreateLink(spec=spec):
                        backend.link_create(spec)
                    case DeleteLink(name=name):
                        backend.link_delete(name)
                    case ChangeLink(name=name, change=change):
                        backend.link_set(name, change)
                    case AddAddress(spec=spec):
                        backend.addr_add(spec)
                    case DeleteAddress(spec=spec):
                        backend.addr_delete(spec)
                    case AddRoute(spec=spec):
                        backend.route_add(spec)
                    case DeleteRoute(spec=spec):
                        backend.route_delete(spec)
                    case AddRule(spec=spec):
                        backend.rule_add(spec)
                    case DeleteRule(spec=spec):
                        backend.rule_delete(spec)
            except OSError as exc:
                if exc.errno != _ALREADY.get(type(action)):
                    raise
                self.log.debug("%s: already so (%s)", action.describe(), exc)
                continue
            self._done(action.kind, action.describe())

    def _done(self, kind: str, what: str) -> None:
        if self._repairs is not None:
            self._metrics.netlink_repairs.labels(kind).inc()
            self._repairs.append(what)
            self.log.warning("repaired: %s", what)
        else:
            self.log.info("%s", what)

    def _remove_domain(self, vrf: int, table: int | None) -> None:
        intent = self._intents.pop(vrf, None)
        self._brought_up.discard(vrf)
        if intent is not None:
            table = intent.domain.table
        links_view = self._view(())
        if table is None:
            live_vrf = links_view.by_name.get(vrf_name(vrf))
            table = live_vrf.table if live_vrf is not None and live_vrf.kind == "vrf" else None
        doomed = [
            link
            for link in links_view.links
            if is_fabric_name(link.name) and owned_by_domain(link, vrf, links_view)
        ]
        doomed.sort(key=lambda link: {"vxlan": 0, "bridge": 1}.get(link.kind, 2))
        actions: list[Action] = [
            DeleteLink(name=link.name, reason="domain removed") for link in doomed
        ]
        if table is not None:
            view = self._view([table])
            actions.extend(plan_orphan_routes(frozenset({table}), view))
            actions.extend(
                DeleteRule(
                    spec=RuleSpec(
                        priority=rule.priority, table=rule.table, dst=rule.dst, proto=rule.proto
                    )
                )
                for rule in view.rules
                if rule.plain() and rule.table == table and rule.proto == OUR_PROTO
            )
        self._execute(actions)

    def _remove_orphans(self) -> None:
        """After the desired set is complete: fabric devices of no desired domain go."""
        if not self._desired_known:
            return
        conflicts = domain_conflicts(self._intents.values())
        view = self._view(())
        wanted: set[str] = set()
        for intent in self._intents.values():
            if intent.domain.vrf not in conflicts:
                wanted |= self._desired(intent).names
            else:
                # Leave whatever a conflicting domain has; it is reported, not deleted.
                wanted |= {
                    link.name
                    for link in view.links
                    if owned_by_domain(link, intent.domain.vrf, view)
                }
        actions, tables = plan_orphans(frozenset(wanted), view)
        if tables:
            actions.extend(plan_orphan_routes(tables, self._view(tables)))
        self._execute(actions)

    def _apply_all(self) -> list[str]:
        """Every domain from one kernel dump, then the node's sysctls and rules once."""
        if not self._intents:
            return []
        errors: list[str] = []
        view = self._view(intent.domain.table for intent in self._intents.values())
        sysctls: list[SysctlSpec] = []
        for vrf in sorted(self._intents):
            try:
                self._apply_domain(vrf, view)
            except (OSError, DomainConflict) as exc:
                self.log.error("vrf %d: %s", vrf, exc)
                errors.append(f"vrf {vrf}: {exc}")
                continue
            sysctls.extend(self._desired(self._intents[vrf]).sysctls)
        try:
            self._ensure_node(sysctls)
        except OSError as exc:
            self.log.error("node sysctls and rules: %s", exc)
            errors.append(f"node: {exc}")
        return errors

    # -- domain handlers -------------------------------------------------------------------
    def _on_ensure(self, msg: EnsureVrfDomain) -> DomainState:
        self._replace_intent(DomainIntent(domain=msg.domain, system=msg.system))
        return self._apply_domain(msg.domain.vrf)

    def _replace_intent(self, intent: DomainIntent) -> None:
        """A renamed or renumbered domain: the old VRF of the same object goes."""
        for vrf, other in list(self._intents.items()):
            if other.domain.name == intent.domain.name and vrf != intent.domain.vrf:
                self._remove_domain(vrf, other.domain.table)
        old = self._intents.get(intent.domain.vrf)
        if old is not None and old.domain.table != intent.domain.table:
            # The table is fixed at creation: routes of the old table go (the VRF device is
            # recreated by the plan; the system rule follows the intent).
            table = old.domain.table
            self._execute(plan_orphan_routes(frozenset({table}), self._view([table])))
        self._intents[intent.domain.vrf] = intent

    def _on_bring_up(self, msg: BringUpVrfDomain) -> DomainState | Failure:
        self._brought_up.add(msg.vrf)
        if msg.vrf not in self._intents:
            return Failure(
                reason=f"vrf {msg.vrf} is not a known domain; it comes up once ensured",
                kind=ErrorKind.TEMPORARY,
            )
        return self._apply_domain(msg.vrf)

    def _on_vni_known(self, msg: VniKnown) -> Ok:
        self._known_vnis.add(msg.vni)
        if msg.vrf in self._intents:
            self._apply_domain(msg.vrf)
        return Ok()

    def _on_remove(self, msg: RemoveVrfDomain) -> Ok:
        self._remove_domain(msg.vrf, None)
        return Ok()

    def _on_blocks(self, msg: NodeBlocksChanged) -> Ok:
        self._blocks = msg.blocks
        self._blocks_known = True
        errors = self._apply_all()
        if errors:
            raise OSError(errno.EIO, "; ".join(errors))
        return Ok()

    def _system(self, domain: VrfDomainSpec) -> bool:
        return domain.vrf == self._settings.default.vrf

    def _on_snapshot(self, msg: ClusterSnapshot) -> Ok:
        self._node_configs = {c.name: c for c in msg.node_configs}
        wanted = {d.vrf: DomainIntent(domain=d, system=self._system(d)) for d in msg.domains}
        for vrf in sorted(set(self._intents) - set(wanted)):
            self._remove_domain(vrf, self._intents[vrf].domain.table)
        for intent in wanted.values():
            self._replace_intent(intent)
        self._desired_known = True
        self._refresh_vtep()
        errors = self._apply_all()
        self._remove_orphans()
        if errors:
            raise OSError(errno.EIO, "; ".join(errors))
        return Ok()

    def _on_object(self, msg: ClusterObjectChanged) -> Ok:
        obj = msg.obj
        if isinstance(obj, VrfDomainSpec):
            if msg.kind is ChangeKind.DELETED:
                current = self._intents.get(obj.vrf)
                if current is not None and current.domain.name == obj.name:
                    self._remove_domain(obj.vrf, current.domain.table)
                    self._ensure_node()
                return Ok()
            self._replace_intent(DomainIntent(domain=obj, system=self._system(obj)))
            self._apply_domain(obj.vrf)
            return Ok()
        if isinstance(obj, VrfNodeConfigSpec):
            if msg.kind is ChangeKind.DELETED:
                self._node_configs.pop(obj.name, None)
            else:
                self._node_configs[obj.name] = obj
            if obj.node == self._node and self._refresh_vtep():
                errors = self._apply_all()
                if errors:
                    raise OSError(errno.EIO, "; ".join(errors))
        return Ok()

    # -- reconcile ---------------------------------------------------------------------
    def _on_reconcile(self, msg: Reconcile) -> ReconcileResult:
        started = time.monotonic()
        self._repairs = []
        errors: list[str] = []
        try:
            try:
                self._refresh_vtep()
            except OSError as exc:
                errors.append(f"vtep: {exc}")
            errors.extend(self._apply_all())
            for step in (self._remove_orphans, self._reconcile_pods):
                try:
                    step()
                except OSError as exc:
                    errors.append(f"{step.__name__}: {exc}")
            repairs = tuple(self._repairs)
        finally:
            self._repairs = None
            if msg.scheduled:
                self._schedule()
        self.log.debug(
            "reconcile: %d repairs, %d errors in %.1f ms",
            len(repairs),
            len(errors),
            (time.monotonic() - started) * 1e3,
        )
        return ReconcileResult(repairs=repairs, errors=tuple(errors))

    def _reconcile_pods(self) -> None:
        backend = self.backend
        links = backend.links("veth")
        view = LiveView.build([*links, *backend.links("bridge")], (), (), ())
        self._pods = self._pods_from(links)
        self._remember(self._pods)
        missing = sorted(set(self._plumbed) - set(self._pods))
        for name, record in sorted(self._pods.items()):
            link = view.by_name[name]
            bridge = bridge_name(record.attachment, record.vrf)
            if bridge not in view.by_name:
                continue  # the domain is gone or not there yet
            change = LinkChange(
                master=bridge if view.master_name(link) != bridge else None,
                up=True if not link.up else None,
            )
            if change.empty():
                continue
            try:
                self.backend.link_set(name, change)
            except OSError as exc:
                if exc.errno != errno.ENODEV:  # the pod went meanwhile
                    raise
                continue
            self._done(
                "pod", f"set {name} ({record.container_id}/{record.ifname}) {change.describe()}"
            )
        for host in missing:
            self._confirm_then_replumb(self._plumbed.pop(host))

    def _confirm_then_replumb(self, msg: PlumbPod) -> None:
        host = host_veth_name(msg.container_id, msg.ifname)
        key = attachment_key(msg.network, msg.container_id, msg.ifname)
        if self._ipam is None:
            self.log.warning("%s: pair gone; no IPAM to confirm %s with, not plumbed", key, host)
            return
        self._awaiting[host] = msg
        if not self._ipam.tell(
            ConfirmAllocation(key=key, address=msg.address, reply_to=self.actor_ref)
        ):
            self._plumbed[host] = self._awaiting.pop(host)  # IPAM restarting: next round

    def _on_confirmed(self, reply: AllocationConfirmed) -> Ok:
        parsed = parse_key(reply.key)
        if parsed is None:
            return Ok()
        host = host_veth_name(parsed.container_id, parsed.ifname)
        msg = self._awaiting.get(host)
        if msg is None or msg.address != reply.address:
            return Ok()  # unplumbed or plumbed afresh meanwhile: nothing to put back
        del self._awaiting[host]
        if reply.held is None:
            self._plumbed[host] = msg  # IPAM has not read its blocks yet: next round
        elif not reply.held:
            self.log.warning(
                "%s: not plumbed again: IPAM no longer holds %s for it (reclaimed); "
                "its runtime will DEL or GC it",
                reply.key,
                reply.address,
            )
        else:
            self._replumb(msg)
        return Ok()

    def _remember(self, pods: dict[str, PodAlias]) -> None:
        """Pods plumbed by an earlier instance: what their aliases say they were given."""
        for host, record in pods.items():
            if host in self._plumbed or not (record.address and record.netns):
                continue
            self._plumbed[host] = PlumbPod(
                container_id=record.container_id,
                ifname=record.ifname,
                network=record.network,
                netns=record.netns,
                vrf=record.vrf,
                attachment=record.attachment,
                address=record.address,
                prefixlen=record.prefixlen,
                gateway=record.gateway,
            )

    def _replumb(self, msg: PlumbPod) -> None:
        """The pod's pair is gone (deleted by hand: the pod end goes with it) while its
        namespace is still there: plumb it again, same names, MACs and address."""
        what = f"{msg.container_id[:12]}/{msg.ifname} {msg.address}/{msg.prefixlen}"
        try:
            self.backend.open_netns(msg.netns).close()
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return  # the sandbox went without a DEL; GC and IPAM reclaim the rest
            raise
        try:
            result = self._on_plumb(msg)
        except OSError:
            self._plumbed[host_veth_name(msg.container_id, msg.ifname)] = msg  # next round
            raise
        if isinstance(result, Failure):
            self.log.warning("could not plumb %s again: %s", what, result.reason)
            if result.kind is ErrorKind.TEMPORARY:  # e.g. its VRF is being rebuilt
                self._plumbed[host_veth_name(msg.container_id, msg.ifname)] = msg
            return
        # Counted here: the confirmation arrives outside the Reconcile that asked for it.
        repair = f"plumbed {what} again on {result.host.name}"
        self._metrics.netlink_repairs.labels("pod").inc()
        if self._repairs is not None:
            self._repairs.append(repair)
        self.log.warning("repaired: %s", repair)

    # -- pods --------------------------------------------------------------------------
    def _on_plumb(self, msg: PlumbPod) -> PodPlumbed | Failure:
        if not valid_container_id(msg.container_id) or not valid_ifname(msg.ifname):
            return Failure(
                reason=f"invalid container id {msg.container_id!r} or ifname {msg.ifname!r}",
                kind=ErrorKind.INVALID,
            )
        intent = self._intents.get(msg.vrf)
        if intent is None:
            return Failure(
                reason=f"VRF {msg.vrf} is not set up on node {self._node} yet",
                kind=ErrorKind.TEMPORARY,
            )
        if msg.attachment not in {a.type for a in intent.domain.attachments}:
            return Failure(
                reason=f"VRFDomain {intent.domain.name} has no {msg.attachment.value} attachment",
                kind=ErrorKind.INVALID,
            )
        backend = self.backend
        bridge = bridge_name(msg.attachment, msg.vrf)
        host = host_veth_name(msg.container_id, msg.ifname)
        host_mac, pod_mac = pod_macs(self._node, msg.container_id, msg.ifname)
        self._awaiting.pop(host, None)  # this ADD supersedes a pending re-plumb
        record = PodAlias(
            vrf=msg.vrf,
            attachment=msg.attachment,
            container_id=msg.container_id,
            ifname=msg.ifname,
            network=msg.network,
            netns=msg.netns,
            address=msg.address,
            prefixlen=msg.prefixlen,
            gateway=msg.gateway,
        )
        mtu = self._mtu()
        live = backend.link_get(host)
        if live is not None and not live.alias:
            # Our name (a hash of this attachment) without the alias: a pair half made
            # when the daemon died between creating it and labelling it.  Start over.
            self._delete_host_veth(host)
            live = None
        if live is not None:
            owner = parse_pod_alias(live.alias)
            if owner is None or (owner.container_id, owner.ifname) != (
                msg.container_id,
                msg.ifname,
            ):
                return Failure(
                    reason=f"host interface {host} exists and is not this attachment's",
                    kind=ErrorKind.CONFLICT,
                    details=live.alias,
                )
            if owner.network != msg.network:
                return Failure(
                    reason=f"{msg.container_id}/{msg.ifname} is attached to network "
                    f"{owner.network}, not {msg.network}",
                    kind=ErrorKind.CONFLICT,
                    details="one interface name per container: use another CNI_IFNAME "
                    "for the second network",
                )
            if owner.netns != msg.netns and owner.netns:
                # Same attachment, another sandbox path: the old pair cannot be reused.
                self._delete_host_veth(host)
                live = None
            else:
                # A repeated ADD answers what the first one did.
                host_mac, mtu = live.mac, live.mtu or mtu
        created = live is None
        if created:
            try:
                backend.veth_create(
                    VethSpec(
                        host_name=host,
                        host_mac=host_mac,
                        peer_name=msg.ifname,
                        peer_mac=pod_mac,
                        netns=msg.netns,
                        mtu=mtu,
                        master=bridge,
                        alias=pod_alias(record),
                    )
                )
            except OSError as exc:
                return self._plumb_failure(msg, exc)
        else:
            assert live is not None
            change = LinkChange(
                master=bridge if not self._has_master(live, bridge) else None,
                up=True if not live.up else None,
                alias=pod_alias(record) if live.alias != pod_alias(record) else None,
            )
            backend.link_set(host, change)
        try:
            with closing(backend.open_netns(msg.netns)) as pod:
                pod_mac = self._configure_pod(pod, msg, pod_mac, mtu, fresh=created)
        except OSError as exc:
            if created:
                self._delete_host_veth(host)
            if exc.errno == errno.ENODEV and not created:
                # The pod end is not in this namespace: recreate the pair once.
                self._delete_host_veth(host)
                return self._on_plumb(msg)
            return self._plumb_failure(msg, exc)
        self._pods[host] = record
        self._plumbed[host] = msg
        self.log.info(
            "plumbed %s/%s: %s %s/%d via %s on %s",
            msg.container_id[:12],
            msg.ifname,
            host,
            msg.address,
            msg.prefixlen,
            msg.gateway,
            bridge,
        )
        return PodPlumbed(
            host=CniInterface(name=host, mac=host_mac),
            container=CniInterface(name=msg.ifname, mac=pod_mac, sandbox=msg.netns, mtu=mtu),
            address=msg.address,
            prefixlen=msg.prefixlen,
            gateway=msg.gateway,
            mtu=mtu,
        )

    def _has_master(self, link: LinkState, bridge: str) -> bool:
        master = self.backend.link_get(bridge)
        return master is not None and master.index == link.master

    def _plumb_failure(self, msg: PlumbPod, exc: OSError) -> Failure:
        if exc.errno == errno.ENOENT:
            return Failure(
                reason=f"network namespace {msg.netns} does not exist", kind=ErrorKind.INVALID
            )
        if exc.errno == errno.EEXIST:
            return Failure(
                reason=f"{msg.ifname} already exists in {msg.netns}",
                kind=ErrorKind.INVALID,
                details=str(exc),
            )
        if exc.errno in (errno.ENETUNREACH, errno.EINVAL):
            return Failure(
                reason=f"cannot route via {msg.gateway} from {msg.address}/{msg.prefixlen}",
                kind=ErrorKind.INVALID,
                details=str(exc),
            )
        raise exc

    def _configure_pod(
        self, pod: NetnsSession, msg: PlumbPod, mac: str, mtu: int, *, fresh: bool
    ) -> str:
        """Address, link up (gratuitous ARP), default route via the gateway.  Returns the
        pod side's MAC."""
        address = AddrSpec(ifname=msg.ifname, address=msg.address, prefixlen=msg.prefixlen)
        default = RouteSpec(
            table=TABLE_MAIN,
            dst="0.0.0.0/0",
            gateway=msg.gateway,
            oif=msg.ifname,
            proto=RTPROT_BOOT,
        )
        if fresh:
            # The address before the link comes up: with arp_notify the kernel then sends
            # the gratuitous ARP for it (bridge FDB, EVPN MAC learning).
            pod.link_set(msg.ifname, LinkChange(arp_notify=True))
            pod.addr_add(address)
            pod.link_set(msg.ifname, LinkChange(up=True))
            try:
                pod.route_add(default)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                pod.route_replace(default)
        else:
            link = pod.link_get(msg.ifname)
            if link is None or link.kind != "veth":
                raise OSError(errno.ENODEV, f"{msg.ifname} is not our veth in {msg.netns}")
            mac = link.mac
            pod.link_set(
                msg.ifname,
                LinkChange(up=True if not link.up else None, mtu=mtu if link.mtu != mtu else None),
            )
            have = {(a.address, a.prefixlen) for a in pod.addresses(link.index)}
            if (msg.address, msg.prefixlen) not in have:
                pod.addr_add(address)
            defaults = [r for r in pod.routes(TABLE_MAIN) if r.dst == "0.0.0.0/0" and r.metric == 0]
            if not any(r.gateway == msg.gateway and r.oif == link.index for r in defaults):
                pod.route_replace(default)
        return mac

    def _delete_host_veth(self, host: str) -> None:
        try:
            self.backend.link_delete(host)
        except OSError as exc:
            if exc.errno != errno.ENODEV:
                raise
        self._pods.pop(host, None)
        self._plumbed.pop(host, None)

    def _on_unplumb(self, msg: UnplumbPod) -> Ok | Failure:
        host = host_veth_name(msg.container_id, msg.ifname)
        live = self.backend.link_get(host)
        owner = parse_pod_alias(live.alias) if live is not None else None
        if owner is not None and owner.network != msg.network:
            # Another network's attachment with the same container id and ifname: not
            # this DEL's (nothing of msg.network is here), so it stays.
            self.log.info(
                "DEL of %s/%s for network %s: %s belongs to network %s; left alone",
                msg.container_id[:12],
                msg.ifname,
                msg.network,
                host,
                owner.network,
            )
            return Ok()
        self._awaiting.pop(host, None)
        if live is None:
            self._pods.pop(host, None)
            self._plumbed.pop(host, None)
            return Ok()
        if live.alias and (
            owner is None or (owner.container_id, owner.ifname) != (msg.container_id, msg.ifname)
        ):
            # An empty alias is our own half-made pair (see _on_plumb): removed below.
            return Failure(
                reason=f"host interface {host} is not this attachment's; left alone",
                kind=ErrorKind.CONFLICT,
                details=live.alias,
            )
        self._delete_host_veth(host)
        self.log.info("unplumbed %s/%s (%s)", msg.container_id[:12], msg.ifname, host)
        return Ok()

    def _on_check(self, msg: CheckPod) -> PodCheckResult:
        host = host_veth_name(msg.container_id, msg.ifname)
        backend = self.backend
        live = backend.link_get(host)
        record = parse_pod_alias(live.alias) if live is not None else self._pods.get(host)
        if record is not None and record.network != msg.network:
            return PodCheckResult(
                ok=False,
                differences=(f"{host} is attached to network {record.network}, not {msg.network}",),
            )
        bridge = bridge_name(record.attachment, record.vrf) if record else "(unknown)"
        master = ""
        if live is not None and live.master:
            bridge_link = backend.link_get(bridge) if record else None
            if bridge_link is not None and bridge_link.index == live.master:
                master = bridge
            else:
                other = backend.link_get(live.master)
                master = other.name if other is not None else f"#{live.master}"
        pod_side: PodSide | None
        try:
            with closing(backend.open_netns(msg.netns)) as pod:
                link = pod.link_get(msg.ifname)
                pod_side = PodSide(
                    link=link,
                    addresses=pod.addresses(link.index) if link else (),
                    default_gateways=tuple(
                        r.gateway
                        for r in pod.routes(TABLE_MAIN)
                        if r.dst == "0.0.0.0/0" and (link is None or r.oif == link.index)
                    ),
                )
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
            pod_side = None
        expected = PodExpectation(
            ifname=msg.ifname,
            address=msg.address,
            prefixlen=msg.prefixlen,
            gateway=msg.gateway,
            mtu=msg.mtu,
            bridge=bridge,
        )
        diffs = pod_differences(expected, live, master, pod_side)
        return PodCheckResult(ok=not diffs, differences=diffs)

    def _on_list(self) -> PlumbedPods:
        self._pods = self._pods_from(self.backend.links("veth"))
        return PlumbedPods(
            pods=tuple(
                PlumbedPod(
                    container_id=record.container_id,
                    ifname=record.ifname,
                    host_ifname=name,
                    vrf=record.vrf,
                    network=record.network,
                    address=record.address,
                )
                for name, record in sorted(self._pods.items())
            )
        )
