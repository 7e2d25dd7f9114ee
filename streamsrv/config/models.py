"""The configuration model: one YAML file validated at start (unknown keys are errors).

Example:
    >>> cfg = AppConfig.model_validate({"cameras": [{"id": "door", "url": "clip.mp4"}]})
    >>> cfg.cameras[0].detect_fps
    5.0
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from streamsrv.config.base import StrictModel
from streamsrv.config.capacity import CapacityConfig, Priority
from streamsrv.config.cluster import ClusterConfig
from streamsrv.config.motion import MotionConfig, refresh_error
from streamsrv.config.outputs import OutputsConfig
from streamsrv.config.preview import PreviewConfig
from streamsrv.config.record import CameraRecordConfig, RecordConfig
from streamsrv.config.rules import RulesSetting

CAMERA_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
SUPPORTED_SCHEMES = ("rtsp", "rtsps", "http", "https", "file")


class ReconnectConfig(StrictModel):
    """Exponential back-off with jitter between reconnect attempts."""

    initial_s: float = Field(0.5, gt=0, description="First delay after a failure.")
    max_s: float = Field(30.0, gt=0, description="Cap on the delay.")
    multiplier: float = Field(2.0, ge=1.0, description="Growth factor per consecutive failure.")
    jitter: float = Field(0.2, ge=0, le=1, description="Random +/- fraction applied to each delay.")


class CameraConfig(StrictModel):
    """One camera: where its video comes from and how often to run detection on it."""

    id: str = Field(pattern=CAMERA_ID_PATTERN, description="Unique id: letters, digits, '_', '.', '-'.")
    name: str | None = Field(None, max_length=200, description="Display name (defaults to the id).")
    url: str = Field(
        min_length=1,
        max_length=2048,
        description="rtsp://, rtsps://, http(s)://, file:// or a local path, or /dev/videoN.",
    )
    enabled: bool = Field(True, description="Disabled cameras are registered but not started.")
    detect_fps: float = Field(5.0, gt=0, le=120, description="Frames per second handed to inference.")
    priority: Priority = Field(
        "normal",
        description="Under overload the server lowers the effective detect_fps of low cameras first, then normal "
        "ones; high cameras keep theirs (see capacity).",
    )
    max_frame_age_ms: float | None = Field(
        None,
        gt=0,
        le=3_600_000,
        description="Target for the p95 age of this camera's frames when inference takes them; over it the server "
        "degrades lower-priority cameras. Half of inference.stale_after_s when unset.",
    )
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport.")
    loop: bool = Field(False, description="Files: start again at the end instead of going offline.")
    realtime: bool = Field(True, description="Files: play at native frame rate, like a live camera.")
    keyframes_only: bool = Field(False, description="Decode only keyframes (for very low detect_fps).")
    max_lag_s: float | None = Field(
        1.0,
        gt=0,
        le=3600,
        description="A decoder this far behind real time (the CPU too busy to keep up) skips to the next keyframe, "
        "counting the frames it drops; null lets it fall behind without bound. Applies to live sources and "
        "files played in real time.",
    )
    decode_threads: int = Field(
        1,
        ge=0,
        le=64,
        description="CPU decoding threads; 0 lets FFmpeg choose (frame threading: lower latency for one large "
        "stream, but about 40% more CPU per frame). 1 suits many cameras per host: each has its own process.",
    )
    hwaccel: Literal["auto", "none", "cuda", "vaapi", "qsv"] = Field(
        "auto",
        description="Hardware decoding: auto uses the first of cuda, vaapi, qsv that this FFmpeg build and machine "
        "support; CPU decoding when none works (the reason is logged, the choice shown as the camera's decoder).",
    )
    open_timeout_s: float = Field(10.0, gt=0, le=300, description="Give up opening the source after this.")
    read_timeout_s: float = Field(5.0, gt=0, le=300, description="Give up a blocked read after this.")
    stall_timeout_s: float = Field(
        10.0, gt=0, le=3600, description="Reopen a connection that delivers no frame for this long."
    )
    max_width: int = Field(3840, ge=16, le=8192, description="Frames wider than this are downscaled.")
    max_height: int = Field(2160, ge=16, le=8192, description="Frames taller than this are downscaled.")
    reconnect: ReconnectConfig = Field(default_factory=ReconnectConfig)
    record: CameraRecordConfig = Field(default_factory=CameraRecordConfig)
    motion: MotionConfig = Field(default_factory=MotionConfig)
    rules: RulesSetting = Field(
        None,
        description="Zones and tripwires inline, or a YAML file (relative to this config file's directory).",
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        # FFmpeg reads the URL as a C string (a NUL cuts it short) and paths with NUL cannot even be resolved.
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
            raise ValueError("must not contain control characters")
        if url.startswith("/dev/video"):
            return url
        scheme = urlsplit(url).scheme.lower()
        if "://" in url and scheme not in SUPPORTED_SCHEMES:
            raise ValueError(f"unsupported URL scheme {scheme!r}; use one of {', '.join(SUPPORTED_SCHEMES)}")
        return url

    @property
    def display_name(self) -> str:
        return self.name or self.id

    def frame_age_target_ms(self, stale_after_s: float) -> float:
        """The p95 frame-age target: ``max_frame_age_ms``, or half of the staleness budget.

        >>> CameraConfig(id="c", url="x.mp4").frame_age_target_ms(2.0)
        1000.0
        """
        return self.max_frame_age_ms if self.max_frame_age_ms is not None else stale_after_s * 500.0


class ModelConfig(StrictModel):
    """The detector: weights, label aliases and filters."""

    path: str = Field("yolov8n.pt", min_length=1, description="Weights file (or an ultralytics model name).")
    confidence: float = Field(0.25, ge=0, le=1, description="Minimum detection confidence.")
    iou: float = Field(0.45, gt=0, le=1, description="NMS IoU threshold.")
    labels: dict[str, str] = Field(
        default_factory=dict, description="Aliases from model class names to labels, e.g. {Fall: person}."
    )
    classes: list[str] | None = Field(None, description="Keep only these labels (after aliasing); all when unset.")


class InferenceConfig(StrictModel):
    """The shared inference loop."""

    backend: Literal["ultralytics", "onnxruntime", "openvino", "tensorrt"] = Field(
        "ultralytics",
        description="Detector backend; onnxruntime, openvino and tensorrt (CUDA, the tensorrt package) run a cached "
        "export of the model, made on first use.",
    )
    device: str = Field(
        "auto",
        pattern=r"^(auto|cpu|cuda(:\d+)?|intel-gpu(:\d+)?)$",
        description="auto picks CUDA when present (CPU for openvino); intel-gpu[:N] is for the openvino backend.",
    )
    precision: Literal["auto", "fp32", "fp16", "bf16", "int8"] = Field(
        "auto",
        description="auto: fp16 for ultralytics on CUDA, tensorrt, and openvino on GPUs, bf16 for openvino on "
        "CPUs that support it, else fp32. onnxruntime runs fp32 only. int8 (openvino only) is calibrated on "
        "`calibration`.",
    )
    calibration: str | None = Field(
        None,
        min_length=1,
        description="For precision int8: a video file or a folder of images from your cameras (typical scenes, "
        "day and night) that INT8 is calibrated on; relative to this config file's directory.",
    )
    calibration_frames: int = Field(
        200, ge=8, le=10000, description="Frames of `calibration`, spread evenly, that INT8 is calibrated on."
    )
    imgsz: int = Field(640, ge=32, le=4096, multiple_of=32, description="Long side of the network input.")
    max_batch: int = Field(8, ge=1, le=256, description="Most frames in one forward pass.")
    max_wait_ms: float = Field(5.0, ge=0, le=1000, description="How long a batch waits to fill up.")
    stale_after_s: float = Field(2.0, gt=0, description="Frames older than this are discarded, not inferred.")
    background_max_batch: int = Field(
        2,
        ge=1,
        le=256,
        description="Most uploaded-image/job frames in one pass; they run only when no camera frame waits.",
    )
    background_max_wait_s: float = Field(
        1.0,
        gt=0,
        description="An uploaded-image/job frame that waited this long runs even while cameras keep inference busy.",
    )
    threads: int = Field(0, ge=0, le=256, description="CPU threads for the model; 0 means all cores.")
    decoder_niceness: int = Field(
        19,
        ge=0,
        le=19,
        description="Scheduling niceness of decoder processes. High values let inference take the cores first and "
        "decoders run in the time it leaves; 0 shares the CPU equally.",
    )
    restart_backoff_s: float = Field(
        1.0, gt=0, le=60, description="First delay before restarting a dead inference process (doubles, capped)."
    )

    @model_validator(mode="after")
    def _check_int8(self) -> InferenceConfig:
        if self.precision == "int8" and self.backend != "openvino":
            raise ValueError(f"precision int8 needs backend openvino, not {self.backend}")
        if self.precision == "int8" and self.calibration is None:
            raise ValueError("precision int8 needs calibration: a video file or image folder to calibrate on")
        return self


class TrackerConfig(StrictModel):
    """Per-camera multi-object tracker; durations in seconds, converted with the processed fps."""

    type: Literal["bytetrack", "deepsort"] = Field("bytetrack", description="Tracker algorithm.")
    lost_track_s: float = Field(2.0, gt=0, le=600, description="Keep a lost track this long for re-identification.")
    high_thresh: float = Field(0.25, ge=0, le=1, description="ByteTrack first-association confidence.")
    low_thresh: float = Field(0.1, ge=0, le=1, description="ByteTrack second-association confidence.")
    new_track_thresh: float = Field(0.25, ge=0, le=1, description="Confidence needed to start a track.")
    match_thresh: float = Field(0.8, gt=0, le=1, description="ByteTrack association IoU-distance threshold.")
    deepsort_max_cosine_distance: float = Field(0.3, gt=0, le=2, description="DeepSORT appearance gate.")
    deepsort_n_init: int = Field(3, ge=1, le=100, description="DeepSORT hits before a track is confirmed.")

    @model_validator(mode="after")
    def _check_thresholds(self) -> TrackerConfig:
        if self.low_thresh > self.high_thresh:
            raise ValueError(f"low_thresh ({self.low_thresh}) must not exceed high_thresh ({self.high_thresh})")
        return self


class ServerConfig(StrictModel):
    """HTTP server."""

    host: str = Field("127.0.0.1", description="Bind address.")
    port: int = Field(8080, ge=0, le=65535, description="Bind port (0 picks a free one).")
    api_key: SecretStr | None = Field(
        None, description="Bearer token required when set (empty means unset); use ${ENV_VAR}."
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve on a non-loopback address without api_key (a warning is logged); without it such a "
        "server refuses to start.",
    )
    allowed_file_dirs: list[str] = Field(
        default_factory=list,
        description="Directories whose files cameras added or changed through the API may read (file:// URLs and "
        "paths); none by default. Cameras in this file may read any path.",
    )
    log_json: bool = Field(False, description="Structured JSON log lines.")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info")
    persist: bool = Field(
        True,
        description="Write camera and rule changes made through the API back into this config file "
        "(and a camera's rules file), so they survive a restart.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, le=2**30, description="Request bodies larger than this are refused with 413."
    )

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, key: Any) -> Any:
        # `api_key: ${STREAMSRV_API_KEY:-}` leaves it empty when the variable is unset: that is no key, not "".
        return None if key == "" else key


class EventsConfig(StrictModel):
    """Event delivery: Redis when a URL is set, an in-process bus otherwise; event snapshots."""

    redis_url: str | None = Field(None, description="redis://[:password@]host:port/db; use ${ENV_VAR} for secrets.")
    stream_maxlen: int = Field(100_000, ge=100, description="Approximate length cap of the Redis stream.")
    buffer_max_events: int = Field(
        10_000, ge=1, description="Events held in memory while Redis is down; older ones are dropped and counted."
    )
    history_size: int = Field(1000, ge=1, description="Events the in-process bus keeps for history.")
    snapshot_max_count: int = Field(1000, ge=0, description="Event snapshot JPEGs kept in memory at most.")
    snapshot_max_bytes: int = Field(64 * 2**20, ge=0, description="Total bytes of snapshots kept at most.")
    snapshot_retention_s: float = Field(3600.0, gt=0, description="Snapshots older than this are dropped.")


class JobsConfig(StrictModel):
    """On-demand analysis: single images (``POST /api/detect``) and clip jobs (``POST /api/jobs``).

    Both share the live cameras' inference loop at lower priority. Jobs are kept in Redis when
    ``events.redis_url`` is set, so queued work survives a restart.
    """

    max_concurrent: int = Field(1, ge=1, le=64, description="Jobs that run at once; the others wait in the queue.")
    max_queued: int = Field(
        16, ge=1, le=10_000, description="Jobs waiting to run at most; beyond it POST /api/jobs answers 429."
    )
    result_ttl_s: float = Field(
        3600.0, gt=0, description="A finished job and its result are removed this long after it finished."
    )
    result_store_bytes: int = Field(
        256 * 2**20,
        ge=4096,
        description="Total bytes of finished jobs' results kept; the oldest are removed first. "
        "A job whose result alone is larger fails.",
    )
    max_upload_bytes: int = Field(
        1024 * 2**20, ge=1024, description="Largest clip upload (the request body); larger ones get 413."
    )
    max_video_s: float = Field(
        3600.0,
        gt=0,
        description="Video time a job reads at most; it stops there (a stream URL never ends by itself).",
    )
    max_image_bytes: int = Field(
        20 * 2**20, ge=1024, le=2**30, description="Largest image for POST /api/detect; larger ones get 413."
    )
    max_image_pixels: int = Field(
        50_000_000, ge=1024, description="Most pixels (width x height) of an image for POST /api/detect; 413 beyond."
    )
    max_detect_inflight: int = Field(
        16, ge=1, le=1024, description="Images being detected at once; further POST /api/detect requests get 429."
    )
    spool_dir: str | None = Field(
        None,
        description="Where uploaded clips wait for their job; a per-process temporary directory when unset "
        "(set it, with events.redis_url, for queued uploads to survive a restart). One server per directory.",
    )
    allowed_file_dir: str | None = Field(
        None,
        description="Jobs may read file:// URLs and server paths only inside this directory; none when unset.",
    )
    allow_link_local_urls: bool = Field(
        False, description="Let job URLs reach link-local addresses (169.254.0.0/16, fe80::/10): cloud metadata."
    )


class AppConfig(StrictModel):
    """The whole configuration file."""

    model: ModelConfig = Field(default_factory=ModelConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    tracker: TrackerConfig = Field(default_factory=TrackerConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    cameras: list[CameraConfig] = Field(default_factory=list)
    events: EventsConfig = Field(default_factory=EventsConfig)
    preview: PreviewConfig = Field(default_factory=PreviewConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    outputs: OutputsConfig = Field(default_factory=OutputsConfig)
    record: RecordConfig = Field(default_factory=RecordConfig)
    capacity: CapacityConfig = Field(default_factory=CapacityConfig)
    cluster: ClusterConfig | None = Field(
        None,
        description="Run as one node of a cluster sharing cameras through Redis (docs/cluster.md); a single "
        "server when unset.",
    )
    base_dir: Annotated[Path | None, Field(exclude=True)] = None

    @model_validator(mode="after")
    def _unique_ids(self) -> AppConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"duplicate camera id {cam.id!r}")
            seen.add(cam.id)
            if problem := refresh_error(cam.motion, self.tracker.lost_track_s):
                raise ValueError(f"camera {cam.id!r}: {problem}")
        return self

    @model_validator(mode="after")
    def _one_redis(self) -> AppConfig:
        # Events are fenced by the camera leases in one Lua script: both must live in the same Redis.
        if self.cluster is not None:
            if self.events.redis_url is None:
                self.events.redis_url = self.cluster.redis_url
            elif self.events.redis_url != self.cluster.redis_url:
                raise ValueError(
                    "events.redis_url must be cluster.redis_url (or unset) in cluster mode: events are checked "
                    "against camera leases in the same Redis"
                )
        return self


def redact_url(url: str) -> str:
    """Hide credentials in a URL: ``rtsp://user:pw@host/x`` -> ``rtsp://user:***@host/x``.

    >>> redact_url("rtsp://admin:secret@10.0.0.5:554/stream")
    'rtsp://admin:***@10.0.0.5:554/stream'
    """
    return re.sub(r"(?<=://)([^:/@\s]+):([^@/\s]*)@", r"\1:***@", url)
