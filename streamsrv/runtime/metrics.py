"""Prometheus metrics of a running server (names and meanings: docs/metrics.md).

Counters and gauges are read from the server (cameras, inference, the rule engines' event counts, the event bus)
and the job manager at scrape time, so they cost nothing between scrapes and a removed camera's series simply
disappear.
Latency, batch size and frame age are histograms, observed from every result on the results thread.

Each server has its own registry (not prometheus_client's global one), so several servers in one process
(tests) do not collide.

Example:
    >>> metrics = ServerMetrics(server, job_manager, caches)  # doctest: +SKIP
    >>> metrics.render().decode().splitlines()[0]  # doctest: +SKIP
    '# HELP streamsrv_camera_processed_fps ...'
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from types import ModuleType

from prometheus_client import CollectorRegistry, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamsrv.errors import NotFoundError
from streamsrv.jobs.manager import JobManager
from streamsrv.runtime.caches import CacheCollector, Caches
from streamsrv.runtime.capacity_metrics import CapacityCollector
from streamsrv.runtime.clip_metrics import ClipCollector
from streamsrv.runtime.job_metrics import JobCollector, JobTurnaround
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.track_metrics import track_quality_metrics
from streamsrv.types import CameraState, FrameResult

log = logging.getLogger(__name__)

LATENCY_BUCKETS_S = (0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256)
AGE_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)

# What GpuCollector can emit. Dashboards are checked against a live scrape, but a machine without an NVIDIA GPU has
# none of these series, so the dashboard test checks its GPU queries against this list instead.
GPU_METRIC_NAMES = (
    "streamsrv_gpu_utilization_ratio",
    "streamsrv_gpu_memory_used_bytes",
    "streamsrv_gpu_memory_total_bytes",
)


class _ServerCollector(Collector):
    def __init__(self, server: ServerApi) -> None:
        self.server = server

    def collect(self) -> Iterator[Metric]:
        yield from self._cameras()
        yield from track_quality_metrics(self.server)
        yield from self._inference()
        yield from self._events()
        yield from self._rules()

    def _cameras(self) -> Iterator[Metric]:
        server = self.server
        registered = list(server.cfg.cameras)
        stats = server.all_camera_stats()
        enabled = GaugeMetricFamily(
            "streamsrv_camera_enabled", "1 if the camera is registered and enabled, 0 if disabled.", labels=["camera"]
        )
        for cam in registered:
            enabled.add_metric([cam.id], 1.0 if cam.enabled else 0.0)
        yield enabled

        state = GaugeMetricFamily(
            "streamsrv_camera_state",
            "1 for the state the camera's source is in, 0 for the others.",
            labels=["camera", "state"],
        )
        gauges = {
            "source_fps": GaugeMetricFamily(
                "streamsrv_camera_source_fps", "Frame rate the source declares.", labels=["camera"]
            ),
            "ingest_fps": GaugeMetricFamily(
                "streamsrv_camera_ingest_fps", "Packets received per second.", labels=["camera"]
            ),
            "decoded_fps": GaugeMetricFamily(
                "streamsrv_camera_decoded_fps", "Frames decoded per second.", labels=["camera"]
            ),
            "handed_fps": GaugeMetricFamily(
                "streamsrv_camera_handed_fps", "Frames handed to inference per second (detect_fps).", labels=["camera"]
            ),
            "processed_fps": GaugeMetricFamily(
                "streamsrv_camera_processed_fps", "Frames inferred and tracked per second.", labels=["camera"]
            ),
        }
        since = GaugeMetricFamily(
            "streamsrv_camera_seconds_since_frame", "Seconds since the last decoded frame.", labels=["camera"]
        )
        decoded = CounterMetricFamily("streamsrv_camera_frames_decoded", "Frames decoded.", labels=["camera"])
        processed = CounterMetricFamily(
            "streamsrv_camera_frames_processed", "Frames inferred and tracked.", labels=["camera"]
        )
        dropped = CounterMetricFamily(
            "streamsrv_camera_frames_dropped",
            "Frames not processed, by reason: skipped (detect_fps spacing, by design), behind (not decoded: the "
            "decoder fell behind real time and skipped to a keyframe), no_motion (due, but no motion and "
            "motion.max_interval_s not yet up: the detector was not needed), latest_wins (replaced by a newer frame "
            "before inference took it), stale (too old when inference took it).",
            labels=["camera", "reason"],
        )
        reconnects = CounterMetricFamily("streamsrv_camera_reconnects", "Source reconnect attempts.", labels=["camera"])
        restarts = CounterMetricFamily(
            "streamsrv_camera_decoder_restarts",
            "Decoder processes restarted after dying or hanging.",
            labels=["camera"],
        )
        for s in stats:
            cam_label = [s.camera_id]
            for value in CameraState:
                state.add_metric([s.camera_id, value.value], 1.0 if s.state == value else 0.0)
            for key, family in gauges.items():
                family.add_metric(cam_label, float(getattr(s, key)))
            if s.seconds_since_frame is not None:
                since.add_metric(cam_label, s.seconds_since_frame)
            decoded.add_metric(cam_label, s.frames_decoded)
            processed.add_metric(cam_label, s.frames_processed)
            dropped.add_metric([s.camera_id, "skipped"], s.dropped_skipped)
            dropped.add_metric([s.camera_id, "behind"], s.dropped_behind)
            dropped.add_metric([s.camera_id, "no_motion"], s.skipped_no_motion)
            dropped.add_metric([s.camera_id, "latest_wins"], s.dropped_latest_wins)
            dropped.add_metric([s.camera_id, "stale"], s.dropped_stale)
            reconnects.add_metric(cam_label, s.reconnects)
            restarts.add_metric(cam_label, s.decoder_restarts)
        yield state
        yield from gauges.values()
        yield from (since, decoded, processed, dropped, reconnects, restarts)

    def _inference(self) -> Iterator[Metric]:
        h = self.server.inference_health()
        yield GaugeMetricFamily("streamsrv_inference_up", "1 while the inference process runs.", value=float(h.alive))
        yield GaugeMetricFamily(
            "streamsrv_inference_model_loaded", "1 once the model is loaded.", value=float(h.model_loaded)
        )
        info = GaugeMetricFamily(
            "streamsrv_inference_info",
            "The detector backend and device in use (value 1).",
            labels=["backend", "device"],
        )
        if h.model_loaded:
            info.add_metric([h.backend, h.device], 1.0)
        yield info
        yield CounterMetricFamily(
            "streamsrv_inference_restarts", "Inference process restarts after it died.", value=h.restarts
        )
        yield CounterMetricFamily(
            "streamsrv_inference_results_dropped",
            "Results the inference process dropped because the main process fell behind.",
            value=h.results_dropped,
        )
        if h.heap is not None:
            heap = GaugeMetricFamily(
                "streamsrv_inference_heap_bytes",
                "The inference process's C heap: bytes in use, and free but held by the allocator.",
                labels=["state"],
            )
            heap.add_metric(["in_use"], h.heap.in_use_bytes)
            heap.add_metric(["free"], h.heap.free_bytes)
            yield heap
            yield CounterMetricFamily(
                "streamsrv_inference_heap_trimmed_bytes",
                "Resident memory the inference process handed back to the OS by trimming its heap.",
                value=h.heap.trimmed_bytes,
            )

    def _events(self) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "streamsrv_events",
            "Events raised, by camera and type (e.g. zone.enter, line.cross).",
            labels=["camera", "type"],
        )
        registered = {cam.id for cam in self.server.cfg.cameras}
        # a copy in one C call: the results thread adds keys while we read
        for (camera_id, event_type), n in dict(self.server.events_by_type).items():
            if camera_id in registered:  # a removed camera's series go, like its other series
                events.add_metric([camera_id, event_type], n)
        yield events
        bus = self.server.bus.stats()
        yield CounterMetricFamily("streamsrv_event_bus_accepted", "Events handed to the bus.", value=bus.accepted)
        yield CounterMetricFamily(
            "streamsrv_event_bus_published", "Events delivered (to Redis, or in-process).", value=bus.published
        )
        yield CounterMetricFamily(
            "streamsrv_event_bus_dropped", "Events lost to the bus's outage buffer bound.", value=bus.dropped
        )
        yield GaugeMetricFamily("streamsrv_event_bus_buffered", "Events waiting for Redis now.", value=bus.buffered)
        yield CounterMetricFamily(
            "streamsrv_event_bus_refused_stale",
            "Cluster mode: events refused because their camera's lease was no longer this node's (a stale owner).",
            value=bus.refused_stale,
        )
        yield CounterMetricFamily(
            "streamsrv_event_snapshots_missed",
            "Events with a box stored without a snapshot: their frame had left the camera's ring.",
            value=self.server.snapshots.stats().missed,
        )
        yield GaugeMetricFamily("streamsrv_event_bus_subscribers", "Live event subscribers.", value=bus.subscribers)
        if bus.redis_connected is not None:
            yield GaugeMetricFamily(
                "streamsrv_event_bus_redis_connected", "1 while Redis is reachable.", value=float(bus.redis_connected)
            )
            yield CounterMetricFamily("streamsrv_event_bus_reconnects", "Reconnections to Redis.", value=bus.reconnects)

    def _rules(self) -> Iterator[Metric]:
        crossings = CounterMetricFamily(
            "streamsrv_line_crossings",
            "Tripwire crossings since the line was created, by direction name and label.",
            labels=["camera", "line", "direction", "label"],
        )
        occupancy = GaugeMetricFamily(
            "streamsrv_zone_occupancy",
            "Confirmed objects inside the zone in the camera's latest processed frame, by label.",
            labels=["camera", "zone", "label"],
        )
        server = self.server
        for camera_id in server.running_camera_ids():
            try:
                rules = server.rules(camera_id)
                counts = server.line_counts(camera_id)
                inside = server.occupancy(camera_id)
            except NotFoundError:  # removed since camera_ids()
                continue
            # A rule's own labels are reported as 0 until counted, so graphs show an empty zone or an uncrossed line
            # as 0 rather than as no data.
            line_labels = {line.name: line.labels or [] for line in rules.lines}
            for line, directions in counts.items():
                for direction, by_label in directions.items():
                    for label, n in {**dict.fromkeys(line_labels.get(line, []), 0), **by_label}.items():
                        crossings.add_metric([camera_id, line, direction, label], n)
            zone_labels = {zone.name: zone.labels or [] for zone in rules.zones}
            for zone, by_label in inside.items():
                for label, n in {**dict.fromkeys(zone_labels.get(zone, []), 0), **by_label}.items():
                    occupancy.add_metric([camera_id, zone, label], n)
        yield crossings
        yield occupancy


class GpuCollector(Collector):
    """Utilisation and memory of every GPU NVML sees, read at scrape time (label ``gpu``: NVML's index).

    NVML is initialised once: where it cannot be (no NVIDIA driver, or a container without a GPU) the series are
    absent rather than 0, so a dashboard shows "no data" instead of an idle GPU that does not exist.
    """

    def __init__(self) -> None:
        self._nvml: ModuleType | None = None
        try:
            import pynvml  # nvidia-ml-py, installed with ultralytics

            pynvml.nvmlInit()
        except ImportError:
            log.info("GPU metrics off: nvidia-ml-py is not installed")
            return
        except pynvml.NVMLError as exc:
            log.info("GPU metrics off: NVML did not initialise (%s)", exc)
            return
        self._nvml = pynvml

    def collect(self) -> Iterator[Metric]:
        nvml = self._nvml
        if nvml is None:
            return
        utilization = GaugeMetricFamily(
            "streamsrv_gpu_utilization_ratio",
            "Share of NVML's last sample period (1/6 s to 1 s) in which a kernel ran on the GPU, 0 to 1.",
            labels=["gpu"],
        )
        used = GaugeMetricFamily(
            "streamsrv_gpu_memory_used_bytes", "GPU memory in use by all processes.", labels=["gpu"]
        )
        total = GaugeMetricFamily("streamsrv_gpu_memory_total_bytes", "GPU memory installed.", labels=["gpu"])
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            log.warning("GPU metrics: NVML cannot count GPUs: %s", exc)
            count = 0
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                rates = nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            except nvml.NVMLError:  # a GPU being reset or gone from the bus: no series for it in this scrape
                continue
            gpu = [str(index)]
            utilization.add_metric(gpu, rates.gpu / 100.0)
            used.add_metric(gpu, float(memory.used))
            total.add_metric(gpu, float(memory.total))
        yield from (utilization, used, total)

    def close(self) -> None:
        if self._nvml is not None:
            self._nvml.nvmlShutdown()
            self._nvml = None


class ServerMetrics:
    """A Prometheus registry for one server, its jobs and caches; ``render()`` gives the text exposition format."""

    def __init__(self, server: ServerApi, jobs: JobManager, caches: Caches) -> None:
        self.server = server
        self.registry = CollectorRegistry()
        self.registry.register(_ServerCollector(server))
        self.registry.register(JobCollector(jobs))
        self.registry.register(CacheCollector(caches))
        self.registry.register(ClipCollector(server.clips))
        self.registry.register(CapacityCollector(server))
        self._turnaround = JobTurnaround(jobs, self.registry)
        self._gpu = GpuCollector()
        self.registry.register(self._gpu)
        ProcessCollector(registry=self.registry)
        self.inference_seconds = Histogram(
            "streamsrv_inference_duration_seconds",
            "Time of one forward pass (the whole batch), observed once per batch.",
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "streamsrv_inference_batch_size",
            "Frames per forward pass, observed once per batch.",
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self.frame_age = Histogram(
            "streamsrv_frame_age_seconds",
            "Age of a frame (since it was decoded) when inference started on it.",
            labelnames=["camera"],
            buckets=AGE_BUCKETS_S,
            registry=self.registry,
        )
        self._age_cameras: set[str] = set()
        self._batch_left = 0
        self._batch_ms = -1.0
        self._unsubscribe = server.subscribe_results(self._observe)

    def _observe(self, result: FrameResult) -> None:
        # The results of one batch arrive one after another, each carrying the batch's size and time; count the
        # batch once. A changed time also starts a new batch, so a result lost on the way cannot shift the count.
        if self._batch_left <= 0 or result.inference_ms != self._batch_ms:
            self.inference_seconds.observe(result.inference_ms / 1e3)
            self.batch_size.observe(result.batch_size)
            self._batch_left, self._batch_ms = result.batch_size, result.inference_ms
        self._batch_left -= 1
        self.frame_age.labels(result.camera_id).observe(result.frame_age_s)
        self._age_cameras.add(result.camera_id)

    def render(self) -> bytes:
        """The metrics in Prometheus text format; series of removed cameras are dropped first."""
        current = set(self.server.running_camera_ids())
        for camera_id in list(self._age_cameras - current):
            self.frame_age.remove(camera_id)
            self._age_cameras.discard(camera_id)
        return generate_latest(self.registry)

    def close(self) -> None:
        self._unsubscribe()
        self._turnaround.close()
        self._gpu.close()
