"""Cluster state as typed values, converted from Kubernetes objects at the edge.

CRDWatcherActor publishes these; nothing downstream sees a kubernetes model
object or a dict.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from pyroute2_cni.messages.base import Recipient


class AttachmentType(Enum):
    L2VNI = "l2vni"
    L3VNI = "l3vni"


@dataclass(frozen=True, slots=True, kw_only=True)
class Attachment:
    type: AttachmentType
    vni: int
    port: int = 4789
    # spec.attachments[].routeTargets of an l2vni (its MAC-VRF); empty: the derived
    # <AS>:<vni>.  An l3vni's are the domain's spec.routeTargets.
    import_route_targets: tuple[str, ...] = ()
    export_route_targets: tuple[str, ...] = ()


# spec.acceptDefaultRoute when the object does not set it.  False: a default route
# from the fabric would take the system VRF's fall-through to the host's tables and a
# tenant VRF's `unreachable default` (see netlink.desired); before the field existed it
# was always installed (True renders exactly the configuration of that time).
DEFAULT_ACCEPT_DEFAULT_ROUTE = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ImportPrefix:
    """One entry of spec.importPrefixes: routes inside `cidr`, exactly (le None) or up to
    prefix length `le`."""

    cidr: str
    le: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class VrfDomainSpec:
    """A VRFDomain custom resource (cni.pyroute2.org/v1alpha1).

    The routing policy fields are as written by the user (not yet validated);
    pyroute2_cni.frr.vrf_routing says what they mean.
    """

    name: str
    vrf: int
    table: int
    prefix: str
    prefixlen: int
    ipblocklen: int
    attachments: tuple[Attachment, ...]
    resource_version: str = ""
    # spec.routeTargets.import / .export; empty: the derived <AS>:<vrf>.
    import_route_targets: tuple[str, ...] = ()
    export_route_targets: tuple[str, ...] = ()
    # spec.importPrefixes; empty: no prefix restriction.
    import_prefixes: tuple[ImportPrefix, ...] = ()
    # spec.acceptDefaultRoute: install a 0.0.0.0/0 learned from the fabric.
    accept_default_route: bool = DEFAULT_ACCEPT_DEFAULT_ROUTE

    @property
    def cidr(self) -> str:
        return f"{self.prefix}/{self.prefixlen}"

    @property
    def vrf_name(self) -> str:
        return f"vrf-{self.vrf}"

    def pod_attachment(self) -> Attachment:
        """The attachment pods join: l2vni is preferred when both exist."""
        for wanted in (AttachmentType.L2VNI, AttachmentType.L3VNI):
            for attachment in self.attachments:
                if attachment.type is wanted:
                    return attachment
        raise ValueError(f"VRFDomain {self.name} has no attachments")


@dataclass(frozen=True, slots=True, kw_only=True)
class VrfDomainBindingSpec:
    """A VRFDomainBinding: pods of `namespace` join VRFDomain `domain`."""

    name: str
    namespace: str
    domain: str


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInterface:
    name: str
    local: str


@dataclass(frozen=True, slots=True, kw_only=True)
class VrfNodeConfigSpec:
    """A VRFNodeConfig: per-node routing parameters."""

    name: str
    node: str
    router_id: str = ""
    route_reflectors: tuple[str, ...] = ()
    interfaces: tuple[NodeInterface, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeInfo:
    """A Kubernetes Node as the daemon needs it."""

    name: str
    internal_ip: str


class ChangeKind(Enum):
    ADDED = "added"
    MODIFIED = "modified"
    DELETED = "deleted"


ClusterObject = VrfDomainSpec | VrfDomainBindingSpec | VrfNodeConfigSpec | NodeInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterObjectChanged:
    """One watched object was added, modified or deleted."""

    kind: ChangeKind
    obj: ClusterObject


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceChanged:
    kind: ChangeKind
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterSnapshot:
    """Everything the watcher knows after a (re)list; subscribers replace their view."""

    domains: tuple[VrfDomainSpec, ...]
    bindings: tuple[VrfDomainBindingSpec, ...]
    node_configs: tuple[VrfNodeConfigSpec, ...]
    nodes: tuple[NodeInfo, ...]
    namespaces: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class SendSnapshot:
    """Ask CRDWatcherActor to send its current ClusterSnapshot to `to`.

    A restarted subscriber asks for this to rebuild its view.  Sent before the
    watcher's initial list completed, the snapshot follows as soon as it did.
    """

    to: Recipient
