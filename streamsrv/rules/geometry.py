"""Geometry for rules, vectorised over all tracks of a frame: anchors, polygon tests, line crossings.

Image coordinates: x to the right, y down, source pixels, float64.

Sides of a directed segment ``a -> b``: with ``c = cross(b - a, p - a)``, on screen (y down) ``c < 0`` is the
left of someone walking from ``a`` to ``b`` and ``c > 0`` their right. A point exactly on the line counts as
left. Having no third "on the line" side makes crossings half-open: a track that stops on a line and jitters
across it yields alternating +1/-1 crossings that cancel, never two in one direction.

Example:
    >>> line = np.array([[0.0, 10.0], [100.0, 10.0]])        # drawn left to right: its left is the top
    >>> crossings(np.array([[50.0, 0.0]]), np.array([[50.0, 20.0]]), line).tolist()
    [1]
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
import shapely

F64 = npt.NDArray[np.float64]
AnchorPoint = Literal["bottom_center", "center"]


def anchors(xyxy: npt.ArrayLike, anchor: AnchorPoint) -> F64:
    """Anchor points ``(n, 2)`` of boxes ``(n, 4)``: the bottom centre (feet, wheels) or the centre.

    >>> anchors(np.array([[0, 0, 10, 20]]), "bottom_center").tolist()
    [[5.0, 20.0]]
    """
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    out = np.empty((len(b), 2), np.float64)
    out[:, 0] = (b[:, 0] + b[:, 2]) / 2
    out[:, 1] = b[:, 3] if anchor == "bottom_center" else (b[:, 1] + b[:, 3]) / 2
    return out


def box_diagonals(xyxy: npt.ArrayLike) -> F64:
    """Length of each box's diagonal ``(n,)``: the apparent size that tolerances are relative to."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.hypot(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1])


def box_areas(xyxy: npt.ArrayLike) -> F64:
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def polygon(points: F64) -> shapely.Polygon:
    """A prepared polygon, ready for repeated vectorised predicates."""
    shape = shapely.Polygon(points)
    shapely.prepare(shape)
    return shape


def contains(shape: shapely.Polygon, xy: F64) -> npt.NDArray[np.bool_]:
    """Which points ``(n, 2)`` lie strictly inside the polygon, in one vectorised call.

    >>> contains(polygon(np.array([[0., 0.], [10., 0.], [10., 10.], [0., 10.]])), np.array([[5., 5.], [15., 5.]]))
    array([ True, False])
    """
    if len(xy) == 0:
        return np.zeros(0, np.bool_)
    return np.asarray(shapely.contains_xy(shape, xy[:, 0], xy[:, 1]), np.bool_)


def overlap_ratios(shape: shapely.Polygon, xyxy: npt.ArrayLike) -> F64:
    """Fraction of each box's area ``(n,)`` that lies inside the polygon (0 for empty boxes)."""
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros(0, np.float64)
    inter = shapely.area(shapely.intersection(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]), shape))
    area = box_areas(b)
    return np.divide(inter, area, out=np.zeros_like(area), where=area > 0)


def crossings(start: F64, end: F64, polyline: F64) -> npt.NDArray[np.int8]:
    """Net signed crossings ``(n,)`` of movements ``start[i] -> end[i]`` over a polyline ``(m, 2)``.

    +1: from the polyline's left to its right, -1: right to left, 0: no crossing or crossings that cancel (a
    movement over both arms of a V ends on the side it started). The whole movement segment is tested, so a
    crossing is found however far a skipped frame jumps. Each polyline segment owns its start vertex but not its
    end vertex (the last one owns both), so passing exactly through a vertex counts once.
    """
    ax, ay = polyline[:-1, 0], polyline[:-1, 1]
    dx, dy = polyline[1:, 0] - ax, polyline[1:, 1] - ay
    px, py, qx, qy = start[:, :1], start[:, 1:2], end[:, :1], end[:, 1:2]
    right_q = dx * (qy - ay) - dy * (qx - ax) > 0
    flips = (dx * (py - ay) - dy * (px - ax) > 0) != right_q
    if not flips.any():  # the usual frame: nobody changed sides of any segment's line
        return np.zeros(len(start), np.int8)
    mx, my = qx - px, qy - py
    denom = dx * my - dy * mx
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((px - ax) * my - (py - ay) * mx) / denom  # where along the segment the movement's line meets it
    last = np.zeros(len(ax), np.bool_)
    last[-1] = True
    within = (t >= 0) & ((t < 1) | (last & (t <= 1)))
    hit = flips & (denom != 0) & within
    return np.sign((hit * np.where(right_q, 1, -1)).sum(axis=1)).astype(np.int8)


def distances(shape: shapely.Geometry, xy: F64) -> F64:
    """Euclidean distance ``(n,)`` from each point to a geometry, vectorised."""
    if len(xy) == 0:
        return np.zeros(0, np.float64)
    return np.asarray(shapely.distance(shape, shapely.points(xy)), np.float64)
