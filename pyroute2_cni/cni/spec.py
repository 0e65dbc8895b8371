"""The CNI contract (spec 1.1.0; also 0.3.1, 0.4.0, 1.0.0) as pure functions.

Parses and validates what the runtime sends (environment and network
configuration) before anything has a side effect, and renders results and
errors in the version the runtime asked for.  The one piece of I/O is
:func:`netns_problem`: ADD and CHECK open CNI_NETNS to make sure it is a network
namespace, so a wrong path gets an error naming CNI_NETNS instead of a netlink
EINVAL from deep inside plumbing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from pyroute2_cni.messages.netlink import PodPlumbed
from pyroute2_cni.values.attachment import attachment_key

SUPPORTED_VERSIONS = ("0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
PLUGIN_TYPE = "pyroute2-cni"
COMMANDS = ("ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION")
_CONTAINER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")

# ioctl(2) on an nsfs file: the CLONE_NEW* type of the namespace (Linux 4.11+).
NS_GET_NSTYPE = 0xB703
CLONE_NEWNET = 0x40000000
_NS_TYPES = {
    0x00020000: "mount",
    0x02000000: "cgroup",
    0x04000000: "UTS",
    0x08000000: "IPC",
    0x10000000: "user",
    0x20000000: "PID",
    0x00000080: "time",
}
_NETNS_EXPECTED = (
    "expected the path of the pod's network namespace (a bind mount such as "
    "/var/run/netns/<name>, or /proc/<pid>/ns/net)"
)


class Code(IntEnum):
    """Well-known error codes of the CNI spec (plus one plugin code, >= 100)."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    CHECK_FAILED = 100  # plugin-specific: live state differs from prevResult


