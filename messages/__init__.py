"""Typed, immutable messages exchanged between actors (one module per concern)."""
