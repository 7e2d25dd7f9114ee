"""Clip jobs against the real server, model and clip: a job's records match `streamsrv analyze` on the same file;
URL jobs and what the server refuses to read; bad requests; the bounded queue (429 with Retry-After) and cancelling;
the jobs' Prometheus metrics; results expiring; and, with Redis, jobs surviving a server that is killed and started
again."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamsrv.cli import main
from streamsrv.jobs.store import ResultStore
from tests.support.app_server import AppServer, AppServers, model_section
from tests.support.processes import RedisServer, free_port
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow

TRIPWIRE = {"lines": [{"name": "mid", "points": [[0, 200], [640, 200]]}]}
JOB_TIMEOUT_S = 240.0
RESULT_TTL_S = 20


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(scope="module")
def app(module_app_factory: AppServers, person_model: Path, clip_360p: Path, spool: Path) -> AppServer:
    return module_app_factory(
        model_section(person_model)
        + f"jobs: {{max_concurrent: 1, max_queued: 2, max_upload_bytes: 3000000, result_ttl_s: {RESULT_TTL_S}, "
        f'spool_dir: "{spool}", allowed_file_dir: "{clip_360p.parent}"}}\n'
    )


@pytest.fixture
def http(app: AppServer) -> Iterator[httpx.Client]:
    with app.client(timeout_s=120) as client:
        yield client


def upload(http: httpx.Client, clip: Path, **form: Any) -> httpx.Response:
    with clip.open("rb") as f:
        return http.post("/api/jobs", files={"file": (clip.name, f, "video/mp4")}, data=form)


def created(response: httpx.Response) -> str:
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    assert response.headers["location"] == f"/api/jobs/{job_id}"
    return job_id


def job(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/api/jobs/{job_id}", params={"records": "false"})
    assert response.status_code == 200, response.text
    state: dict[str, Any] = response.json()["job"]
    return state


def wait_state(http: httpx.Client, job_id: str, *states: str, timeout_s: float = JOB_TIMEOUT_S) -> dict[str, Any]:
    wait_for(lambda: job(http, job_id)["state"] in states, timeout_s, f"job {job_id} to be {'/'.join(states)}")
    return job(http, job_id)


def records_of(http: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    body = http.get(f"/api/jobs/{job_id}").json()
    assert body["job"]["state"] == "done", body["job"]
    records: list[dict[str, Any]] = body["records"]
    return records


def without_ids(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("id", "run_id", "camera_id", "bbox", "confidence")}


def assert_same_output(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """Same frames with the same tracks, same events, same counts; ids (random per run) and the camera name aside.
    Boxes and confidences may differ in the last float digits: the job's frames were batched differently."""
    assert [r["type"] for r in ours] == [r["type"] for r in theirs]
    for a, b in zip(ours, theirs, strict=True):
        if a["type"] == "frame":
            assert (a["frame_index"], a["ts"], a["width"], a["height"]) == (
                b["frame_index"],
                b["ts"],
                b["width"],
                b["height"],
            )
            key = [(t["track_id"], t["label"], t["confirmed"]) for t in a["tracks"]]
            assert key == [(t["track_id"], t["label"], t["confirmed"]) for t in b["tracks"]], a["frame_index"]
            np.testing.assert_allclose(
                [t["bbox"] for t in a["tracks"]] or np.zeros((0, 4)),
                [t["bbox"] for t in b["tracks"]] or np.zeros((0, 4)),
                atol=1.0,
            )
            np.testing.assert_allclose(
                [t["confidence"] for t in a["tracks"]], [t["confidence"] for t in b["tracks"]], atol=0.01
            )
        elif a["type"] == "event":
            assert without_ids(a["event"]) == without_ids(b["event"])
            np.testing.assert_allclose(a["event"]["bbox"], b["event"]["bbox"], atol=1.0)
        else:
            assert {**a, "camera_id": "", "video": ""} == {**b, "camera_id": "", "video": ""}


