"""The watched API objects as typed values, converted at the edge.

Pure: no I/O and no kubernetes import.  :func:`convert` turns one JSON object of a watched
:class:`Resource` into the value handed on by ``kube.pump``: nothing past the edge sees a
dict or a kubernetes model object.  An object that cannot be read raises
:class:`Malformed`, except a VRFDomain, which becomes a :class:`DomainObject` whose ``spec``
is None and ``error`` says why (the watcher reports it in the domain's status).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from pyroute2_cni.kube.crd_validate import BlockCut
from pyroute2_cni.messages.crd import (
    DEFAULT_ACCEPT_DEFAULT_ROUTE,
    Attachment,
    AttachmentType,
    ImportPrefix,
    NodeInfo,
    NodeInterface,
    VrfDomainBindingSpec,
    VrfDomainSpec,
    VrfNodeConfigSpec,
)

CRD_GROUP = "cni.pyroute2.org"
CRD_VERSION = "v1alpha1"
DEFAULT_VXLAN_PORT = 4789

Json = Mapping[str, Any]


class Resource(Enum):
    """The watched resources; the value is the plural resource name."""

    VRF_DOMAIN = "vrfdomains"
    VRF_DOMAIN_BINDING = "vrfdomainbindings"
    VRF_NODE_CONFIG = "vrfnodeconfigs"
    NODE = "nodes"
    NAMESPACE = "namespaces"

    @property
    def custom(self) -> bool:
        return self not in (Resource.NODE, Resource.NAMESPACE)


@dataclass(frozen=True, slots=True, kw_only=True)
class Condition:
    """One entry of status.conditions."""

    type: str
    status: str  # "True", "False" or "Unknown"
    reason: str
    message: str
    last_transition_time: str = ""
    observed_generation: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainObject:
    """A VRFDomain with the metadata and status the watcher needs besides its spec."""

    name: str
    created: str = ""  # metadata.creationTimestamp
    generation: int = 0
    resource_version: str = ""
    # None when the spec cannot be read into a VrfDomainSpec; `error` says why.
    spec: VrfDomainSpec | None
    error: str = ""
    conditions: tuple[Condition, ...] = ()
    observed_generation: int = 0
    # status.acceptedCut: what the domain's IPBlocks were cut from.
    accepted_cut: BlockCut | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespaceObject:
    name: str


WatchedObject = DomainObject | VrfDomainBindingSpec | VrfNodeConfigSpec | NodeInfo | NamespaceObject


def utc_now() -> str:
    """Now, as the API server writes timestamps (RFC 3339, whole seconds, UTC)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- conversion at the edge -----------------------------------------------------------------


class Malformed(ValueError):
    """The object does not have the shape the CRD promises."""


