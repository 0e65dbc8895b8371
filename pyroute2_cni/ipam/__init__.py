"""Address management: blocks, their store in the API, and the consistency check.

Owns: block arithmetic and invariants (``blocks``, pure), the IPBlock, Lease, Pod and Node
access (``store``, one of the modules that import ``kubernetes``), the node's pods by list +
watch (``pod_watch``, through ``kube.transport``), and ``pyroute2-cni ipam check`` (``check``).
May import: ``kube`` (the API client), ``netlink`` (``check`` reads the node's plumbed
pods), ``runtime`` (metrics), ``messages`` and ``values``.
"""
