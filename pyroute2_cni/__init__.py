"""pyroute2-cni: a Kubernetes CNI and node daemon built on Linux VRFs, EVPN and FRR."""

__version__ = "0.1.0"