def value_at(obj: Json, path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _int(obj: Json, path: str, default: int | None = None) -> int:
    value = value_at(obj, path)
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        if value is None:
            raise Malformed(f"{path} is missing")
        raise Malformed(f"{path} ({value!r}) must be an integer")
    return value


def _str(obj: Json, path: str, default: str | None = None) -> str:
    value = value_at(obj, path)
    if value is None and default is not None:
        return default
    if not isinstance(value, str):
        if value is None:
            raise Malformed(f"{path} is missing")
        raise Malformed(f"{path} ({value!r}) must be a string")
    return value


def _list(obj: Json, path: str) -> list[Any]:
    value = value_at(obj, path)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Malformed(f"{path} must be a list")
    return value


def _strings(obj: Json, path: str) -> tuple[str, ...]:
    values = _list(obj, path)
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise Malformed(f"{path}[{index}] ({value!r}) must be a string")
    return tuple(values)


def _bool(obj: Json, path: str, default: bool) -> bool:
    value = value_at(obj, path)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise Malformed(f"{path} ({value!r}) must be true or false")
    return value


def _import_prefixes(obj: Json) -> tuple[ImportPrefix, ...]:
    prefixes: list[ImportPrefix] = []
    for index, raw in enumerate(_list(obj, "spec.importPrefixes")):
        where = f"spec.importPrefixes[{index}]"
        if not isinstance(raw, Mapping):
            raise Malformed(f"{where} must be an object")
        try:
            cidr = _str(raw, "cidr")
            le = None if raw.get("le") is None else _int(raw, "le")
        except Malformed as exc:
            raise Malformed(f"{where}.{exc}") from None
        prefixes.append(ImportPrefix(cidr=cidr, le=le))
    return tuple(prefixes)


def object_name(obj: Json) -> str:
    name = value_at(obj, "metadata.name")
    return name if isinstance(name, str) else ""


def object_resource_version(obj: Json) -> str:
    rv = value_at(obj, "metadata.resourceVersion")
    return rv if isinstance(rv, str) else ""


def _domain_spec(obj: Json) -> VrfDomainSpec:
    attachments: list[Attachment] = []
    for index, raw in enumerate(_list(obj, "spec.attachments")):
        where = f"spec.attachments[{index}]"
        if not isinstance(raw, Mapping):
            raise Malformed(f"{where} must be an object")
        kind = _str(raw, "type")
        try:
            attachment_type = AttachmentType(kind)
        except ValueError:
            raise Malformed(f"{where}.type ({kind!r}) must be l2vni or l3vni") from None
        try:
            vni = _int(raw, "vni")
            port = _int(raw, "port", DEFAULT_VXLAN_PORT)
            imports = _strings(raw, "routeTargets.import")
            exports = _strings(raw, "routeTargets.export")
        except Malformed as exc:
            raise Malformed(f"{where}.{exc}") from None
        attachments.append(
            Attachment(
                type=attachment_type,
                vni=vni,
                port=port,
                import_route_targets=imports,
                export_route_targets=exports,
            )
        )
    return VrfDomainSpec(
        name=object_name(obj),
        vrf=_int(obj, "spec.vrf"),
        table=_int(obj, "spec.table"),
        prefix=_str(obj, "spec.prefix"),
        prefixlen=_int(obj, "spec.prefixlen"),
        ipblocklen=_int(obj, "spec.ipblocklen"),
        attachments=tuple(attachments),
        resource_version=object_resource_version(obj),
        import_route_targets=_strings(obj, "spec.routeTargets.import"),
        export_route_targets=_strings(obj, "spec.routeTargets.export"),
        import_prefixes=_import_prefixes(obj),
        accept_default_route=_bool(obj, "spec.acceptDefaultRoute", DEFAULT_ACCEPT_DEFAULT_ROUTE),
    )


def _conditions(obj: Json) -> tuple[Condition, ...]:
    out: list[Condition] = []
    raw_list = value_at(obj, "status.conditions")
    if not isinstance(raw_list, list):
        return ()
    for raw in raw_list:
        if not isinstance(raw, Mapping):
            continue
        try:
            out.append(
                Condition(
                    type=_str(raw, "type"),
                    status=_str(raw, "status"),
                    reason=_str(raw, "reason", ""),
                    message=_str(raw, "message", ""),
                    last_transition_time=_str(raw, "lastTransitionTime", ""),
                    observed_generation=_int(raw, "observedGeneration", 0),
                )
            )
        except Malformed:
            continue
    return tuple(out)


def _accepted_cut(obj: Json) -> BlockCut | None:
    raw = value_at(obj, "status.acceptedCut")
    if not isinstance(raw, Mapping):
        return None
    try:
        return BlockCut(
            vrf=_int(raw, "vrf"),
            prefix=_str(raw, "prefix"),
            prefixlen=_int(raw, "prefixlen"),
            ipblocklen=_int(raw, "ipblocklen"),
        )
    except Malformed:
        return None


def domain_from(obj: Json) -> DomainObject:
    """A VRFDomain JSON object as a DomainObject; never raises."""
    spec: VrfDomainSpec | None
    try:
        spec = _domain_spec(obj)
        error = ""
    except Malformed as exc:
        spec, error = None, str(exc)
    generation = value_at(obj, "metadata.generation")
    observed = value_at(obj, "status.observedGeneration")
    created = value_at(obj, "metadata.creationTimestamp")
    return DomainObject(
        name=object_name(obj),
        created=created if isinstance(created, str) else "",
        generation=generation if isinstance(generation, int) else 0,
        resource_version=object_resource_version(obj),
        spec=spec,
        error=error,
        conditions=_conditions(obj),
        observed_generation=observed if isinstance(observed, int) else 0,
        accepted_cut=_accepted_cut(obj),
    )


def binding_from(obj: Json) -> VrfDomainBindingSpec:
    return VrfDomainBindingSpec(
        name=object_name(obj),
        namespace=_str(obj, "spec.namespaceRef.name"),
        domain=_str(obj, "spec.vrfDomainRef.name"),
    )


def node_config_from(obj: Json) -> VrfNodeConfigSpec:
    reflectors: list[str] = []
    for index, raw in enumerate(_list(obj, "spec.routeReflectors")):
        if not isinstance(raw, str):
            raise Malformed(f"spec.routeReflectors[{index}] must be a string")
        reflectors.append(raw)
    interfaces: list[NodeInterface] = []
    for index, raw in enumerate(_list(obj, "spec.interfaces")):
        if not isinstance(raw, Mapping):
            raise Malformed(f"spec.interfaces[{index}] must be an object")
        interfaces.append(NodeInterface(name=_str(raw, "name"), local=_str(raw, "local", "")))
    return VrfNodeConfigSpec(
        name=object_name(obj),
        node=_str(obj, "spec.nodeRef.name"),
        router_id=_str(obj, "spec.routerId", ""),
        route_reflectors=tuple(reflectors),
        interfaces=tuple(interfaces),
    )


def node_from(obj: Json) -> NodeInfo:
    internal = ""
    for raw in _list(obj, "status.addresses"):
        if isinstance(raw, Mapping) and raw.get("type") == "InternalIP":
            address = raw.get("address")
            if isinstance(address, str):
                internal = address
                break
    return NodeInfo(name=object_name(obj), internal_ip=internal)


def convert(resource: Resource, obj: Json) -> WatchedObject:
    """The typed value of one object; raises Malformed (never for a VRFDomain)."""
    if not object_name(obj):
        raise Malformed("metadata.name is missing")
    match resource:
        case Resource.VRF_DOMAIN:
            return domain_from(obj)
        case Resource.VRF_DOMAIN_BINDING:
            return binding_from(obj)
        case Resource.VRF_NODE_CONFIG:
            return node_config_from(obj)
        case Resource.NODE:
            return node_from(obj)
        case Resource.NAMESPACE:
            return NamespaceObject(name=object_name(obj))
