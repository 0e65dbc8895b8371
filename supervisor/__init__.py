"""The supervisor: starts, watches and restarts the actors; escalates by exiting non-zero."""

from pyroute2_cni.supervisor.supervisor import ActorSpec, Supervisor

__all__ = ["ActorSpec", "Supervisor"]
