"""The private Docker engine runs a container from the Debian base image, and removes it."""

from desafio_dagster_tests.system.docker_harness import apt_mirror, base_image


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
