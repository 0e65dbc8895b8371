from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pyroute2_cni.runtime.config import ConfigError, parse_settings
from tests.harness.domains import README_SERVER_INI

pytestmark = pytest.mark.unit


def test_seed_configmap_parses_to_documented_defaults() -> None:
    s = parse_settings(README_SERVER_INI, env={"NODE_NAME": "k8s02"})
    assert (s.default.vrf, s.default.prefix, s.default.prefixlen, s.default.ipblocklen) == (
        42,
        "10.244.0.0",
        16,
        26,
    )
    assert s.default.system_vrf_type == "l3vni"
    assert s.logging.level == "info"
    assert s.daemon.node_name == "k8s02"
    assert s.daemon.metrics_port == 24800
    assert s.daemon.socket == "ipc:///run/pyroute2-cni/cni.sock"
    assert s.daemon.asn == 65000
    assert s.supervisor.max_restarts == 5 and s.supervisor.restart_window == 60


def test_node_name_env_wins_over_file() -> None:
    s = parse_settings("[daemon]\nnode_name = fromfile\n", env={"NODE_NAME": "fromenv"})
    assert s.daemon.node_name == "fromenv"
    assert parse_settings("[daemon]\nnode_name = fromfile\n", env={}).daemon.node_name == "fromfile"


BAD = [
    ("vrf", "[default]\nvrf = forty-two\n", "server.ini [default] vrf = forty-two: must be"),
    ("vrf range", "[default]\nvrf = 0\n", "server.ini [default] vrf = 0: must be an integer VRF"),
    (
        "prefix not a network",
        "[default]\nprefix = 10.244.1.0\nprefixlen = 16\n",
        "server.ini [default] prefix = 10.244.1.0: must be a network address aligned",
    ),
    (
        "prefix not an address",
        "[default]\nprefix = 10.244.0\n",
        "server.ini [default] prefix = 10.244.0: must be an IPv4",
    ),
    (
        "ipblocklen <= prefixlen",
        "[default]\nprefixlen = 16\nipblocklen = 16\n",
        "server.ini [default] ipblocklen = 16: must be greater than prefixlen (16)",
    ),
    (
        "ipblocklen > 32",
        "[default]\nipblocklen = 33\n",
        "server.ini [default] ipblocklen = 33: must be greater than prefixlen (16) and at most 30",
    ),
    (
        "system_vrf_type",
        "[default]\nsystem_vrf_type = vlan\n",
        "server.ini [default] system_vrf_type = vlan: must be l3vni or l2vni",
    ),
    (
        "unknown key",
        "[default]\nvrf_id = 42\n",
        "server.ini [default] vrf_id = 42: unknown key; allowed keys:",
    ),
    ("unknown section", "[defaults]\nvrf = 42\n", "server.ini [defaults]: unknown section"),
    (
        "logging level",
        "[logging]\nlevel = loud\n",
        "server.ini [logging] level = loud: must be one of debug",
    ),
    (
        "metrics port",
        "[daemon]\nmetrics_port = 70000\n",
        "server.ini [daemon] metrics_port = 70000: must be a TCP port",
    ),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_value_is_one_line_naming_the_key(case: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_settings(text, env={})
    line = str(info.value)
    assert "\n" not in line
    assert line.startswith(message), line


@pytest.mark.parametrize(("case", "text", "message"), BAD[:3], ids=[b[0] for b in BAD[:3]])
def test_daemon_refuses_to_start_on_bad_config(
    tmp_path: Path, case: str, text: str, message: str
) -> None:
    ini = tmp_path / "server.ini"
    ini.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "pyroute2_cni", "daemon", "--config", str(ini)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]


def test_cli_help_explains_each_command() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "pyroute2_cni", "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    for command in ("daemon", "version", "config", "ipam"):
        assert command in out
    version = subprocess.run(
        [sys.executable, "-m", "pyroute2_cni", "version"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert version.stdout.startswith("pyroute2-cni 0.1.0")
