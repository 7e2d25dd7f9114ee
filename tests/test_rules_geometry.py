"""Geometry of rules: anchors, vectorised polygon tests, and crossings of movement segments over polylines."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from streamsrv.config.rules import to_pixels
from streamsrv.rules.geometry import anchors, box_diagonals, contains, crossings, distances, overlap_ratios, polygon

SQUARE = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 100.0], [0.0, 100.0]])
# Drawn left to right on screen: its left side is the top of the image (smaller y).
HORIZONTAL = np.array([[0.0, 50.0], [100.0, 50.0]])


def moves(*segments: tuple[tuple[float, float], tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    start = np.array([s for s, _ in segments], np.float64)
    end = np.array([e for _, e in segments], np.float64)
    return start, end


def test_anchors_bottom_center_and_center() -> None:
    xyxy = np.array([[10, 20, 30, 60]], np.float32)
    assert anchors(xyxy, "bottom_center").tolist() == [[20.0, 60.0]]
    assert anchors(xyxy, "center").tolist() == [[20.0, 40.0]]
    assert box_diagonals(np.array([[0, 0, 3, 4]])).tolist() == [5.0]


def test_contains_is_vectorised_and_agrees_with_point_by_point() -> None:
    rng = np.random.default_rng(0)
    shape = polygon(np.array([[10.0, 10.0], [90.0, 20.0], [60.0, 90.0], [20.0, 70.0]]))
    xy = rng.uniform(0, 100, size=(500, 2))
    expected = [shape.contains(shapely.Point(x, y)) for x, y in xy]
    assert contains(shape, xy).tolist() == expected
    assert contains(shape, np.zeros((0, 2))).shape == (0,)


def test_overlap_ratio_is_the_fraction_of_the_box_inside() -> None:
    shape = polygon(SQUARE)
    boxes = np.array([[10, 10, 20, 20], [90, 0, 110, 10], [200, 200, 210, 210], [5, 5, 5, 5]], np.float64)
    assert overlap_ratios(shape, boxes).tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_normalised_points_scale_with_the_frame() -> None:
    assert to_pixels([(0.25, 0.5), (1.0, 1.0)], "norm", 640, 360).tolist() == [[160.0, 180.0], [640.0, 360.0]]
    assert to_pixels([(3.0, 4.0)], "px", 640, 360).tolist() == [[3.0, 4.0]]


def test_crossing_directions_follow_the_drawing_order() -> None:
    start, end = moves(((50, 10), (50, 90)), ((50, 90), (50, 10)), ((50, 10), (50, 40)))
    assert crossings(start, end, HORIZONTAL).tolist() == [1, -1, 0]  # down the image = left to right
    assert crossings(start, end, HORIZONTAL[::-1].copy()).tolist() == [-1, 1, 0]


def test_a_skipped_frame_that_jumps_far_over_the_line_still_crosses() -> None:
    start, end = moves(((50, -5000), (50, 5000)), ((-10, 0), (200, 100)))
    assert crossings(start, end, HORIZONTAL).tolist() == [1, 1]


def test_passing_beside_the_end_of_the_line_is_no_crossing() -> None:
    start, end = moves(((150, 10), (150, 90)), ((-1, 10), (-1, 90)))
    assert crossings(start, end, HORIZONTAL).tolist() == [0, 0]


def test_a_point_on_the_line_counts_as_left_so_touching_never_double_counts() -> None:
    # Stop exactly on the line, jitter across and back: +1 then -1, never +1 twice.
    path = np.array([[50, 10], [50, 50], [50, 52], [50, 50], [50, 52], [50, 50], [50, 10]], np.float64)
    steps = crossings(path[:-1], path[1:], HORIZONTAL).tolist()
    assert steps == [0, 1, -1, 1, -1, 0]
    assert sum(steps) == 0


def test_through_a_polyline_vertex_counts_once() -> None:
    zigzag = np.array([[0.0, 50.0], [50.0, 50.0], [100.0, 60.0]])
    start, end = moves(((50, 0), (50, 100)))
    assert crossings(start, end, zigzag).tolist() == [1]


def test_crossing_both_arms_of_a_v_cancels() -> None:
    v_line = np.array([[0.0, 0.0], [50.0, 100.0], [100.0, 0.0]])
    start, end = moves(((0, 50), (100, 50)), ((50, 10), (50, 200)))
    assert crossings(start, end, v_line).tolist() == [0, 1]


def test_distances_to_a_line() -> None:
    line = shapely.LineString(HORIZONTAL)
    assert distances(line, np.array([[50.0, 53.0], [103.0, 54.0]])).tolist() == pytest.approx([3.0, 5.0])


coords = st.floats(-1000, 1000, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(coords, coords, coords, coords, coords, coords, coords, coords)
def test_a_single_segment_crosses_exactly_when_shapely_sees_the_segments_cross(
    px: float, py: float, qx: float, qy: float, ax: float, ay: float, bx: float, by: float
) -> None:
    line = np.array([[ax, ay], [bx, by]])
    move = shapely.LineString([(px, py), (qx, qy)])
    wire = shapely.LineString(line)
    # Touching cases are decided by the half-open rule, not by shapely; keep to clean hits and misses.
    if (ax, ay) == (bx, by) or (px, py) == (qx, qy) or move.distance(shapely.Point(ax, ay)) < 1e-6:
        return
    if any(wire.distance(shapely.Point(p)) < 1e-6 for p in [(px, py), (qx, qy)]):
        return
    if move.distance(shapely.Point(bx, by)) < 1e-6:
        return
    net = crossings(np.array([[px, py]]), np.array([[qx, qy]]), line)[0]
    assert (net != 0) == move.crosses(wire)
    if net:
        side_q = (bx - ax) * (qy - ay) - (by - ay) * (qx - ax)
        assert net == (1 if side_q > 0 else -1)
