"""The job manager's bookkeeping at the edges of a job's life, on a real pipeline and a real clip."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamsrv.config import parse_config
from streamsrv.jobs.manager import JobManager
from streamsrv.jobs.store import JobState, StoredJob
from streamsrv.runtime.supervisor import Supervisor
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def manager(person_model: Path, clip_360p: Path) -> Iterator[JobManager]:
    cfg = parse_config(f"""
model: {{path: "{person_model}", labels: {{Normal: person, Fall: person}}}}
inference: {{threads: 1, max_batch: 4}}
jobs: {{allowed_file_dir: "{clip_360p.parent}"}}
""")
    sup = Supervisor(cfg, instance=f"test{os.getpid()}jobs")
    sup.start()
    jobs = JobManager(sup, cfg)
    jobs.start()
    try:
        wait_for(lambda: sup.inference.model_loaded, 180, "the model to load")
        yield jobs
    finally:
        jobs.stop()
        sup.stop()


def test_a_job_deleted_while_it_finishes_leaves_no_result_behind(
    manager: JobManager, clip_360p: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DELETE lands after the worker marked the job done but before it let go of it (while it records it)."""
    recording, deleted = threading.Event(), threading.Event()
    persist = manager._persist

    def slow_to_record_the_end(stored: StoredJob, raise_errors: bool = False) -> None:
        if stored.job.state == JobState.DONE:
            recording.set()
            assert deleted.wait(30)
        persist(stored, raise_errors)

    monkeypatch.setattr(manager, "_persist", slow_to_record_the_end)
    job = manager.submit(manager.check_source(str(clip_360p)), clip_360p.name, detect_fps=1)
    assert recording.wait(120), "the job did not finish"
    manager.delete(job.id)
    deleted.set()
    wait_for(lambda: not manager._running, 30, "the worker to let go of the job")
    assert job.id not in {j.id for j in manager.jobs()}
    store = manager.stats()
    assert store.result_bytes == 0, "the deleted job's result is still kept, crowding out others"
    assert store.finished["cancelled"] == 0 and store.finished["done"] == 1
