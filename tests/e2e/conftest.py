"""Fixtures for the end-to-end tests: ``streamsrv serve`` as a child process running the real model.

Two kinds of server, both ``AppServers`` factories (tests/support/app_server.py): ``module_app_factory`` for a
server that a module's tests share, ``app_factory`` for one a single test starts (and may kill). Each stops its
servers at teardown. The suite-wide fixtures of tests/conftest.py (media, model, RTSP and Redis servers) apply here
too. Every test here is marked ``e2e``: ``-m "not e2e"`` leaves them out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.app_server import AppServers

E2E_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Called with the whole session's items, not only this folder's.
    for item in items:
        if E2E_DIR in item.path.parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def module_app_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServers]:
    servers = AppServers(tmp_path_factory.mktemp("app"))
    yield servers
    servers.close()


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[AppServers]:
    servers = AppServers(tmp_path)
    yield servers
    servers.close()