def test_job_output_is_what_analyze_writes(
    http: httpx.Client, tmp_path: Path, person_model: Path, clip_360p: Path
) -> None:
    job_id = created(upload(http, clip_360p, detect_fps="5", rules=json.dumps(TRIPWIRE)))
    progress: list[float] = []

    def done() -> bool:
        state = job(http, job_id)
        if state["state"] == "running" and state["progress"] is not None:
            progress.append(state["progress"])
        return bool(state["state"] == "done")

    wait_for(done, JOB_TIMEOUT_S, "the job to finish")
    assert progress and 0 < min(progress) < 100 and progress == sorted(progress)
    ours = records_of(http, job_id)
    finished = job(http, job_id)
    assert finished["progress"] == 100 and finished["frames_done"] == finished["total_frames"] == ours[-1]["frames"]
    jsonl = http.get(f"/api/jobs/{job_id}/result")
    assert jsonl.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in jsonl.text.splitlines()] == ours

    config = tmp_path / "analyze.yaml"
    config.write_text(
        model_section(person_model) + f'cameras:\n  - {{id: gate, url: "{clip_360p}", rules: {json.dumps(TRIPWIRE)}}}\n'
    )
    out = tmp_path / "analyze.jsonl"
    assert (
        main(
            [
                "analyze",
                "-c",
                str(config),
                "--camera",
                "gate",
                "--detect-fps",
                "5",
                "-q",
                "-o",
                str(out),
                str(clip_360p),
            ]
        )
        == 0
    )
    theirs = [json.loads(line) for line in out.read_text().splitlines()]
    assert_same_output(ours, theirs)
    summary = ours[-1]
    assert summary["events"].get("line.cross", 0) > 0  # people crossed the line
    assert summary["camera_id"] == job_id and summary["video"] == clip_360p.name


def test_url_jobs_read_only_what_the_server_allows(http: httpx.Client, clip_360p: Path) -> None:
    job_id = created(http.post("/api/jobs", data={"url": f"file://{clip_360p}", "detect_fps": "1"}))
    done = wait_state(http, job_id, "done", "failed")
    assert done["state"] == "done" and done["video"] == f"file://{clip_360p}"
    assert records_of(http, job_id)[-1]["frames"] == 14
    # the job ended: its turnaround is observed and its result counted among the bounded caches
    metrics = http.get("/metrics").text
    done_count = re.search(r'^streamsrv_job_turnaround_seconds_count\{outcome="done"\} (\S+)$', metrics, re.M)
    assert done_count is not None and float(done_count.group(1)) >= 1, metrics[-2000:]
    results = {c["cache"]: c for c in http.get("/api/caches").json()}["job_results"]
    assert results["items"] >= 1 and results["bytes"] > 0 and results["max_bytes"] == 256 * 2**20

    for url, message in [
        ("/etc/passwd", "outside the directory"),
        ("file:///etc/passwd", "outside the directory"),
        ("../models/person_yolov8s.pt", "outside the directory"),
        ("missing.mp4", "not a file"),
        ("ftp://example.com/clip.mp4", "unsupported URL scheme 'ftp'"),
        ("http://example.com/a\x00b.mp4", "control characters"),
        ("http://169.254.169.254/latest/meta-data/", "jobs.allow_link_local_urls"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata"),
    ]:
        response = http.post("/api/jobs", data={"url": url})
        assert response.status_code == 422 and message in response.json()["detail"], (url, response.text)

    refused = created(http.post("/api/jobs", data={"url": f"http://user:pw@127.0.0.1:{free_port()}/clip.mp4"}))
    failed = wait_state(http, refused, "done", "failed")
    assert failed["state"] == "failed" and "refused" in failed["error"] and "pw" not in json.dumps(failed)


def test_bad_job_requests_get_a_4xx_naming_the_problem(app: AppServer, http: httpx.Client, clip_360p: Path) -> None:
    clip = clip_360p.read_bytes()
    cases: list[tuple[dict[str, Any], dict[str, Any], int, str]] = [
        ({}, {}, 422, "either a file upload or a url"),
        ({"file": ("c.mp4", clip[:1000], "video/mp4")}, {"url": "x.mp4"}, 422, "either a file upload or a url"),
        ({"file": ("doc.pdf", b"%PDF-1.7\n1 0 obj", "application/pdf")}, {}, 415, "application/pdf is not video"),
        (
            {"file": ("notes.mp4", b"just some text\n" * 100, "application/octet-stream")},
            {},
            422,
            "not a readable video",
        ),
        ({"file": ("empty.mp4", b"", "video/mp4")}, {}, 422, "empty"),
        ({"file": ("big.mp4", clip * 2, "video/mp4")}, {}, 413, "jobs.max_upload_bytes"),
        ({"file": ("c.mp4", clip, "video/mp4")}, {"rules": '{"lines": [{"name": "x"}]}'}, 422, "points"),
        ({"file": ("c.mp4", clip, "video/mp4")}, {"rules": "{unclosed: ["}, 422, "not JSON or YAML"),
        ({"file": ("c.mp4", clip, "video/mp4")}, {"detect_fps": "0"}, 422, "greater than 0"),
    ]
    for files, form, code, message in cases:
        response = http.post("/api/jobs", files=files or None, data=form)
        assert response.status_code == code, (files.get("file", [None])[0], form, response.text)
        assert message in response.text, response.text
    assert http.get(f"/api/jobs/{'0' * 32}").status_code == 404
    assert http.get("/api/jobs/not-an-id").status_code == 422
    assert http.delete(f"/api/jobs/{'0' * 32}").status_code == 404
    assert http.get("/api/jobs").json()["stats"]["queued"] == 0  # none of those was queued
    assert "Traceback" not in app.log()


def test_full_queue_answers_429_and_delete_cancels(http: httpx.Client, clip_360p: Path, spool: Path) -> None:
    running = created(upload(http, clip_360p))  # every frame: runs long enough
    wait_for(lambda: job(http, running)["frames_done"] > 0, JOB_TIMEOUT_S, "the first job to make progress")
    queued = [created(upload(http, clip_360p, detect_fps="1")) for _ in range(2)]
    refused = upload(http, clip_360p)
    assert refused.status_code == 429 and "jobs.max_queued" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    assert [job(http, j)["state"] for j in queued] == ["queued", "queued"]
    assert http.get(f"/api/jobs/{queued[0]}/result").status_code == 409

    assert http.delete(f"/api/jobs/{queued[0]}").status_code == 204
    assert http.get(f"/api/jobs/{queued[0]}").status_code == 404
    assert http.delete(f"/api/jobs/{running}").status_code == 204  # cancels it mid-run
    assert http.get(f"/api/jobs/{running}").status_code == 404
    wait_state(http, queued[1], "running", "done")  # the worker moved on
    assert http.delete(f"/api/jobs/{queued[1]}").status_code == 204
    stats = http.get("/api/jobs").json()["stats"]
    assert stats["rejected"] >= 1 and stats["queued"] == stats["running"] == 0
    wait_for(lambda: not list(spool.glob("upload-*")), 30, "the cancelled jobs' uploads to be removed")


def job_metrics(http: httpx.Client) -> dict[tuple[str, str], float]:
    """The job series of /metrics: (sample name, its state or outcome label, "" for none) -> value."""
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, sample.labels.get("state") or sample.labels.get("outcome", "")): sample.value
        for family in text_string_to_metric_families(response.text)
        if family.name.startswith("streamsrv_jobs")
        for sample in family.samples
    }


