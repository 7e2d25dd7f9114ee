"""Request and response models of the REST API, and the one shape of a field error.

Requests reuse the config models (unknown fields are refused there), so a camera or zone is validated the same
way whether it comes from the YAML file or over HTTP. Responses never carry a camera password: ``url`` is
always redacted (``rtsp://user:***@host/...``).
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any, Literal

from fastapi.exceptions import RequestValidationError
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    create_model,
    model_serializer,
)

from streamsrv.config.models import CameraConfig, redact_url
from streamsrv.types import CameraState


class Message(BaseModel):
    """An error (or other) message, as FastAPI's ``HTTPException`` sends it."""

    detail: str


class CameraOut(CameraConfig):
    """A registered camera as the API shows it: its config with the URL redacted, and its live state."""

    name: str = Field(description="Display name (the id when none was set).")
    url: str = Field(description="The source URL with any password replaced by ***.")
    state: CameraState | Literal["disabled", "unassigned"] = Field(
        description="The decoder's state; disabled cameras do not run; unassigned: no cluster node has room "
        "(error says why)."
    )
    error: str | None = Field(None, description="Last source error (credentials redacted), or why it is unassigned.")
    node: str | None = Field(None, description="Cluster mode: the node running the camera (null when none does).")

    @classmethod
    def of(
        cls,
        cam: CameraConfig,
        state: CameraState | Literal["disabled", "unassigned"],
        error: str | None,
        node: str | None = None,
    ) -> CameraOut:
        data = cam.model_dump()
        data.update(name=cam.display_name, url=redact_url(cam.url), state=state, error=error, node=node)
        return cls.model_validate(data)

    @model_serializer(mode="wrap")
    def _node_only_in_cluster_mode(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A single server's cameras look as they always did: a client that PUTs back what it read still works.
        data: dict[str, Any] = handler(self)
        if data.get("node") is None:
            data.pop("node", None)
        return data


def _all_optional(model: type[BaseModel], name: str, exclude: set[str]) -> type[BaseModel]:
    # Derived rather than written out, so a field added to the config model is patchable at once, with the
    # same constraints and description.
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name in exclude:
            continue
        annotation: Any = info.annotation
        optional = copy.copy(info)
        optional.default = None
        optional.default_factory = None
        fields[field_name] = (annotation | None, optional)
    return create_model(name, __config__=ConfigDict(extra="forbid"), __doc__=model.__doc__, **fields)


if TYPE_CHECKING:
    CameraPatch = BaseModel
else:
    CameraPatch = _all_optional(CameraConfig, "CameraPatch", exclude={"id"})
    CameraPatch.__doc__ = (
        "Fields of a camera to change; omitted fields keep their value (a top-level field is replaced whole). "
        "An omitted url, or the redacted one the API returned, keeps the real URL."
    )


class ProbeRequest(BaseModel):
    """A source to try before registering it."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=2048, description="As a camera's url.")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport.")
    timeout_s: float = Field(5.0, gt=0, le=30, description="Give up after this long.")


ProbeFailure = Literal["timeout", "refused", "unauthorized", "not_found", "not_video", "error"]


class ProbeResult(BaseModel):
    """What a source turned out to be, or why it could not be opened."""

    ok: bool
    url: str = Field(description="The probed URL, redacted.")
    codec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = Field(None, description="Frame rate the source declares (0 when it declares none).")
    reason: ProbeFailure | None = Field(None, description="Why it failed, as a stable code.")
    error: str | None = Field(None, description="Why it failed, for people (credentials redacted).")
    elapsed_ms: float


class Counts(BaseModel):
    """A camera's live counts from its rules."""

    occupancy: dict[str, dict[str, int]] = Field(description="Zone -> label -> objects inside now.")
    lines: dict[str, dict[str, dict[str, int]]] = Field(
        description="Line -> direction -> label -> crossings since the line was created."
    )


def request_error(err: ValidationError, *prefix: str | int) -> RequestValidationError:
    """A model's ValidationError as FastAPI's 422, its locations under ``prefix`` (e.g. ``"body"``)."""
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in err.errors(include_url=False)])
