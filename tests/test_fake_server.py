"""The API tests' ``FakeServer`` stays what the app needs: every ``ServerApi`` member, with ``StreamServer``'s
signatures, so an API change that the fake does not follow fails here (mypy checks ``StreamServer`` itself)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Protocol

import pytest

from streamsrv.errors import LaneClosed, NotFoundError
from streamsrv.runtime.protocol import ServerApi
from streamsrv.runtime.server import StreamServer
from streamsrv.types import CameraState
from tests.support.fake_server import FakeServer, app_config

# What tests use to make things happen; nothing in streamsrv may call these.
TEST_CONTROLS = {"feed", "set_frame", "set_state", "set_usage", "health"}


def protocol_members(protocol: type) -> set[str]:
    return {
        name
        for cls in protocol.__mro__
        if cls not in (Protocol, object) and issubclass(cls, Protocol)
        for name in vars(cls)
        if not name.startswith("_")
    }


def parameters(function: object) -> list[tuple[str, object, object, object]]:
    signature = inspect.signature(function)  # type: ignore[arg-type]
    return [(p.name, p.kind, p.default, p.annotation) for p in signature.parameters.values()]


MEMBERS = sorted(protocol_members(ServerApi))


def test_the_protocol_is_what_the_api_reads() -> None:
    assert {"open_lane", "inference_health", "cfg", "bus", "snapshots", "add_camera", "latest"} <= set(MEMBERS)


@pytest.mark.parametrize("name", MEMBERS)
def test_the_fake_has_every_member_with_the_same_signature(name: str) -> None:
    fake = FakeServer(app_config())
    assert hasattr(fake, name), f"FakeServer lacks {name}"
    declared = inspect.getattr_static(ServerApi, name)
    if isinstance(declared, property):
        assert not callable(getattr(fake, name)), f"{name} is a value, not a method"
        return
    for implementation in (FakeServer, StreamServer):
        assert parameters(getattr(implementation, name)) == parameters(declared), f"{implementation.__name__}.{name}"
        assert (
            inspect.signature(getattr(implementation, name)).return_annotation
            == inspect.signature(declared).return_annotation
        ), f"{implementation.__name__}.{name} returns something else"


def test_the_fake_adds_only_test_controls() -> None:
    fake = FakeServer(app_config())
    public = {name for name in dir(fake) if not name.startswith("_")}
    assert public - set(MEMBERS) == TEST_CONTROLS


def test_the_fake_behaves_like_the_server_where_the_api_looks(tmp_path: Path) -> None:
    fake = FakeServer(
        app_config(cameras=[{"id": "door", "url": "rtsp://cam/1"}, {"id": "off", "url": "x.mp4", "enabled": False}])
    )

    assert fake.running_camera_ids() == ["door"]
    with pytest.raises(NotFoundError):
        fake.camera_stats("off")  # registered, not running
    with pytest.raises(NotFoundError):
        fake.rules("nobody")
    with pytest.raises(ValueError, match="already exists"):
        fake.add_camera(fake.camera_config("door"))
    with pytest.raises(LaneClosed):
        fake.open_lane(print)
    fake.start()
    fake.set_state("door", CameraState.ERROR, "connection refused")
    assert [e.type for e in (r.event for r in fake.bus.history())] == ["camera.online", "camera.offline"]
    assert fake.events_by_type[("door", "camera.offline")] == 1
    fake.remove_camera("door")
    assert [c.id for c in fake.cfg.cameras] == ["off"]
    fake.stop()