def test_metrics_count_jobs_by_state_and_outcome_and_their_frames(http: httpx.Client, clip_360p: Path) -> None:
    before = job_metrics(http)
    assert before[("streamsrv_jobs", "queued")] == before[("streamsrv_jobs", "running")] == 0
    assert {outcome for name, outcome in before if name == "streamsrv_jobs_finished_total"} == {
        "done",
        "failed",
        "cancelled",
    }

    long = created(upload(http, clip_360p))  # every frame: still running when it is cancelled
    wait_for(lambda: job(http, long)["frames_done"] > 0, JOB_TIMEOUT_S, "the long job to make progress")
    waiting = created(http.post("/api/jobs", data={"url": clip_360p.name, "detect_fps": "1"}))
    now = job_metrics(http)
    assert (now[("streamsrv_jobs", "running")], now[("streamsrv_jobs", "queued")]) == (1, 1)
    assert now[("streamsrv_jobs_frames_analysed_total", "")] > before[("streamsrv_jobs_frames_analysed_total", "")]

    assert http.delete(f"/api/jobs/{waiting}").status_code == 204
    assert http.delete(f"/api/jobs/{long}").status_code == 204
    wait_for(lambda: job_metrics(http)[("streamsrv_jobs", "running")] == 0, 30, "the cancelled job's worker to stop")
    cancelled = job_metrics(http)
    assert cancelled[("streamsrv_jobs", "queued")] == 0

    short = created(http.post("/api/jobs", data={"url": clip_360p.name, "detect_fps": "1"}))
    assert wait_state(http, short, "done", "failed")["state"] == "done"
    refused = created(http.post("/api/jobs", data={"url": f"http://127.0.0.1:{free_port()}/clip.mp4"}))
    assert wait_state(http, refused, "done", "failed")["state"] == "failed"

    after = job_metrics(http)

    def increase(key: tuple[str, str], since: dict[tuple[str, str], float]) -> float:
        return after[key] - since[key]

    assert increase(("streamsrv_jobs_finished_total", "cancelled"), before) == 2
    assert increase(("streamsrv_jobs_finished_total", "done"), before) == 1
    assert increase(("streamsrv_jobs_finished_total", "failed"), before) == 1
    # Exactly the short job's 14 frames (1 per second of the clip): the refused job has none, the cancelled one
    # counts no more once its worker has stopped.
    assert increase(("streamsrv_jobs_frames_analysed_total", ""), cancelled) == 14
    assert after[("streamsrv_jobs", "running")] == after[("streamsrv_jobs", "queued")] == 0

    def same_as_the_api() -> bool:
        # Finished jobs from earlier tests expire meanwhile: compare one scrape with the listing right after it.
        scraped = job_metrics(http)
        stats = http.get("/api/jobs").json()["stats"]
        return (
            scraped[("streamsrv_jobs", "done")] == stats["done"]
            and scraped[("streamsrv_jobs", "failed")] == stats["failed"]
            and scraped[("streamsrv_jobs_rejected_total", "")] == stats["rejected"]
            and {o: scraped[("streamsrv_jobs_finished_total", o)] for o in stats["finished"]} == stats["finished"]
            and scraped[("streamsrv_jobs_frames_analysed_total", "")] == stats["frames_analysed"]
        )

    wait_for(same_as_the_api, 30, "/metrics to agree with GET /api/jobs")
    assert after[("streamsrv_jobs", "done")] >= 1 and after[("streamsrv_jobs", "failed")] >= 1