class CniError(Exception):
    def __init__(self, code: Code, msg: str, details: str = "") -> None:
        super().__init__(code, msg, details)
        self.code = code
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg} ({self.details})" if self.details else self.msg


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    command: str
    cni_version: str
    container_id: str = ""
    ifname: str = ""
    netns: str = ""
    pod_namespace: str = ""
    pod_name: str = ""
    pod_uid: str = ""
    config: Mapping[str, Any] = field(default_factory=dict)

    @property
    def network(self) -> str:
        return str(self.config.get("name", ""))

    @property
    def key(self) -> str:
        return attachment_key(self.network, self.container_id, self.ifname)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS: "K=V;K=V"; raises CniError(4) on a malformed pair."""
    result: dict[str, str] = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CniError(
                Code.INVALID_ENVIRONMENT,
                "CNI_ARGS is malformed",
                f"expected KEY=VALUE pairs separated by ';', got {pair!r}",
            )
        result[key] = value
    return result


def parse_config(stdin: bytes) -> dict[str, Any]:
    try:
        config = json.loads(stdin.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CniError(
            Code.DECODE_FAILURE,
            "the network configuration on stdin is not valid JSON",
            f"{exc}; the runtime must pass the plugin's network configuration as JSON",
        ) from None
    if not isinstance(config, dict):
        raise CniError(
            Code.DECODE_FAILURE,
            "the network configuration on stdin is not a JSON object",
            f"got {type(config).__name__}",
        )
    return config


def config_version(config: Mapping[str, Any]) -> str:
    version = config.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise CniError(
            Code.INVALID_CONFIG,
            "the network configuration has no cniVersion",
            "set cniVersion to one of " + ", ".join(SUPPORTED_VERSIONS),
        )
    if version not in SUPPORTED_VERSIONS:
        raise CniError(
            Code.INCOMPATIBLE_VERSION,
            f"cniVersion {version} is not supported by pyroute2-cni",
            "supported versions: " + ", ".join(SUPPORTED_VERSIONS),
        )
    return version


def _file_kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a special file"


def netns_problem(path: str) -> tuple[str, str] | None:
    """(msg, details) when `path` is not a network namespace here; None when it is.

    Opens the path and asks nsfs for its type (NS_GET_NSTYPE): a plain file, a
    directory or a namespace of another type cannot become the pod's netns.
    """
    what = f"CNI_NETNS {path!r}"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return (
            f"{what} does not exist",
            f"{_NETNS_EXPECTED}; a path that exists only in another mount namespace "
            "(e.g. the runtime's) is not visible to the daemon: share the directory "
            "with the daemon (hostPath with mountPropagation HostToContainer)",
        )
    except OSError as exc:
        return f"{what} cannot be opened: {exc.strerror}", _NETNS_EXPECTED
    try:
        mode = os.fstat(fd).st_mode
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError as exc:
            if exc.errno not in (errno.ENOTTY, errno.EINVAL):
                raise
            return f"{what} is not a network namespace: it is {_file_kind(mode)}", _NETNS_EXPECTED
    finally:
        os.close(fd)
    if nstype != CLONE_NEWNET:
        kind = _NS_TYPES.get(nstype, f"type {nstype:#x}")
        return f"{what} is a {kind} namespace, not a network namespace", _NETNS_EXPECTED
    return None


def parse_request(env: Mapping[str, str], stdin: bytes) -> Request:
    """Validate the whole request before any side effect."""
    command = env.get("CNI_COMMAND", "")
    if command not in COMMANDS:
        raise CniError(
            Code.INVALID_ENVIRONMENT,
            f"CNI_COMMAND {command!r} is not a CNI command",
            "expected one of " + ", ".join(COMMANDS),
        )
    config = parse_config(stdin)
    version = config_version(config)
    if command in ("STATUS", "GC") and _version_tuple(version) < (1, 1, 0):
        raise CniError(
            Code.INCOMPATIBLE_VERSION,
            f"{command} needs cniVersion 1.1.0, the configuration says {version}",
        )
    if command == "CHECK" and _version_tuple(version) < (0, 4, 0):
        raise CniError(
            Code.INCOMPATIBLE_VERSION, f"CHECK needs cniVersion 0.4.0 or later, not {version}"
        )
    for key in ("name", "type"):
        if not isinstance(config.get(key), str) or not config.get(key):
            raise CniError(
                Code.INVALID_CONFIG, f"the network configuration has no {key!r}", "it is required"
            )
    if not _CONTAINER_ID.match(config["name"]):
        # The network name is part of every attachment's identity (values/attachment.py).
        raise CniError(
            Code.INVALID_CONFIG,
            f"the network name {config['name']!r} is not valid",
            "it must start with a letter or digit followed by letters, digits, '_', '.', '-'",
        )
    if config["type"] != PLUGIN_TYPE:
        raise CniError(
            Code.INVALID_CONFIG,
            f"the network configuration's type is {config['type']!r}, not {PLUGIN_TYPE!r}",
        )
    container_id = env.get("CNI_CONTAINERID", "")
    ifname = env.get("CNI_IFNAME", "")
    netns = env.get("CNI_NETNS", "")
    if command in ("ADD", "DEL", "CHECK"):
        if not container_id:
            raise CniError(
                Code.INVALID_ENVIRONMENT,
                f"CNI_CONTAINERID is missing for {command}",
                "the runtime must set CNI_CONTAINERID",
            )
        if not _CONTAINER_ID.match(container_id):
            raise CniError(
                Code.INVALID_ENVIRONMENT,
                f"CNI_CONTAINERID {container_id!r} is not a valid container id",
                "it must start with a letter or digit followed by letters, digits, '_', '.', '-'",
            )
        check_ifname(ifname)
        if command != "DEL" and not netns:
            raise CniError(
                Code.INVALID_ENVIRONMENT,
                f"CNI_NETNS is missing for {command}",
                "the runtime must set the path of the pod's network namespace",
            )
        # DEL must succeed when the netns is gone (CNI spec): only ADD and CHECK
        # need to enter it.
        if command != "DEL" and (problem := netns_problem(netns)) is not None:
            raise CniError(Code.INVALID_ENVIRONMENT, *problem)
    args = parse_cni_args(env.get("CNI_ARGS", ""))
    return Request(
        command=command,
        cni_version=version,
        container_id=container_id,
        ifname=ifname,
        netns=netns,
        pod_namespace=args.get("K8S_POD_NAMESPACE", ""),
        pod_name=args.get("K8S_POD_NAME", ""),
        pod_uid=args.get("K8S_POD_UID", ""),
        config=config,
    )


def check_ifname(ifname: str) -> None:
    if (
        not ifname
        or len(ifname) > 15
        or ifname in (".", "..")
        or any(c in ifname for c in "/:")
        or any(c.isspace() for c in ifname)
    ):
        raise CniError(
            Code.INVALID_ENVIRONMENT,
            f"CNI_IFNAME {ifname!r} is not a valid interface name",
            "1 to 15 characters, not '.' or '..', without '/', ':' or whitespace",
        )


def valid_attachments(config: Mapping[str, Any]) -> frozenset[str]:
    """GC: the keys of `cni.dev/valid-attachments`, all of the configuration's network."""
    raw = config.get("cni.dev/valid-attachments", [])
    if not isinstance(raw, list):
        raise CniError(Code.INVALID_CONFIG, "cni.dev/valid-attachments must be a list")
    keys: set[str] = set()
    for item in raw:
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("containerID"), str)
            or not isinstance(item.get("ifname"), str)
        ):
            raise CniError(
                Code.INVALID_CONFIG,
                "cni.dev/valid-attachments entries need string containerID and ifname",
                f"got {item!r}",
            )
        keys.add(attachment_key(str(config.get("name", "")), item["containerID"], item["ifname"]))
    return frozenset(keys)


