"""A camera's rules: the whole set, its zones and tripwire lines one by one, and their live counts.

Edits apply to the running rule engine at once: zones and lines that keep their name keep their state (who
is inside, counts so far). They are saved like camera changes (``streamsrv.runtime.registry``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, TypeVar

from fastapi import APIRouter, status

from streamsrv.api.deps import Authenticated, ServerDep
from streamsrv.api.routers.cameras import CHANGE_ERRORS, NOT_FOUND, RegistryDep, api_errors
from streamsrv.api.schemas import Counts, Message
from streamsrv.config.rules import LineConfig, RulesConfig, ZoneConfig
from streamsrv.errors import ConflictError, NotFoundError
from streamsrv.runtime.registry import field_error

router = APIRouter(prefix="/api/cameras/{camera_id}", tags=["rules"], dependencies=[Authenticated])

Kind = Literal["zones", "lines"]
Rule = TypeVar("Rule", ZoneConfig, LineConfig)
_SINGULAR = {"zones": "zone", "lines": "line"}
RULE_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Message, "description": "No such camera, zone or line."}
}
RULE_CHANGE = {**RULE_NOT_FOUND, **CHANGE_ERRORS}
RULE_CREATE = {**NOT_FOUND, **CHANGE_ERRORS, 409: {"model": Message, "description": "The name is taken."}}


def _items(rules: RulesConfig, kind: Kind) -> Sequence[ZoneConfig | LineConfig]:
    if kind == "zones":
        return rules.zones
    return rules.lines


def _with_items(rules: RulesConfig, kind: Kind, items: Sequence[ZoneConfig | LineConfig]) -> RulesConfig:
    # Validated whole again: rules-level checks (unique names) see the new list.
    data = rules.model_dump()
    data[kind] = [item.model_dump() for item in items]
    return RulesConfig.model_validate(data)


def _index(rules: RulesConfig, kind: Kind, name: str) -> int:
    for i, item in enumerate(_items(rules, kind)):
        if item.name == name:
            return i
    raise NotFoundError(f"{_SINGULAR[kind]} {name!r} not found")


def _create(registry: RegistryDep, camera_id: str, kind: Kind, item: Rule) -> Rule:
    def edit(rules: RulesConfig) -> RulesConfig:
        if any(x.name == item.name for x in _items(rules, kind)):
            raise ConflictError(f"name: {_SINGULAR[kind]} {item.name!r} already exists")
        return _with_items(rules, kind, [*_items(rules, kind), item])

    with api_errors():
        registry.edit_rules(camera_id, edit)
    return item


def _replace(registry: RegistryDep, camera_id: str, kind: Kind, name: str, item: Rule) -> Rule:
    def edit(rules: RulesConfig) -> RulesConfig:
        i = _index(rules, kind, name)
        if item.name != name:
            raise field_error("name", "must match the name in the path (delete and re-create to rename)", item.name)
        items = list(_items(rules, kind))
        items[i] = item
        return _with_items(rules, kind, items)

    with api_errors():
        registry.edit_rules(camera_id, edit)
    return item


def _delete(registry: RegistryDep, camera_id: str, kind: Kind, name: str) -> None:
    def edit(rules: RulesConfig) -> RulesConfig:
        i = _index(rules, kind, name)
        items = list(_items(rules, kind))
        del items[i]
        return _with_items(rules, kind, items)

    with api_errors():
        registry.edit_rules(camera_id, edit)


def _get(registry: RegistryDep, camera_id: str, kind: Kind, name: str) -> ZoneConfig | LineConfig:
    with api_errors():
        rules = registry.rules(camera_id)
        return _items(rules, kind)[_index(rules, kind, name)]


# -- the whole rule set ------------------------------------------------------------------------
@router.get("/rules", summary="A camera's zones, lines and rule settings", responses=NOT_FOUND)
def get_rules(camera_id: str, registry: RegistryDep) -> RulesConfig:
    with api_errors():
        return registry.rules(camera_id)


@router.put("/rules", summary="Replace a camera's rules", responses={**NOT_FOUND, **CHANGE_ERRORS})
def put_rules(camera_id: str, body: RulesConfig, registry: RegistryDep) -> RulesConfig:
    with api_errors():
        return registry.edit_rules(camera_id, lambda _: body)


@router.get("/counts", summary="Objects in each zone now, and crossings of each line", responses=NOT_FOUND)
def get_counts(camera_id: str, server: ServerDep) -> Counts:
    with api_errors():
        return Counts(occupancy=server.occupancy(camera_id), lines=server.line_counts(camera_id))


# -- zones -------------------------------------------------------------------------------------
@router.get("/zones", summary="A camera's zones", responses=NOT_FOUND)
def list_zones(camera_id: str, registry: RegistryDep) -> list[ZoneConfig]:
    with api_errors():
        return registry.rules(camera_id).zones


@router.post("/zones", status_code=status.HTTP_201_CREATED, summary="Add a zone", responses=RULE_CREATE)
def add_zone(camera_id: str, body: ZoneConfig, registry: RegistryDep) -> ZoneConfig:
    return _create(registry, camera_id, "zones", body)


@router.get("/zones/{name}", summary="One zone", responses=RULE_NOT_FOUND)
def get_zone(camera_id: str, name: str, registry: RegistryDep) -> ZoneConfig:
    zone = _get(registry, camera_id, "zones", name)
    assert isinstance(zone, ZoneConfig)
    return zone


@router.put("/zones/{name}", summary="Replace a zone (keeps its state)", responses=RULE_CHANGE)
def replace_zone(camera_id: str, name: str, body: ZoneConfig, registry: RegistryDep) -> ZoneConfig:
    return _replace(registry, camera_id, "zones", name, body)


@router.delete("/zones/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a zone", responses=RULE_CHANGE)
def delete_zone(camera_id: str, name: str, registry: RegistryDep) -> None:
    _delete(registry, camera_id, "zones", name)


# -- lines -------------------------------------------------------------------------------------
@router.get("/lines", summary="A camera's tripwire lines", responses=NOT_FOUND)
def list_lines(camera_id: str, registry: RegistryDep) -> list[LineConfig]:
    with api_errors():
        return registry.rules(camera_id).lines


@router.post("/lines", status_code=status.HTTP_201_CREATED, summary="Add a tripwire line", responses=RULE_CREATE)
def add_line(camera_id: str, body: LineConfig, registry: RegistryDep) -> LineConfig:
    return _create(registry, camera_id, "lines", body)


@router.get("/lines/{name}", summary="One tripwire line", responses=RULE_NOT_FOUND)
def get_line(camera_id: str, name: str, registry: RegistryDep) -> LineConfig:
    line = _get(registry, camera_id, "lines", name)
    assert isinstance(line, LineConfig)
    return line


@router.put("/lines/{name}", summary="Replace a tripwire line (keeps its counts)", responses=RULE_CHANGE)
def replace_line(camera_id: str, name: str, body: LineConfig, registry: RegistryDep) -> LineConfig:
    return _replace(registry, camera_id, "lines", name, body)


@router.delete(
    "/lines/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a tripwire line", responses=RULE_CHANGE
)
def delete_line(camera_id: str, name: str, registry: RegistryDep) -> None:
    _delete(registry, camera_id, "lines", name)