def test_finished_jobs_expire(http: httpx.Client, clip_360p: Path) -> None:
    job_id = created(http.post("/api/jobs", data={"url": clip_360p.name, "detect_fps": "0.5"}))
    assert wait_state(http, job_id, "done", "failed")["state"] == "done"
    expired_before = http.get("/api/jobs").json()["stats"]["expired"]
    wait_for(lambda: http.get(f"/api/jobs/{job_id}").status_code == 404, RESULT_TTL_S + 30, "the result to expire")
    assert http.get("/api/jobs").json()["stats"]["expired"] > expired_before


def test_result_store_keeps_within_bytes_and_age() -> None:
    store = ResultStore(max_bytes=100, ttl_s=10)
    assert store.put("a", b"x" * 40, finished_ts=1.0) == []
    assert store.put("b", b"x" * 30, finished_ts=2.0, extra_bytes=10) == []
    assert store.put("c", b"x" * 50, finished_ts=3.0) == ["a"]  # 40 + 40 + 50 > 100: the oldest goes
    assert (store.get("a"), store.get("c")) == (None, b"x" * 50)
    with pytest.raises(ValueError, match=r"jobs\.result_store_bytes"):
        store.put("d", b"x" * 101, finished_ts=4.0)
    assert store.expire(now=12.5) == ["b"]
    stats = store.stats()
    assert (stats.results, stats.bytes, stats.evicted, stats.expired) == (1, 50, 1, 1)


def test_jobs_survive_a_killed_server_with_redis(
    app_factory: AppServers, tmp_path: Path, person_model: Path, clip_360p: Path, redis_server: RedisServer
) -> None:
    config = tmp_path / "streamsrv.yaml"
    spool = tmp_path / "spool"

    def write_config(result_store_bytes: int) -> None:
        config.write_text(
            model_section(person_model)
            + f'events: {{redis_url: "{redis_server.url}"}}\n'
            + f"jobs: {{max_concurrent: 1, result_store_bytes: {result_store_bytes}, "
            f'spool_dir: "{spool}", allowed_file_dir: "{clip_360p.parent}"}}\n'
        )

    write_config(10_000_000)
    app = app_factory(config)
    with app.client(timeout_s=120) as http:
        finished = created(upload(http, clip_360p, detect_fps="1"))
        assert wait_state(http, finished, "done", "failed")["state"] == "done"
        finished_records = records_of(http, finished)
        finished_bytes = job(http, finished)["result_bytes"]
        running = created(upload(http, clip_360p))
        wait_for(lambda: job(http, running)["frames_done"] > 0, JOB_TIMEOUT_S, "the long job to make progress")
        from_url = created(http.post("/api/jobs", data={"url": clip_360p.name, "detect_fps": "1"}))
        uploaded = created(upload(http, clip_360p, detect_fps="2", rules=json.dumps(TRIPWIRE)))
        assert job(http, uploaded)["state"] == "queued"
    app.kill()  # a crash: nothing gets to tidy up
    assert len(list(spool.glob("upload-*"))) == 2  # the unfinished uploads wait for the next run

    # Room for three and a half results like the first: the two resumed jobs' results (about three) evict it.
    write_config(int(3.5 * finished_bytes))
    app.start()
    app.wait_ready()
    with app.client(timeout_s=120) as http:
        assert records_of(http, finished) == finished_records
        assert job(http, running)["state"] in ("queued", "running")  # from its first frame again
        assert job(http, from_url)["state"] == job(http, uploaded)["state"] == "queued"
        assert http.delete(f"/api/jobs/{running}").status_code == 204
        assert wait_state(http, from_url, "done", "failed")["state"] == "done"
        assert records_of(http, from_url)[-1]["frames"] == 14
        assert wait_state(http, uploaded, "done", "failed")["state"] == "done"
        summary = records_of(http, uploaded)[-1]
        assert summary["frames"] == 28 and summary["events"].get("line.cross", 0) > 0
        assert http.get(f"/api/jobs/{finished}").status_code == 404  # evicted for the newer results
        assert http.get("/api/jobs").json()["stats"]["evicted"] == 1
    assert not list(spool.glob("upload-*"))
