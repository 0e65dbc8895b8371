"""server.ini: one frozen settings object, loaded once in main and passed down.

Every key is declared here with its default and what it allows; an unknown
section or key, or a value out of range, stops the daemon at start with one
line naming the section, key, value and what is allowed.

Keys of the seed ConfigMap: [default] vrf, prefix, prefixlen, ipblocklen,
system_vrf_type and [logging] level.  The other sections are the daemon's own.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

DEFAULT_CONFIG_PATH = "/etc/pyroute2-cni/server.ini"


class ConfigError(Exception):
    """A bad server.ini; str() is the one line an operator needs."""


def _opt(default: Any, allowed: str, parse: Callable[[str], Any]) -> Any:
    return field(default=default, metadata={"allowed": allowed, "parse": parse})


def _int_range(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not lo <= value <= hi:
            raise ValueError(text)
        return value

    return parse


def _float_range(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text.strip())
        if not lo <= value <= hi:
            raise ValueError(text)
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(text)
        return value

    return parse


def _ipv4(text: str) -> str:
    return str(ipaddress.IPv4Address(text.strip()))


def _text(text: str) -> str:
    return text.strip()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _endpoint(text: str) -> str:
    value = text.strip()
    if not value.startswith("ipc:///"):
        raise ValueError(text)
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class DefaultSection:
    """[default]: the VRFDomain created when none exists (seed ConfigMap keys)."""

    vrf: int = _opt(42, "an integer VRF id from 1 to 65535", _int_range(1, 65535))
    prefix: str = _opt("10.244.0.0", "an IPv4 network address such as 10.244.0.0", _ipv4)
    prefixlen: int = _opt(16, "an integer from 8 to 29", _int_range(8, 29))
    ipblocklen: int = _opt(
        26, "an integer greater than prefixlen and at most 30", _int_range(0, 2**31)
    )
    system_vrf_type: str = _opt("l3vni", "l3vni or l2vni", _choice("l3vni", "l2vni"))
    # Not in the seed; the default domain uses the VRF id when unset (0).
    table: int = _opt(
        0, "0 (same as vrf) or a table id from 1 to 4294967294", _int_range(0, 2**32 - 2)
    )
    vni: int = _opt(0, "0 (same as vrf) or a VNI from 1 to 16777215", _int_range(0, 16777215))

    @property
    def table_id(self) -> int:
        return self.table or self.vrf

    @property
    def vni_id(self) -> int:
        return self.vni or self.vrf


@dataclass(frozen=True, slots=True, kw_only=True)
class LoggingSection:
    level: str = _opt(
        "info",
        "one of debug, info, warning, error, critical",
        _choice("debug", "info", "warning", "error", "critical"),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class DaemonSection:
    # NODE_NAME (the DaemonSet sets it from spec.nodeName) wins over this key.
    node_name: str = _opt("", "the Kubernetes node name", _text)
    socket: str = _opt(
        "ipc:///run/pyroute2-cni/cni.sock", "an ipc:///absolute/path endpoint", _endpoint
    )
    metrics_address: str = _opt("0.0.0.0", "an IPv4 address to listen on", _ipv4)
    metrics_port: int = _opt(24800, "a TCP port from 1 to 65535", _int_range(1, 65535))
    asn: int = _opt(65000, "a BGP AS number from 1 to 4294967294", _int_range(1, 2**32 - 2))
    # 0: underlay (VTEP interface) MTU minus the 50 bytes of VXLAN overhead.
    mtu: int = _opt(0, "0 (automatic) or an MTU from 576 to 9000", _int_range(0, 9000))
    kubeconfig: str = _opt("", "a kubeconfig path, empty for in-cluster config", _text)
    cni_bin_dir: str = _opt("/opt/cni/bin", "a directory path", _text)
    cni_conf_dir: str = _opt("/etc/cni/net.d", "a directory path", _text)
    install_cni: bool = _opt(True, "true or false", _bool)
    shim_source: str = _opt(
        "/usr/libexec/pyroute2-cni/pyroute2-cni", "the path of the static shim to install", _text
    )
    netns_dir: str = _opt("/var/run/netns", "a directory path", _text)
    state_dir: str = _opt("/run/pyroute2-cni", "a directory path", _text)


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorSection:
    max_restarts: int = _opt(5, "an integer from 1 to 1000", _int_range(1, 1000))
    restart_window: float = _opt(60.0, "seconds from 1 to 3600", _float_range(1, 3600))
    heartbeat_interval: float = _opt(1.0, "seconds from 0.05 to 60", _float_range(0.05, 60))
    # Longer than any bounded operation an actor runs: an frr-reload.py call may
    # take up to 120 s (RELOAD_TIMEOUT) on a loaded node.
    heartbeat_timeout: float = _opt(180.0, "seconds from 0.1 to 600", _float_range(0.1, 600))
    backoff_initial: float = _opt(0.1, "seconds from 0.01 to 60", _float_range(0.01, 60))
    backoff_max: float = _opt(10.0, "seconds from 0.01 to 600", _float_range(0.01, 600))
    stop_timeout: float = _opt(4.0, "seconds from 0.1 to 60", _float_range(0.1, 60))


@dataclass(frozen=True, slots=True, kw_only=True)
class IpamSection:
    # A leaked address (pod gone, DEL lost) is reclaimed only after this grace
    # period and a second observation.
    leak_grace: float = _opt(300.0, "seconds from 0 to 86400", _float_range(0, 86400))
    reconcile_interval: float = _opt(60.0, "seconds from 0.5 to 86400", _float_range(0.5, 86400))
    write_retries: int = _opt(8, "an integer from 1 to 100", _int_range(1, 100))


@dataclass(frozen=True, slots=True, kw_only=True)
class FrrSection:
    enabled: bool = _opt(True, "true or false", _bool)
    config_file: str = _opt("/etc/frr/frr.conf", "a file path", _text)
    # FRR pathspace (-N); empty for the FRR container's default instance.
    pathspace: str = _opt("", "an FRR pathspace name or empty", _text)
    reload_command: str = _opt("/usr/lib/frr/frr-reload.py", "a file path", _text)
    vtysh: str = _opt("/usr/bin/vtysh", "a file path", _text)
    # Where the FRR daemons' vty sockets are (the pathspace adds a level), as vtysh
    # finds them; state is read through them.
    vty_dir: str = _opt("/var/run/frr", "a directory path", _text)
    debounce: float = _opt(1.0, "seconds from 0 to 60", _float_range(0, 60))
    poll_interval: float = _opt(2.0, "seconds from 0.1 to 300", _float_range(0.1, 300))
    # How long a peer's EVPN routes are kept in the kernel while its FRR restarts
    # (FRR's graceful restart does not cover EVPN); 0 turns the hold off.
    evpn_hold: float = _opt(120.0, "seconds from 0 to 3600", _float_range(0, 3600))


@dataclass(frozen=True, slots=True, kw_only=True)
class NetlinkSection:
    reconcile_interval: float = _opt(30.0, "seconds from 0.5 to 3600", _float_range(0.5, 3600))
    # Empty: the interface of the default route and its primary address.
    vtep_interface: str = _opt("", "an interface name or empty", _text)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    default: DefaultSection = field(default_factory=DefaultSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    daemon: DaemonSection = field(default_factory=DaemonSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    ipam: IpamSection = field(default_factory=IpamSection)
    frr: FrrSection = field(default_factory=FrrSection)
    netlink: NetlinkSection = field(default_factory=NetlinkSection)


_SECTION_TYPES: dict[str, type[Any]] = {
    "default": DefaultSection,
    "logging": LoggingSection,
    "daemon": DaemonSection,
    "supervisor": SupervisorSection,
    "ipam": IpamSection,
    "frr": FrrSection,
    "netlink": NetlinkSection,
}

S = TypeVar("S")


def _parse_section(name: str, cls: type[S], items: Mapping[str, str]) -> S:
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, raw in items.items():
        spec = known.get(key)
        if spec is None:
            raise ConfigError(
                f"server.ini [{name}] {key} = {raw}: unknown key; allowed keys: "
                + ", ".join(sorted(known))
            )
        try:
            values[key] = spec.metadata["parse"](raw)
        except ValueError:
            raise ConfigError(
                f"server.ini [{name}] {key} = {raw}: must be {spec.metadata['allowed']}"
            ) from None
    return cls(**values)


def _check_default(section: DefaultSection) -> None:
    def fail(key: str, value: object, allowed: str) -> ConfigError:
        return ConfigError(f"server.ini [default] {key} = {value}: must be {allowed}")

    if not section.prefixlen < section.ipblocklen <= 30:
        raise fail(
            "ipblocklen",
            section.ipblocklen,
            f"greater than prefixlen ({section.prefixlen}) and at most 30",
        )
    try:
        ipaddress.IPv4Network(f"{section.prefix}/{section.prefixlen}")
    except ValueError:
        raise fail(
            "prefix",
            section.prefix,
            f"a network address aligned to prefixlen {section.prefixlen} (host bits zero)",
        ) from None


def parse_settings(text: str, env: Mapping[str, str] | None = None) -> Settings:
    """Parse server.ini text; raises ConfigError with a one-line explanation."""
    parser = configparser.ConfigParser(interpolation=None, default_section="__none__")
    try:
        parser.read_string(text, source="server.ini")
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"server.ini is not valid INI: {first}") from None
    sections: dict[str, Any] = {}
    for name in parser.sections():
        cls = _SECTION_TYPES.get(name)
        if cls is None:
            raise ConfigError(
                f"server.ini [{name}]: unknown section; allowed sections: "
                + ", ".join(sorted(_SECTION_TYPES))
            )
        sections[name] = _parse_section(name, cls, dict(parser.items(name)))
    settings = Settings(**sections)
    _check_default(settings.default)
    environ = os.environ if env is None else env
    node_name = environ.get("NODE_NAME", "").strip() or settings.daemon.node_name
    if not node_name:
        node_name = socket.gethostname()
    return replace(settings, daemon=replace(settings.daemon, node_name=node_name))


def load_settings(path: str | Path | None, env: Mapping[str, str] | None = None) -> Settings:
    """Load server.ini from `path`; a missing default path means all defaults."""
    if path is None:
        candidate = Path(DEFAULT_CONFIG_PATH)
        text = candidate.read_text() if candidate.exists() else ""
    else:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    return parse_settings(text, env)


def describe_defaults() -> str:
    """Every section and key with its default and what it allows (for --help and docs)."""
    lines: list[str] = []
    for name, cls in _SECTION_TYPES.items():
        lines.append(f"[{name}]")
        for f in fields(cls):
            default = f.default if f.default is not MISSING else ""
            lines.append(f"  {f.name} = {default}    # {f.metadata['allowed']}")
    return "\n".join(lines)
