"""Cluster mode: nodes share cameras through Redis (registry, membership, leases with fencing tokens).

See docs/cluster.md. Nothing here runs without a ``cluster:`` section in the config.
"""
