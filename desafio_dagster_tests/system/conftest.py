"""System tests: Docker, a browser, a Spark cluster. Every test in this folder is marked `system`
(`make test-quick` leaves them out; `make test` runs them)."""

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def docker_engine():
    """A private dockerd for the session (docker_harness.py), stopped by pid afterwards with its
    containers and networks removed."""
    from desafio_dagster_tests.system.docker_harness import DockerEngine

    with DockerEngine() as engine:
        yield engine
