"""Peer scripts, run by the comparison scripts with a peer's own Python (never imported here)."""
