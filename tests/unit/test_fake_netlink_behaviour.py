"""The shared NetlinkBackend behaviour suite against FakeNetlink (its twin runs on the kernel)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.harness.fake_netlink import FakeKernel, FakeNetlink
from tests.harness.netlink_behaviour import BehaviourEnv, behaviour_params

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("behaviour", behaviour_params())
def test_fake_behaves_like_the_kernel(behaviour: Callable[[BehaviourEnv], None]) -> None:
    kernel = FakeKernel()
    kernel.add_namespace("node")
    pod = "pod"
    kernel.add_namespace(pod)
    behaviour(BehaviourEnv(backend=FakeNetlink(kernel, netns="node"), pod_netns=pod))
