"""`python -m tests.harness.toy_daemon CONFIG MODE`: the real daemon loop with toy actors.

MODE `crash-loop`: alpha crashes right after every start, so the supervisor
must give up and exit non-zero.  MODE `idle`: run until a signal.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import pykka

from pyroute2_cni.actors.address import Address
from pyroute2_cni.actors.base import ActorHooks
from pyroute2_cni.daemon.run import run_daemon
from pyroute2_cni.runtime.config import Settings, load_settings
from pyroute2_cni.runtime.logsetup import setup_logging
from pyroute2_cni.runtime.metrics import Metrics
from pyroute2_cni.supervisor import ActorSpec
from tests.harness.toy_actors import Crash, toy_spec


def crash_loop(settings: Settings, metrics: Metrics, readiness: object) -> Sequence[ActorSpec]:
    base = toy_spec("alpha")
    address: Address = base.address

    def start(hooks: ActorHooks) -> pykka.ActorRef[Any]:
        ref = base.start(hooks)
        ref.tell(Crash(why=f"crash-loop generation {hooks.generation}"))
        return ref

    return [ActorSpec(name="alpha", start=start, address=address), toy_spec("beta")]


def idle(settings: Settings, metrics: Metrics, readiness: object) -> Sequence[ActorSpec]:
    return [toy_spec("alpha"), toy_spec("beta", depends_on=["alpha"])]


def main(argv: list[str]) -> int:
    config, mode = argv
    settings = load_settings(config)
    setup_logging(settings.logging.level)
    print("toy daemon starting", flush=True)
    return run_daemon(settings, {"crash-loop": crash_loop, "idle": idle}[mode])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
