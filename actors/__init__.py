"""Pykka actors: one per file, talking only through messages in pyroute2_cni.messages."""
