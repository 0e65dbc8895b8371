"""The shared NetlinkBackend behaviour suite against the kernel (KernelNetlink in a fresh
namespace); its twin runs against FakeNetlink, which keeps the fake honest."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pyroute2_cni.netlink.sessions import KernelNetlink
from tests.harness.netlink_behaviour import BehaviourEnv, behaviour_params
from tests.harness.netns import NetnsFactory

pytestmark = pytest.mark.kernel


@pytest.mark.parametrize("behaviour", behaviour_params())
def test_kernel_behaves_as_the_fake_assumes(
    behaviour: Callable[[BehaviourEnv], None], netns_factory: NetnsFactory
) -> None:
    node, pod = netns_factory(), netns_factory()
    backend = KernelNetlink(node)
    try:
        behaviour(BehaviourEnv(backend=backend, pod_netns=pod))
    finally:
        backend.close()