@dataclass(frozen=True, slots=True, kw_only=True)
class Expected:
    """What CHECK expects, taken from prevResult."""

    address: str
    prefixlen: int
    gateway: str


def expected_from_prev_result(config: Mapping[str, Any], ifname: str) -> Expected:
    prev = config.get("prevResult")
    if not isinstance(prev, dict):
        raise CniError(
            Code.INVALID_CONFIG,
            "CHECK needs prevResult in the network configuration",
            "the runtime must pass the result of the previous ADD",
        )
    interfaces = prev.get("interfaces") or []
    index = next(
        (
            i
            for i, iface in enumerate(interfaces)
            if isinstance(iface, dict) and iface.get("name") == ifname and iface.get("sandbox")
        ),
        None,
    )
    for ip in prev.get("ips") or []:
        if not isinstance(ip, dict) or "address" not in ip:
            continue
        if index is not None and ip.get("interface") not in (None, index):
            continue
        address, _, prefixlen = str(ip["address"]).partition("/")
        try:
            return Expected(
                address=address, prefixlen=int(prefixlen), gateway=str(ip.get("gateway", ""))
            )
        except ValueError:
            break
    raise CniError(
        Code.INVALID_CONFIG,
        f"prevResult has no IPv4 address for interface {ifname}",
        "CHECK compares the live state with prevResult.ips",
    )


def render_add_result(version: str, plumbed: PodPlumbed, dns: Mapping[str, Any]) -> dict[str, Any]:
    """The ADD result in the requested cniVersion."""
    v = _version_tuple(version)
    host: dict[str, Any] = {"name": plumbed.host.name, "mac": plumbed.host.mac}
    container: dict[str, Any] = {
        "name": plumbed.container.name,
        "mac": plumbed.container.mac,
        "sandbox": plumbed.container.sandbox,
    }
    if v >= (1, 1, 0):
        host["mtu"] = plumbed.mtu
        container["mtu"] = plumbed.mtu
    ip: dict[str, Any] = {
        "address": f"{plumbed.address}/{plumbed.prefixlen}",
        "gateway": plumbed.gateway,
        "interface": 1,
    }
    if v < (1, 0, 0):
        ip = {"version": "4", **ip}
    result: dict[str, Any] = {
        "cniVersion": version,
        "interfaces": [host, container],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0", "gw": plumbed.gateway}],
        "dns": {k: dns[k] for k in ("nameservers", "domain", "search", "options") if k in dns},
    }
    return result


def render_error(version: str | None, error: CniError) -> dict[str, Any]:
    return {
        "cniVersion": version if version in SUPPORTED_VERSIONS else LATEST,
        "code": int(error.code),
        "msg": error.msg,
        "details": error.details,
    }


def render_version() -> dict[str, Any]:
    return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}
