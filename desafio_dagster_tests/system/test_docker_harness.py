"""The private Docker engine runs a container from the Debian base image, and removes it; a dockerd
left running by a killed run is stopped by the next engine."""

import subprocess
import sys

from desafio_dagster_tests.helpers import REPO
from desafio_dagster_tests.system.docker_harness import apt_mirror, base_image, running


def test_a_container_from_the_base_image_runs(docker_engine):
    image = base_image(docker_engine)
    with docker_engine.container(image, "--network", "bridge") as container:
        assert docker_engine.run("exec", container, "sh", "-c", "echo ok").strip() == "ok"
        assert "bookworm" in docker_engine.run("exec", container, "cat", "/etc/os-release")
    assert container not in docker_engine.run("ps", "--all", "--quiet", "--no-trunc")


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://mirror.example/debian bookworm main\n")
    assert apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d/debian.sources").write_text(
        "Types: deb\nURIs: http://deb.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\n")
    assert apt_mirror(tmp_path) == "http://deb.example/debian"


def test_a_dockerd_left_by_a_killed_run_is_stopped_when_the_next_engine_starts(docker_engine):
    docker_engine.stop()  # the session's engine makes way for a run that gets killed
    script = ("import time; from desafio_dagster_tests.system.docker_harness import DockerEngine; "
              "DockerEngine().start(); print('started', flush=True); time.sleep(600)")
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "started"
        orphan = int(docker_engine.pidfile.read_text())
        child.kill()
        child.wait()
        assert running(orphan), "dockerd outlives the killed run"
    finally:
        child.kill()
        child.wait()
        docker_engine.start()
    assert not running(orphan)
    assert int(docker_engine.pidfile.read_text()) == docker_engine.process.pid
    assert docker_engine.run("info", "--format", "{{.DockerRootDir}}").strip() == str(docker_engine.data_root)
