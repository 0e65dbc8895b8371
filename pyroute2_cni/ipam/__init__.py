"""Address management: blocks, their store in the API, and the consistency check.

Owns: block arithmetic and invariants (``blocks``, pure), the allocation planner (``planner``,
pure: batch rounds, claim order, leaked addresses, empty blocks), the reclaimer Lease election
and the look for deleted Nodes' blocks (``lease``, pure), the IPBlock, Lease, Pod and Node
access (``store``, one of the modules that import ``kubernetes``), the node's pods by list +
watch (``pod_watch``, through ``kube.transport``), and ``pyroute2-cni ipam check`` (``check``).
May import: ``kube`` (the API client), ``netlink`` (``check`` reads the node's plumbed
pods), ``runtime`` (metrics), ``messages`` and ``values``.
"""
