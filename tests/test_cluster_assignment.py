"""Camera assignment: rendezvous hashing moves only the fair share, respects capacity, names why it cannot place."""

from __future__ import annotations

import random

from streamsrv.cluster.assignment import assign, weights

CAMERAS = [f"cam{i}" for i in range(6)]


def moved(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {c for c in before if before[c] != after.get(c)}


def test_every_camera_on_one_live_node_and_deterministic() -> None:
    nodes = {"n1": None, "n2": None, "n3": None}
    a = assign(CAMERAS, nodes)
    assert set(a.owners) == set(CAMERAS) and not a.unassigned
    assert set(a.owners.values()) <= set(nodes)
    assert assign(reversed(CAMERAS), dict(reversed(nodes.items()))) == a  # order of the view does not matter


def test_join_of_a_fourth_node_moves_only_cameras_to_it_and_at_most_the_fair_share() -> None:
    three = assign(CAMERAS, {"n1": None, "n2": None, "n3": None})
    four = assign(CAMERAS, {"n1": None, "n2": None, "n3": None, "n4": None})
    changed = moved(three.owners, four.owners)
    assert all(four.owners[c] == "n4" for c in changed)  # nothing moves between the old nodes
    assert len(changed) <= 3


def test_join_moves_about_one_in_n_over_many_clusters() -> None:
    rng = random.Random(7)
    total = moved_total = 0
    for trial in range(200):
        cams = [f"c{trial}-{rng.randrange(10**6)}" for _ in range(20)]
        old = {f"n{trial}-{k}": None for k in range(3)}
        a = assign(cams, old)
        b = assign(cams, {**old, f"new{trial}": None})
        changed = moved(a.owners, b.owners)
        assert all(b.owners[c] == f"new{trial}" for c in changed)
        total += len(cams)
        moved_total += len(changed)
    assert 0.18 < moved_total / total < 0.32  # the fair share is 1/4


def test_leave_moves_only_the_leavers_cameras() -> None:
    four = assign(CAMERAS * 3 + [f"x{i}" for i in range(30)], {"n1": None, "n2": None, "n3": None, "n4": None})
    three = assign(four.owners, {"n1": None, "n2": None, "n3": None})
    assert moved(four.owners, three.owners) == {c for c, n in four.owners.items() if n == "n4"}


def test_capacity_is_respected_and_overflow_goes_elsewhere() -> None:
    cams = [f"c{i}" for i in range(10)]
    a = assign(cams, {"small": 2, "big": None})
    assert len(a.cameras_of("small")) <= 2 and not a.unassigned
    b = assign(cams, {"n1": 3, "n2": 4})
    assert len(b.cameras_of("n1")) == 3 and len(b.cameras_of("n2")) == 4
    assert len(b.unassigned) == 3
    assert all("no room" in why and "7 camera(s)" in why for why in b.unassigned.values())


def test_no_live_node_leaves_every_camera_unassigned_with_the_reason() -> None:
    a = assign(CAMERAS, {})
    assert not a.owners and a.unassigned == dict.fromkeys(CAMERAS, "no live node")


def test_capacity_weights_the_share() -> None:
    cams = [f"c{i}" for i in range(600)]
    a = assign(cams, {"big": 1000, "small": 250})
    assert 380 < len(a.cameras_of("big")) < 560  # 4:1 weights -> ~480 of 600
    assert weights({"a": None}) == {"a": 1.0}
