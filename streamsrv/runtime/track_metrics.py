"""Per-camera track-quality series for ``/metrics`` (names and meanings: docs/metrics.md).

A sudden rise in tracks started per minute, or in tracks that never confirm, with no more people about, is
fragmentation: the camera moved, lost focus or its light changed. Counters only rise, so Prometheus takes rates and
ratios of them (``rate(streamsrv_camera_tracks_confirmed_total[5m]) * 60``); ``GET /api/cameras/{id}/stats``
gives the same figures worked out.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric

from streamsrv.errors import NotFoundError
from streamsrv.runtime.protocol import ServerApi


def track_quality_metrics(server: ServerApi) -> Iterator[Metric]:
    """One series per running camera for each family."""
    confirmed = CounterMetricFamily(
        "streamsrv_camera_tracks_confirmed", "Tracks confirmed (shown with an id).", labels=["camera"]
    )
    never = CounterMetricFamily(
        "streamsrv_camera_tracks_never_confirmed",
        "Tentative tracks that ended without being confirmed.",
        labels=["camera"],
    )
    ended = CounterMetricFamily("streamsrv_camera_tracks_ended", "Confirmed tracks that ended.", labels=["camera"])
    seconds = CounterMetricFamily(
        "streamsrv_camera_track_seconds", "Time the ended confirmed tracks were followed, in all.", labels=["camera"]
    )
    relinks = CounterMetricFamily(
        "streamsrv_camera_relinks",
        "New tracker ids the rule engine took for an object it already followed (tracker id switches).",
        labels=["camera"],
    )
    for s in server.all_camera_stats():
        camera = [s.camera_id]
        confirmed.add_metric(camera, s.tracks_confirmed)
        never.add_metric(camera, s.tracks_never_confirmed)
        ended.add_metric(camera, s.tracks_ended)
        seconds.add_metric(camera, s.track_seconds)
        try:
            relinks.add_metric(camera, server.latest(s.camera_id).output.relinks)
        except NotFoundError:  # removed since all_stats()
            continue
    yield from (confirmed, never, ended, seconds, relinks)
