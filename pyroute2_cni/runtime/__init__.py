"""The daemon's runtime services, shared by every domain.

Owns: ``server.ini`` (``config``), ``/livez`` ``/readyz`` ``/metrics`` (``health``),
the Prometheus metrics (``metrics``), logging set-up (``logsetup``), and the per-key ordered
executor (``keyed_executor``).  May import: nothing of pyroute2_cni but itself.
"""
