"""server.ini: one frozen settings object, loaded once in main and passed down.

Every key is declared here with its default and what it allows; an unknown
section or key, or a value out of range, stops the daemon at start with one
line naming the section, key, value and what is allowed.

Keys of the seed ConfigMap: [default] vrf, prefix, prefixlen, ipblocklen,
system_vrf_type and [logging] level.  The other sections are the daemon's own.

Timeouts must agree with each other: ``check_timeouts`` (a pure function, run by
``parse_settings`` for the daemon and ``pyroute2-cni config --check`` alike)
rejects a combination that cannot hold, naming the keys and what to change.
Two keys are derived when server.ini leaves them out: [supervisor]
heartbeat_timeout (the longest bounded actor operation + HUNG_MARGIN) and [cni]
add_timeout (ADD_SHARE of [cni] shim_timeout).

Keep in sync with: shim/pyroute2-cni.c (the shim's default timeout, 30 s),
actors/frr_actor.py, pyroute2_cni/frr/control.py and vty.py (what one FRR apply does),
actors/cni_server_actor.py (what one ADD does).
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
    # json: one object per line, the CNI request line's fields as keys (log collectors).
    format: str = _opt("text", "text or json", _choice("text", "json"))


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
    # How often the Node's Pyroute2CNIReady condition is compared with the readiness
    # (written only when it changes).
    node_condition_interval: float = _opt(5.0, "seconds from 0.1 to 3600", _float_range(0.1, 3600))
    # The VRFNodeState is written on a change, at most once per this many seconds (the
    # last state within it is written when it ends).
    node_state_min_interval: float = _opt(10.0, "seconds from 0.1 to 3600", _float_range(0.1, 3600))


@dataclass(frozen=True, slots=True, kw_only=True)
class SupervisorSection:
    max_restarts: int = _opt(5, "an integer from 1 to 1000", _int_range(1, 1000))
    restart_window: float = _opt(60.0, "seconds from 1 to 3600", _float_range(1, 3600))
    heartbeat_interval: float = _opt(1.0, "seconds from 0.05 to 60", _float_range(0.05, 60))
    # An actor silent this long is declared hung and restarted: it must exceed the
    # longest bounded operation an actor runs in one handler (an FRR apply, see
    # frr_apply_bound).  Left out of server.ini: derived from the [frr] and [ipam]
    # timeouts (longest + HUNG_MARGIN); the default below is that for their defaults.
    heartbeat_timeout: float = _opt(
        360.0,
        "seconds from 0.1 to 3600, more than the longest bounded operation "
        "(default: derived from the [frr] and [ipam] timeouts)",
        _float_range(0.1, 3600),
    )
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
    # One Kubernetes API request: connect, then read the answer.  Their sum bounds
    # one request, so an IPAM handler is never silent for longer per request.
    request_connect_timeout: float = _opt(5.0, "seconds from 0.1 to 300", _float_range(0.1, 300))
    request_read_timeout: float = _opt(15.0, "seconds from 0.1 to 600", _float_range(0.1, 600))
    # Retry delays of the first read of this node's blocks while the API is down:
    # doubling from load_retry_initial up to load_retry_max (and reconcile_interval).
    load_retry_initial: float = _opt(0.5, "seconds from 0.01 to 60", _float_range(0.01, 60))
    load_retry_max: float = _opt(30.0, "seconds from 0.01 to 3600", _float_range(0.01, 3600))


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
    # One frr-reload.py run (--test or --reload): ~0.25 s on a host, ~2 s under
    # User-Mode Linux, much more on a loaded node.
    reload_timeout: float = _opt(120.0, "seconds from 1 to 1800", _float_range(1, 1800))
    # One vtysh process (loading the VRF-to-VNI bindings, the "is FRR there" probe).
    vtysh_timeout: float = _opt(20.0, "seconds from 0.1 to 600", _float_range(0.1, 600))
    # One question on a daemon's vty socket (the state polls): the whole ask,
    # connect included.
    vty_timeout: float = _opt(5.0, "seconds from 0.1 to 600", _float_range(0.1, 600))
    # A failed apply is retried after 2, 4, 8, ... seconds, at most this.
    retry_max: float = _opt(30.0, "seconds from 1 to 3600", _float_range(1, 3600))
    # After a reload zebra reports a new VNI within a second or two: poll this
    # often, at most quick_polls times, instead of waiting for poll_interval.
    quick_poll_interval: float = _opt(0.25, "seconds from 0.01 to 60", _float_range(0.01, 60))
    quick_polls: int = _opt(40, "an integer from 0 to 10000", _int_range(0, 10000))


@dataclass(frozen=True, slots=True, kw_only=True)
class NetlinkSection:
    reconcile_interval: float = _opt(30.0, "seconds from 0.5 to 3600", _float_range(0.5, 3600))
    # Empty: the interface of the default route and its primary address.
    vtep_interface: str = _opt("", "an interface name or empty", _text)


@dataclass(frozen=True, slots=True, kw_only=True)
class CniSection:
    """[cni]: how long the CNI path waits; see check_timeouts for how they relate."""

    # What the shim waits for the whole call (stdin, connect, reply): its built-in
    # default (30 s; STATUS 5 s), or the conflist's "timeout" or the env
    # PYROUTE2_CNI_TIMEOUT when set there.  Keep it equal to what the shim uses.
    shim_timeout: float = _opt(30.0, "seconds from 1 to 86400", _float_range(1, 86400))
    # The daemon's budget for one ADD (IPAM, then netlink): the error is answered
    # within it, before the shim gives up; a rollback runs after the answer.
    # Left out of server.ini: ADD_SHARE of shim_timeout.
    add_timeout: float = _opt(
        25.0,
        "seconds from 0.1 to 86400, less than shim_timeout (default 5/6 of it)",
        _float_range(0.1, 86400),
    )
    # One question to the IPAM or netlink actor (DEL, CHECK, GC, a rollback step);
    # within an ADD also cut to what is left of add_timeout.
    ask_timeout: float = _opt(20.0, "seconds from 0.1 to 3600", _float_range(0.1, 3600))


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    default: DefaultSection = field(default_factory=DefaultSection)
    logging: LoggingSection = field(default_factory=LoggingSection)
    daemon: DaemonSection = field(default_factory=DaemonSection)
    supervisor: SupervisorSection = field(default_factory=SupervisorSection)
    ipam: IpamSection = field(default_factory=IpamSection)
    frr: FrrSection = field(default_factory=FrrSection)
    netlink: NetlinkSection = field(default_factory=NetlinkSection)
    cni: CniSection = field(default_factory=CniSection)


_SECTION_TYPES: dict[str, type[Any]] = {
    "default": DefaultSection,
    "logging": LoggingSection,
    "daemon": DaemonSection,
    "supervisor": SupervisorSection,
    "ipam": IpamSection,
    "frr": FrrSection,
    "netlink": NetlinkSection,
    "cni": CniSection,
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


# The hung limit's slack above the longest bounded operation: scheduling, the
# heartbeat interval, a slow node.
HUNG_MARGIN = 60.0
# The daemon answers an ADD within this share of the shim's timeout (30 s -> 25 s).
ADD_SHARE = 5 / 6


def frr_apply_bound(frr: FrrSection) -> float:
    """Seconds one FRRActor handler can take, every step at its timeout.

    The longest is a periodic poll that finds drift: the state (three vty asks),
    the running config (two), then an apply: validate (frr-reload.py --test) +
    the bindings (vtysh -f) + reload (frr-reload.py --reload) + the state poll
    that follows (three vty asks).  A failed validation asks vtysh once instead
    of the bindings; a restore (its own message) is a reload and a --test.
    Keep in sync with FRRActor (_apply, _check_drift, _restore) and FrrProcessControl.
    """
    return 2 * frr.reload_timeout + frr.vtysh_timeout + 8 * frr.vty_timeout


def ipam_request_bound(ipam: IpamSection) -> float:
    """Seconds one Kubernetes API request of the IPAM store can take."""
    return ipam.request_connect_timeout + ipam.request_read_timeout


def longest_bounded_operation(settings: Settings) -> tuple[float, str]:
    """The longest one-handler operation of any actor, and what it is made of."""
    frr = settings.frr
    req = settings.ipam
    ipam = (
        ipam_request_bound(req),
        f"an IPAM API request ([ipam] request_connect_timeout {req.request_connect_timeout:g}"
        f" + request_read_timeout {req.request_read_timeout:g})",
    )
    if not frr.enabled:
        return ipam
    apply = (
        frr_apply_bound(frr),
        f"an FRR poll that re-applies (2 x [frr] reload_timeout {frr.reload_timeout:g} + "
        f"vtysh_timeout {frr.vtysh_timeout:g} + 8 x vty_timeout {frr.vty_timeout:g})",
    )
    return max(apply, ipam)


def derived_heartbeat_timeout(settings: Settings) -> float:
    return longest_bounded_operation(settings)[0] + HUNG_MARGIN


def derived_add_timeout(cni: CniSection) -> float:
    return round(cni.shim_timeout * ADD_SHARE, 3)


def check_timeouts(settings: Settings) -> None:
    """Reject timeouts that cannot hold together; ConfigError names the keys and the fix.

    - [supervisor] heartbeat_timeout must exceed the longest bounded actor
      operation, or a slow but healthy apply is declared hung and restarted
      (and two frr-reload.py could overlap).
    - [cni] add_timeout must be less than [cni] shim_timeout, or the daemon may
      answer an ADD the shim stopped waiting for.
    - An IPAM API request must fit in [cni] ask_timeout, or an ADD gives up on
      an allocation that then succeeds.
    """
    hung = settings.supervisor.heartbeat_timeout
    longest, what = longest_bounded_operation(settings)
    if hung <= longest:
        raise ConfigError(
            f"server.ini [supervisor] heartbeat_timeout = {hung:g}: must exceed the longest "
            f"bounded actor operation, {what} = {longest:g} s; raise heartbeat_timeout above "
            f"{longest:g} (or leave it out: it is derived) or lower those timeouts"
        )
    cni = settings.cni
    if cni.add_timeout >= cni.shim_timeout:
        raise ConfigError(
            f"server.ini [cni] add_timeout = {cni.add_timeout:g}: must be less than [cni] "
            f"shim_timeout = {cni.shim_timeout:g} (the shim stops waiting then); lower "
            f"add_timeout (or leave it out: it is derived) or raise shim_timeout together "
            f'with the conflist\'s "timeout"'
        )
    request = ipam_request_bound(settings.ipam)
    if request > cni.ask_timeout:
        raise ConfigError(
            f"server.ini [cni] ask_timeout = {cni.ask_timeout:g}: must be at least one IPAM API "
            f"request, [ipam] request_connect_timeout {settings.ipam.request_connect_timeout:g} "
            f"+ request_read_timeout {settings.ipam.request_read_timeout:g} = {request:g} s; "
            "raise ask_timeout or lower those two"
        )


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
    # Dependent timeouts follow the ones they depend on unless set explicitly.
    if not parser.has_option("cni", "add_timeout"):
        settings = replace(
            settings, cni=replace(settings.cni, add_timeout=derived_add_timeout(settings.cni))
        )
    if not parser.has_option("supervisor", "heartbeat_timeout"):
        settings = replace(
            settings,
            supervisor=replace(
                settings.supervisor, heartbeat_timeout=derived_heartbeat_timeout(settings)
            ),
        )
    check_timeouts(settings)
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
