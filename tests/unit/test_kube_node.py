"""The kubelet harness's /proc/cpuinfo patch (cAdvisor needs a clock speed)."""

from __future__ import annotations

import pytest

from tests.harness.kube_node import CPU_MHZ_LINE, cpuinfo_with_mhz

pytestmark = pytest.mark.unit

# What the User-Mode Linux guest shows: two processors, no "cpu MHz".
UML_CPUINFO = """processor\t: 0
vendor_id\t: User Mode Linux
model name\t: UML
mode\t\t: skas
host\t\t: Linux

processor\t: 1
vendor_id\t: User Mode Linux
model name\t: UML
mode\t\t: skas
host\t\t: Linux

"""


def test_every_processor_block_gets_a_clock_speed() -> None:
    patched = cpuinfo_with_mhz(UML_CPUINFO)
    blocks = patched.strip().split("\n\n")
    assert len(blocks) == 2
    assert all(block.splitlines()[-1] == CPU_MHZ_LINE for block in blocks)
    assert patched.count("processor\t:") == 2


def test_a_block_with_a_clock_speed_is_left_alone() -> None:
    text = "processor\t: 0\ncpu MHz\t\t: 3100.000\n"
    assert cpuinfo_with_mhz(text) == text
