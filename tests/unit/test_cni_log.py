"""One log line per CNI request (issue 19, item 6): through the real shim to the real
CNIServerActor, in text and in JSON (``[logging] format = json``)."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path
from typing import Any

import pytest

from pyroute2_cni.cni.log import render_text
from pyroute2_cni.runtime.config import ConfigError, load_settings
from pyroute2_cni.runtime.logsetup import FIELDS, JsonFormatter
from tests.harness.waiting import wait_for
from tests.unit import test_cni_server as cni_server_tests
from tests.unit.test_cni_server import Node, call, conf

node = cni_server_tests.node
shim = cni_server_tests.shim

pytestmark = pytest.mark.unit


def _lines(caplog: pytest.LogCaptureFixture, verb: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, FIELDS, {}).get("verb") == verb]


def _parsed(message: str) -> dict[str, str]:
    words = shlex.split(message)
    assert words[0] == "CNI"
    return dict(word.split("=", 1) for word in words[2:])


def test_each_request_is_one_line_with_its_pod_result_and_time(
    shim: Path, node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyroute2_cni.actor")
    assert call(shim, node, "ADD", conf())[0] == 0
    node.shared.fail_plumb = True
    assert call(shim, node, "ADD", conf(), container="broken")[0] != 0
    assert call(shim, node, "STATUS", conf(), container=None)[0] == 0
    # The line is written after the answer: wait for the last of them.
    wait_for(lambda: len(_lines(caplog, "STATUS")) == 1, 5, "the STATUS line")

    ok, failed = _lines(caplog, "ADD")
    fields: dict[str, Any] = getattr(ok, FIELDS)
    assert ok.levelno == logging.INFO
    assert {k: fields[k] for k in fields if not k.endswith("_ms")} == {
        "verb": "ADD",
        "network": "pyroute2-cni",
        "pod": "default/p",
        "container_id": "c0ffee",
        "ifname": "eth0",
        "vrf": 42,
        "address": "10.244.0.2",
        "result": "ok",
    }
    assert 0 < fields["ipam_ms"] + fields["netlink_ms"] <= fields["duration_ms"]
    # The text line carries the same fields and splits back into them.
    assert ok.getMessage() == render_text(fields)
    assert _parsed(ok.getMessage())["pod"] == "default/p"

    bad: dict[str, Any] = getattr(failed, FIELDS)
    assert failed.levelno == logging.WARNING
    assert bad["container_id"] == "broken" and bad["result"] != "ok"
    assert "cannot open netns" in bad["error"]
    assert "cannot open netns" in _parsed(failed.getMessage())["error"]
    assert bad["address"] == "10.244.0.3", "the address it had before the rollback"

    (status,) = _lines(caplog, "STATUS")
    assert status.levelno == logging.DEBUG, "a runtime polls STATUS: its successes stay quiet"


def test_json_lines_carry_the_fields_as_keys() -> None:
    fields = {"verb": "DEL", "pod": "ns/a b", "result": "ok", "duration_ms": 1.5}
    record = logging.LogRecord("pyroute2_cni.actor.cni", logging.INFO, __file__, 1,
                               "%s", (render_text(fields),), None)  # fmt: skip
    setattr(record, FIELDS, fields)
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "info" and line["logger"] == "pyroute2_cni.actor.cni"
    assert line["pod"] == "ns/a b" and line["duration_ms"] == 1.5
    assert line["message"] == 'CNI DEL pod="ns/a b" result=ok duration_ms=1.5'
    assert line["time"].endswith("+00:00")


def test_logging_format_is_text_or_json(tmp_path: Path) -> None:
    ini = tmp_path / "server.ini"
    ini.write_text("[logging]\nformat = json\n")
    assert load_settings(str(ini)).logging.format == "json"
    ini.write_text("[logging]\nformat = yaml\n")
    with pytest.raises(ConfigError, match="text or json"):
        load_settings(str(ini))
