"""The outputs' delivery status, and each webhook's dead letters (events it gave up on), which can be re-driven."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from streamsrv.api.deps import Authenticated
from streamsrv.outputs.manager import OutputManager
from streamsrv.outputs.outbox import OutboxEntry
from streamsrv.outputs.webhook import WebhookOutput

router = APIRouter(prefix="/api/outputs", tags=["outputs"], dependencies=[Authenticated])


def get_outputs(request: Request) -> OutputManager:
    manager: OutputManager = request.app.state.outputs
    return manager


OutputsDep = Annotated[OutputManager, Depends(get_outputs)]


class OutputOut(BaseModel):
    name: str = Field(description="webhook-<index>-<hash of its URL>, or mqtt.")
    kind: str = Field(description="webhook or mqtt.")
    target: str = Field(description="The URL, with any password masked.")
    delivered: int = Field(description="Events (MQTT: messages) the receiver acknowledged since the server started.")
    failed: int = Field(description="Failed delivery attempts since the server started (each retry counts).")
    pending: int = Field(description="Waiting for delivery now.")
    dead: int = Field(description="Given up after max_retries; see .../dead.")
    dropped: int = Field(description="MQTT messages lost to the queue bound while the broker was away.")
    connected: bool | None = Field(description="MQTT: connected to the broker now; null for webhooks.")
    last_error: str | None


class DeadLetter(BaseModel):
    key: str = Field(description="Its position in the dead letters.")
    camera_id: str
    event_id: str
    error: str | None = Field(description="The last attempt's error.")
    event: dict[str, Any] = Field(description="The event, as it was POSTed.")

    @classmethod
    def of(cls, entry: OutboxEntry) -> DeadLetter:
        return cls(
            key=entry.key,
            camera_id=entry.camera_id,
            event_id=entry.event_id,
            error=entry.error,
            event=json.loads(entry.body),
        )


class Redrive(BaseModel):
    event_ids: list[str] | None = Field(None, description="The dead letters to send again; all when unset.")


class Redriven(BaseModel):
    redriven: int


def _webhook(manager: OutputManager, index: int) -> WebhookOutput:
    if not 0 <= index < len(manager.webhooks):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"webhook {index} not found")
    return manager.webhooks[index]


@router.get("", response_model=list[OutputOut], summary="Every output's delivery counts and last error")
def list_outputs(manager: OutputsDep) -> list[OutputOut]:
    return [OutputOut.model_validate(s, from_attributes=True) for s in manager.status()]


@router.get("/webhooks/{index}/dead", response_model=list[DeadLetter], summary="A webhook's dead letters")
def dead_letters(manager: OutputsDep, index: int) -> list[DeadLetter]:
    return [DeadLetter.of(e) for e in _webhook(manager, index).dead_letters()]


@router.post(
    "/webhooks/{index}/redrive",
    response_model=Redriven,
    summary="Queue a webhook's dead letters again (all, or those named), after its pending events",
)
def redrive(manager: OutputsDep, index: int, body: Annotated[Redrive | None, Body()] = None) -> Redriven:
    ids = set(body.event_ids) if body is not None and body.event_ids is not None else None
    return Redriven(redriven=_webhook(manager, index).redrive(ids))
