"""The CNI contract: the spec, the shim's wire format, the host install, the request log.

Owns: parsing, validating and rendering CNI requests (``spec``, pure), the frames between
the shim and the daemon (``shim_protocol``), installing the shim and the conflist
(``install``), one log line per request (``log``), and the gate that keeps GC off in-flight
ADDs (``attachment_gate``).  May import: ``messages`` and ``values``; no other domain.
"""
