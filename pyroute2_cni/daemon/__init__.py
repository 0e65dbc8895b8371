"""The composition root: the daemon's start-up and the wiring of the actor graph.

Owns: ``pyroute2-cni daemon`` (``run``: settings, metrics, health server, supervisor) and
the actor specs with their addresses and real backends (``wiring``).  May import everything
below it: the supervisor, the actors, every library domain, messages and values.
"""
