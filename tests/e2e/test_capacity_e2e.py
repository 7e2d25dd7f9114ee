"""Admission control and overload degradation against the real server: file cameras (the 360p clip, looped), the
real model on one thread.

Admission is made independent of this machine's speed by a tiny budget: ``capacity.max_inference_busy: 0.02`` is
less than two cameras at 1 fps take on any CPU, so once their cost is measured the next camera does not fit, and
the CPU budget is set far out of reach so the inference loop is the resource that binds. Overload is made certain
the same way: two cameras asking 15 fps each of one inference thread lose most of their frames on any CPU (a lost
frame counts as older than every target), and once they are removed the one left asks 0.5 fps, which even this
shared machine at its busiest (770 ms a frame on one thread has been seen) carries with room to spare.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import sync_playwright

from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PAGE_TIMEOUT_MS = 60_000
MEASURE_TIMEOUT_S = 90.0
STEP_TIMEOUT_S = 90.0


def file_camera(camera_id: str, clip: Path, fps: float, **extra: Any) -> str:
    fields = {"id": camera_id, "url": str(clip), "loop": "true", "detect_fps": fps, "motion": "{enabled: false}"}
    fields.update(extra)
    return "  - {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}\n"


def capacity(http: httpx.Client, **params: str) -> dict[str, Any]:
    response = http.get("/api/capacity", params=params)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture(scope="module")
def tight(module_app_factory: AppServers, person_model: Path, clip_360p: Path) -> AppServer:
    """Two cameras at 1 fps on a budget of 0.02 of the inference loop: over it as soon as they are measured."""
    return module_app_factory(
        model_section(person_model, capacity="{max_inference_busy: 0.02, cpu_cores: 64, degrade: false}")
        + f'server: {{allowed_file_dirs: ["{clip_360p.parent}"]}}\n'
        + "cameras:\n"
        + file_camera("a", clip_360p, 1)
        + file_camera("b", clip_360p, 1)
    )


def all_measured(http: httpx.Client) -> bool:
    cameras = capacity(http)["cameras"]
    return len(cameras) >= 2 and all(c["usage"]["processed_fps"] > 0 for c in cameras)


def test_a_camera_the_budget_cannot_carry_is_refused_with_409_naming_the_resource_unless_forced(
    tight: AppServer, clip_360p: Path
) -> None:
    server = tight
    with server.client() as http:
        wait_for(lambda: all_measured(http), MEASURE_TIMEOUT_S, "both cameras' cost measured", server)
        report = capacity(http, like="a")
        inference = next(r for r in report["resources"] if r["resource"] == "inference")
        assert inference["budget"] == 0.02 and inference["used"] > 0
        assert report["like"]["binding"] == "inference" and report["like"]["cost"]["inference"] > 0

        third = {"id": "c", "url": str(clip_360p), "loop": True, "detect_fps": 1, "motion": {"enabled": False}}
        refused = http.post("/api/cameras", json=third)
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["resource"] == "inference" and body["short_by"] > 0
        assert "inference" in body["detail"] and "force=true" in body["detail"]
        assert http.get("/api/cameras/c").status_code == 404  # nothing was added

        raise_fps = http.patch("/api/cameras/a", json={"detect_fps": 3})
        assert raise_fps.status_code == 409 and raise_fps.json()["resource"] == "inference"
        assert http.get("/api/cameras/a").json()["detect_fps"] == 1

        forced = http.post("/api/cameras", params={"force": "true"}, json=third)
        assert forced.status_code == 201, forced.text
        wait_for(
            lambda: http.get("/api/cameras/c/stats").json()["frames_processed"] > 0,
            MEASURE_TIMEOUT_S,
            "the forced camera processed",
            server,
        )
        metrics = http.get("/metrics").text
        assert 'streamsrv_capacity_budget{resource="inference"} 0.02' in metrics


@pytest.mark.browser
def test_the_web_page_shows_the_headroom_and_how_many_more_fit(tight: AppServer) -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed")
    with tight.client() as http:
        wait_for(lambda: all_measured(http), MEASURE_TIMEOUT_S, "both cameras' cost measured", tight)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.set_default_timeout(PAGE_TIMEOUT_MS)
            page.goto(f"{tight.base_url}/")
            chip = page.locator('#capacity [data-resource="inference"]')
            chip.wait_for()
            assert chip.inner_text().startswith("Inference ") and "/ 2 %" in chip.inner_text()
            assert "bad" in (chip.get_attribute("class") or "")  # over its budget
            page.goto(f"{tight.base_url}/#/camera/a")
            stats = page.locator("#detail-stats")
            stats.get_by_text("More like it fit").wait_for()
            assert "0 (Inference binds)" in stats.inner_text()
            assert "1 fps" in stats.inner_text() and "normal" in stats.inner_text()
        finally:
            browser.close()


def test_under_overload_low_cameras_degrade_first_high_never_and_they_recover_when_load_falls(
    app_factory: AppServers, person_model: Path, clip_360p: Path
) -> None:
    config = (
        model_section(person_model, capacity="{degrade_after_s: 2, restore_after_s: 4, min_detect_fps: 0.125}")
        + "cameras:\n"
        + file_camera("hi", clip_360p, 15, priority="high", max_frame_age_ms=1000)
        + file_camera("mid", clip_360p, 15, priority="normal", max_frame_age_ms=1000)
        + file_camera("lo", clip_360p, 0.5, priority="low", max_frame_age_ms=1000)
    )
    server = app_factory(config)
    seen: list[dict[str, float]] = []  # every camera's effective detect fps, one consistent reading each

    with server.client() as http:

        def record() -> dict[str, float]:
            seen.append(effective_fps(capacity(http)))
            return seen[-1]

        wait_for(lambda: record().get("mid", 15) < 15, STEP_TIMEOUT_S, "the normal camera degraded", server)
        for fps in seen:
            assert fps["hi"] == 15, f"a high camera was degraded: {fps}"
            if fps["mid"] < 15:  # normal cameras only once every low camera is at its floor
                assert fps["lo"] == 0.125, fps
        assert any(fps["lo"] < 0.5 and fps["mid"] == 15 for fps in seen), f"the low camera did not go first: {seen}"

        lo = http.get("/api/cameras/lo/stats").json()
        assert lo["degraded"] and lo["detect_fps"] == 0.5 and lo["effective_detect_fps"] == 0.125
        wait_for(  # at 0.5 fps its 5 s rate would never read under 0.3
            lambda: http.get("/api/cameras/lo/stats").json()["handed_fps"] < 0.3,
            STEP_TIMEOUT_S,
            "the degraded camera's decoder handing fewer frames",
            server,
        )
        metrics = http.get("/metrics").text
        assert 'streamsrv_camera_effective_detect_fps{camera="lo"} 0.125' in metrics
        assert 'streamsrv_camera_degraded{camera="hi"} 0.0' in metrics

        for camera_id in ("hi", "mid"):  # the load falls
            assert http.delete(f"/api/cameras/{camera_id}").status_code == 204
        last: list[dict[str, Any]] = []

        def restored() -> bool:
            last[:] = [capacity(http)]
            return last[0]["degrade"]["degraded"] == []

        try:
            wait_for(restored, STEP_TIMEOUT_S, "the low cameras restored", server)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nlast capacity report: {last}") from None
        report = capacity(http)
        assert effective_fps(report) == {"lo": 0.5}
        assert report["degrade"]["steps_up"] >= 2  # 0.125 -> 0.25 -> 0.5, a step at a time
        assert not http.get("/api/cameras/lo/stats").json()["degraded"]


def effective_fps(report: dict[str, Any]) -> dict[str, float]:
    return {c["camera_id"]: c["usage"]["effective_detect_fps"] for c in report["cameras"]}
