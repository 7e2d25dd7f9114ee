"""The capacity model's arithmetic, the overload governor's steps, and admission through the real app on the fake
server (whose measured usage the tests set)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from streamsrv.config.capacity import CapacityConfig
from streamsrv.config.models import CameraConfig
from streamsrv.runtime.capacity import (
    CameraUsage,
    Usage,
    admission_shortfall,
    camera_costs,
    capacity_report,
    fps_raise_cost,
    new_camera_cost,
    resources,
)
from streamsrv.runtime.overload import CameraLoad, OverloadGovernor
from streamsrv.runtime.usage import GpuProbe, ProcessCpu
from tests.support.fake_server import FakeServer, app_config, serve_in_process


def cam_usage(camera_id: str, fps: float = 5.0, ms: float = 40.0, decoder: float = 0.05, **kw: object) -> CameraUsage:
    return CameraUsage.model_validate(
        dict(
            camera_id=camera_id,
            detect_fps=fps,
            effective_detect_fps=fps,
            processed_fps=fps,
            inference_ms_per_frame=ms,
            decoder_cores=decoder,
            **kw,
        )
    )


def two_cameras(**kw: object) -> Usage:
    """a: 5 fps x 40 ms = 0.2 of the loop; b: 10 fps x 20 ms = 0.2; inference process 0.8 cores, main 0.1."""
    cams = [cam_usage("a"), cam_usage("b", fps=10, ms=20, decoder=0.15)]
    return Usage.model_validate(dict(cameras=cams, inference_cores=0.8, main_cores=0.1, cpu_cores=4, **kw))


def test_resources_add_up_what_the_processes_use() -> None:
    room = resources(CapacityConfig(), two_cameras())
    assert set(room) == {"inference", "cpu"}  # no GPU measured: no GPU resources
    assert room["inference"].used == pytest.approx(0.4)
    assert room["inference"].headroom == pytest.approx(0.5)  # budget 0.9
    assert room["cpu"].used == pytest.approx(0.8 + 0.1 + 0.05 + 0.15)
    assert room["cpu"].budget == 4  # cpu_cores unset: the cores the server may run on
    assert resources(CapacityConfig(cpu_cores=1.5), two_cameras())["cpu"].headroom == pytest.approx(0.4)


def test_a_camera_costs_its_decoder_preview_and_its_share_of_the_inference_process() -> None:
    usage = two_cameras()
    usage.cameras[0].preview_cores = 0.04  # a's preview is watched; the main process's 0.1 includes it
    costs = camera_costs(usage)
    # a: decoder 0.05 + preview 0.04 + half of the main process's other 0.06 + half the inference process's 0.8
    assert costs["a"]["cpu"] == pytest.approx(0.05 + 0.04 + 0.03 + 0.4)
    assert costs["b"]["cpu"] == pytest.approx(0.15 + 0.03 + 0.4)
    assert costs["a"]["inference"] == pytest.approx(0.2)


def test_how_many_more_fit_and_which_resource_binds() -> None:
    report = capacity_report(CapacityConfig(), two_cameras(), like="a")
    assert report.measured
    assert report.like is not None
    # inference: 0.5 left / 0.2 each = 2; cpu: 2.9 left / 0.5 each (0.05 + 0.05 + 0.4) = 5
    assert report.like.fits_by_resource == {"inference": 2, "cpu": 5}
    assert (report.like.fits, report.like.binding) == (2, "inference")
    tight_cpu = capacity_report(CapacityConfig(cpu_cores=1.6), two_cameras(), like="a")
    assert tight_cpu.like is not None
    assert (tight_cpu.like.fits, tight_cpu.like.binding) == (1, "cpu")  # 0.5 cores left / 0.5 each
    with pytest.raises(KeyError):
        capacity_report(CapacityConfig(), two_cameras(), like="nobody")


def test_with_a_gpu_its_time_is_shared_by_the_loop_and_its_memory_binds_only_when_full() -> None:
    usage = two_cameras(gpu_busy=0.5, gpu_memory_used_bytes=4e9, gpu_memory_total_bytes=16e9)
    room = resources(CapacityConfig(), usage)
    assert room["gpu"].headroom == pytest.approx(0.4)
    assert room["gpu_memory"].headroom == pytest.approx(0.9 * 16e9 - 4e9)
    report = capacity_report(CapacityConfig(), usage, like="a")
    assert report.like is not None
    assert report.like.cost["gpu"] == pytest.approx(0.25)  # half the loop's work, of 0.5 busy
    assert report.like.fits_by_resource["gpu"] == 1
    assert report.like.fits_by_resource["gpu_memory"] is None  # costs no measurable memory: not a limit
    full = two_cameras(gpu_busy=0.1, gpu_memory_used_bytes=15e9, gpu_memory_total_bytes=16e9)
    full_report = capacity_report(CapacityConfig(), full, like="a")
    assert full_report.like is not None
    assert (full_report.like.fits, full_report.like.binding) == (0, "gpu_memory")


def test_a_new_camera_is_costed_at_its_full_detect_fps_from_the_mean_frame() -> None:
    usage = two_cameras()
    # the loop spends 0.4 on 15 frames/s: 26.7 ms a frame on average; 4 fps of it is 0.107
    cost = new_camera_cost(usage, detect_fps=4)
    assert cost["inference"] == pytest.approx(0.4 / 15 * 4)
    # cpu: 4 frames' share of the inference process (0.8 cores for 0.4 of the loop) + mean decoder + main share
    assert cost["cpu"] == pytest.approx(0.8 / 0.4 * 0.4 / 15 * 4 + 0.1 + 0.05)
    # a raise costs the camera's own frames: b at 20 ms, 10 -> 16 fps
    assert fps_raise_cost(usage, "b", 10, 16)["inference"] == pytest.approx(0.12)
    assert new_camera_cost(Usage(cpu_cores=2), 5) == {}  # nothing measured yet: nothing to go by


def test_admission_names_the_binding_resource_and_by_how_much() -> None:
    cfg = CapacityConfig(max_inference_busy=0.5)
    usage = two_cameras()
    small = CameraConfig(id="c", url="x.mp4", detect_fps=2)
    assert admission_shortfall(cfg, usage, small) is None  # 0.053 of the 0.1 left
    big = CameraConfig(id="c", url="x.mp4", detect_fps=10)
    short = admission_shortfall(cfg, usage, big)
    assert short is not None
    assert short.resource == "inference"
    assert short.needed == pytest.approx(0.4 / 15 * 10, abs=1e-6)
    assert short.short_by == pytest.approx(0.4 / 15 * 10 - 0.1, abs=1e-6)
    assert "inference" in short.message and "force=true" in short.message
    # a raise is costed by the extra frames only (b's own 20 ms each); a lowering always passes
    b = CameraConfig(id="b", url="x.mp4", detect_fps=10)
    assert admission_shortfall(cfg, usage, b.model_copy(update={"detect_fps": 14}), b) is None  # 0.08 of 0.1
    assert admission_shortfall(cfg, usage, b.model_copy(update={"detect_fps": 16}), b) is not None  # 0.12
    assert admission_shortfall(cfg, usage, b.model_copy(update={"detect_fps": 2}), b) is None
    assert admission_shortfall(CapacityConfig(admission=False), usage, big) is None
    assert admission_shortfall(cfg, usage, big.model_copy(update={"enabled": False})) is None
    assert admission_shortfall(cfg, Usage(cpu_cores=2), big) is None  # unmeasured: admitted


def test_process_cpu_keeps_counting_across_incarnations_of_a_role() -> None:
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    cpu = ProcessCpu()
    first = subprocess.Popen([sys.executable, "-c", burn + "import sys\nsys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert cpu.seconds(None) == 0.0
        while cpu.seconds(first.pid) < 0.3:  # it burns 0.3 s, then waits
            pass
        used = cpu.seconds(first.pid)
    finally:
        first.communicate(b"")
    subprocess.run([sys.executable, "-c", burn], check=True)  # a restart: a new process plays the role
    assert cpu.seconds(None) == pytest.approx(used)  # between incarnations: what the first used stays
    assert cpu.seconds(first.pid) >= used  # an exited process: nothing lost


def test_no_gpu_reading_for_a_cpu_device() -> None:
    probe = GpuProbe()
    try:
        assert probe.read("cpu") is None
    finally:
        probe.close()


# -- the overload governor ---------------------------------------------------------------------------------------


def load(camera_id: str, priority: str, fps: float, ages: tuple[float, ...], lost: int = 0, n: int = 0) -> CameraLoad:
    return CameraLoad(camera_id, priority, fps, 200.0, processed=n, lost=lost, ages_ms=ages)  # type: ignore[arg-type]


def run(gov: OverloadGovernor, t0: float, seconds: int, loads: list[CameraLoad]) -> dict[str, float]:
    fps: dict[str, float] = {}
    for t in range(seconds):
        fps = gov.update(t0 + t, loads)
    return fps


def test_overload_lowers_low_cameras_first_then_normal_never_high() -> None:
    gov = OverloadGovernor(CapacityConfig(degrade_after_s=2, restore_after_s=4, min_detect_fps=0.5))
    over = [load("lo", "low", 4, (900.0,)), load("no", "normal", 8, (900.0,)), load("hi", "high", 8, (900.0,))]
    seen = [run(gov, 0, 1, over)]
    for step in range(6):
        seen.append(run(gov, 1 + 2 * step, 2, over))
    lo = [s["lo"] for s in seen]
    no = [s["no"] for s in seen]
    assert lo == [4, 2, 1, 0.5, 0.5, 0.5, 0.5]  # halved each step down to the floor
    assert no == [8, 8, 8, 8, 4, 2, 1]  # only once every low camera is at its floor
    assert all(s["hi"] == 8 for s in seen)
    state = gov.state()
    assert state.overloaded and state.degraded == ["lo", "no"] and state.steps_down == 6


def test_frames_lost_before_inference_count_as_too_old() -> None:
    gov = OverloadGovernor(CapacityConfig(degrade_after_s=1, restore_after_s=2, max_drop_share=0.05))
    fps = {}
    for t in range(3):  # young frames, but 10 of every 100 handed frames overwritten
        fps = gov.update(t, [load("lo", "low", 4, (10.0,), lost=10 * t, n=90 * t)])
    assert fps["lo"] < 4 and gov.state().overloaded


def test_load_falling_restores_step_by_step_in_reverse_order_without_flapping() -> None:
    cfg = CapacityConfig(degrade_after_s=1, restore_after_s=3, restore_below=0.5)
    gov = OverloadGovernor(cfg)
    over = [load("lo", "low", 4, (900.0,)), load("no", "normal", 4, (900.0,))]
    fps = run(gov, 0, 5, over)  # lo 4 -> 2 -> 1 -> 0.5, then no 4 -> 2
    assert fps == {"lo": 0.5, "no": 2}
    calm = [load("lo", "low", 4, (20.0,)), load("no", "normal", 4, (20.0,))]
    history = [gov.update(5 + t, calm) for t in range(20)]
    firsts = [h for i, h in enumerate(history) if i == 0 or h != history[i - 1]]
    # one step per hold: normal comes back first, then low, a step at a time
    assert firsts == [
        {"lo": 0.5, "no": 2},
        {"lo": 0.5, "no": 4},
        {"lo": 1, "no": 4},
        {"lo": 2, "no": 4},
        {"lo": 4, "no": 4},
    ]
    # in between, load in the dead band (over restore_below, under the target) changes nothing
    middling = [load("lo", "low", 4, (150.0,)), load("no", "normal", 4, (150.0,))]
    run(gov, 30, 1, over)
    steady = [gov.update(31 + t, middling) for t in range(30)]
    assert all(s == steady[0] for s in steady)


def test_a_restore_that_overload_undoes_doubles_the_hold() -> None:
    cfg = CapacityConfig(degrade_after_s=1, restore_after_s=2)
    gov = OverloadGovernor(cfg)
    over, calm = [load("lo", "low", 4, (900.0,))], [load("lo", "low", 4, (10.0,))]
    run(gov, 0, 2, over)  # one step down at t=1
    t = 2
    while gov.update(t, calm)["lo"] < 4:  # restored after the hold
        t += 1
    gov.update(t + 1, over)  # overloaded again at once: the restore was too soon
    assert gov.state().restore_after_s == 4


def test_degrade_off_keeps_every_camera_at_its_detect_fps_but_reports_overload() -> None:
    gov = OverloadGovernor(CapacityConfig(degrade=False, degrade_after_s=1, restore_after_s=1))
    fps = run(gov, 0, 5, [load("lo", "low", 4, (900.0,))])
    assert fps == {"lo": 4} and gov.state().overloaded and not gov.state().enabled


# -- through the app ---------------------------------------------------------------------------------------------


@pytest.fixture
def app() -> Iterator[tuple[TestClient, FakeServer]]:
    cfg = app_config(
        cameras=[{"id": "a", "url": "rtsp://cam/a"}, {"id": "b", "url": "rtsp://cam/b", "detect_fps": 10}],
        capacity={"max_inference_busy": 0.5},
    )
    with serve_in_process(cfg) as (client, server):
        server.set_usage(two_cameras())
        yield client, server


def test_capacity_endpoint_reports_headroom_and_the_camera_asked_about(app: tuple[TestClient, FakeServer]) -> None:
    client, _ = app
    body = client.get("/api/capacity", params={"like": "b"}).json()
    assert {r["resource"]: round(r["headroom"], 3) for r in body["resources"]} == {"inference": 0.1, "cpu": 2.9}
    assert body["like"]["camera_id"] == "b" and body["like"]["binding"] == "inference" and body["like"]["fits"] == 0
    assert {c["camera_id"] for c in body["cameras"]} == {"a", "b"}
    assert body["degrade"]["degraded"] == []
    assert client.get("/api/capacity", params={"like": "nobody"}).status_code == 404


def test_a_camera_that_does_not_fit_is_refused_unless_forced(app: tuple[TestClient, FakeServer]) -> None:
    client, server = app
    new = {"id": "c", "url": "rtsp://cam/c", "detect_fps": 10}
    refused = client.post("/api/cameras", json=new)
    assert refused.status_code == 409
    body = refused.json()
    assert body["resource"] == "inference" and body["short_by"] == pytest.approx(0.4 / 15 * 10 - 0.1, abs=1e-5)
    assert "inference" in body["detail"]
    assert "c" not in server.running_camera_ids()
    assert client.post("/api/cameras", json={**new, "detect_fps": 2}).status_code == 201  # a small one fits
    assert client.post("/api/cameras", params={"force": "true"}, json={**new, "id": "d"}).status_code == 201
    assert "d" in server.running_camera_ids()


def test_a_detect_fps_raise_that_does_not_fit_is_refused(app: tuple[TestClient, FakeServer]) -> None:
    client, server = app
    raised = client.patch("/api/cameras/b", json={"detect_fps": 20})
    assert raised.status_code == 409 and raised.json()["resource"] == "inference"
    assert server.camera_config("b").detect_fps == 10
    assert client.patch("/api/cameras/b", json={"detect_fps": 5}).status_code == 200
    whole = {"id": "a", "url": "rtsp://cam/a", "detect_fps": 30}
    assert client.put("/api/cameras/a", json=whole).status_code == 409
    assert client.put("/api/cameras/a?force=true", json=whole).is_success
    # priority and the frame-age target change without a restart and are never refused
    assert client.patch("/api/cameras/b", json={"priority": "low", "max_frame_age_ms": 250}).status_code == 200
