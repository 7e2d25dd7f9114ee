"""Cluster config: the contract's names, defaults, and errors naming the field; no cluster section changes nothing."""

from __future__ import annotations

import re

import pytest

from streamsrv.config import parse_config
from streamsrv.config.cluster import NODE_ID_PATTERN, ClusterConfig, advertise_url, default_node_id
from streamsrv.errors import ConfigError


def test_without_cluster_nothing_changes() -> None:
    cfg = parse_config("cameras: [{id: door, url: rtsp://10.0.0.2/s}]")
    assert cfg.cluster is None
    assert cfg.events.redis_url is None  # the in-process bus, no Redis needed


def test_defaults_and_events_follow_the_cluster_redis() -> None:
    cfg = parse_config("cluster: {redis_url: 'redis://r:6379/0'}\ninference: {device: 'cuda:1'}")
    assert cfg.cluster is not None
    assert cfg.cluster.lease_s == 10.0 and cfg.cluster.capacity is None and cfg.cluster.advertise_url is None
    assert cfg.cluster.node_id == default_node_id()
    assert re.fullmatch(NODE_ID_PATTERN, cfg.cluster.node_id)
    assert cfg.events.redis_url == "redis://r:6379/0"
    assert cfg.inference.device == "cuda:1"  # one node per GPU on a shared host


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster: {node_id: a}", "cluster.redis_url is required"),
        ("cluster: {redis_url: ''}", "cluster.redis_url is required"),
        ("cluster: {redis_url: 'redis://r', node_id: 'a b'}", "cluster.node_id = 'a b'"),
        ("cluster: {redis_url: 'redis://r', lease_s: 0}", "cluster.lease_s = 0"),
        ("cluster: {redis_url: 'redis://r', capacity: -1}", "cluster.capacity = -1"),
        ("cluster: {redis_url: 'redis://r', advertise_url: 'ftp://x'}", "cluster.advertise_url = 'ftp://x'"),
        ("cluster: {redis_url: 'redis://r', leese_s: 3}", "cluster.leese_s = 3: unknown field"),
        (
            "cluster: {redis_url: 'redis://r'}\nevents: {redis_url: 'redis://other'}",
            "events.redis_url must be cluster.redis_url",
        ),
    ],
)
def test_bad_cluster_config_names_the_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_config(text, "cfg.yaml")


def test_advertise_url() -> None:
    cfg = ClusterConfig(redis_url="redis://r")
    assert advertise_url(cfg, "127.0.0.1", 8081) == "http://127.0.0.1:8081"
    assert advertise_url(cfg, "::1", 8081) == "http://[::1]:8081"
    wildcard = advertise_url(cfg, "0.0.0.0", 80)
    assert wildcard.startswith("http://") and "0.0.0.0" not in wildcard
    explicit = ClusterConfig(redis_url="redis://r", advertise_url="http://node-a:8080/")
    assert advertise_url(explicit, "0.0.0.0", 80) == "http://node-a:8080"
