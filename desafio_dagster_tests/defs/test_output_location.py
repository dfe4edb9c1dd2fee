"""DESAFIO_OUTPUT_DIR accepts a local folder or s3://bucket/prefix; any other scheme is refused before
anything is written (never taken as a folder named "gs:" under the working directory)."""

from pathlib import Path

import pytest

from desafio_dagster.cli.__main__ import main
from desafio_dagster.core import settings
from desafio_dagster_tests.helpers import failed_run_message, run

REFUSED = ["gs://bucket/exports", "hdfs://namenode/exports", "s3:/typo/exports", "s3://B/upper-case-bucket",
           "abfss://container@account.dfs.core.windows.net/x", "file://otherhost/srv/x"]


@pytest.mark.parametrize("value", REFUSED)
def test_unsupported_locations_are_refused_naming_the_setting_and_the_forms(value):
    with pytest.raises(settings.SettingError) as raised:
        settings.output_location(environ={"DESAFIO_OUTPUT_DIR": value})
    message = str(raised.value)
    assert "DESAFIO_OUTPUT_DIR" in message and value in message and "s3://bucket/prefix" in message
    assert "a local folder" in message


def test_local_forms_are_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    read = settings.output_location
    assert read(environ={}).path == tmp_path / "data"
    assert read(environ={"DESAFIO_OUTPUT_DIR": "out/x"}).path == tmp_path / "out" / "x"
    assert read(environ={"DESAFIO_OUTPUT_DIR": "file:///srv/ex%20ports"}).path == Path("/srv/ex ports")
    assert read(environ={"DESAFIO_OUTPUT_DIR": "./odd:name"}).path == tmp_path / "odd:name"


def test_s3_forms_are_accepted():
    read = settings.output_location
    assert read(environ={"DESAFIO_OUTPUT_DIR": "s3://my-bucket/a/b/"}) == settings.OutputLocation(
        bucket="my-bucket", prefix="a/b")
    assert read(environ={"DESAFIO_OUTPUT_DIR": "s3://my.bucket"}).uri == "s3://my.bucket"


def _nothing_written(cwd: Path) -> None:
    assert [p.name for p in cwd.iterdir()] == [], "nothing is written under the working directory"


@pytest.mark.parametrize("value", ["gs://bucket/exports", "s3:/typo"])
def test_an_export_with_an_unsupported_location_fails_clearly_and_writes_nothing(source, env_home, monkeypatch, value):
    cwd = env_home / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", value)
    message = failed_run_message(run("export"))
    assert "DESAFIO_OUTPUT_DIR" in message and value in message and "s3://bucket/prefix" in message
    _nothing_written(cwd)
    assert not (env_home / "data").exists()


def test_the_cli_refuses_an_unsupported_location_before_the_run(env_home, monkeypatch, capsys):
    cwd = env_home / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", "gs://bucket/exports")
    assert main(["run", "--job", "export"]) == 2
    err = capsys.readouterr().err
    assert "DESAFIO_OUTPUT_DIR" in err and "gs://bucket/exports" in err and "s3://bucket/prefix" in err
    _nothing_written(cwd)


def test_blank_aws_settings_count_as_unset(monkeypatch):
    from desafio_dagster.core.output.s3 import s3_client, s3_filesystem

    monkeypatch.setenv("AWS_REGION", " ")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "sa-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", " ")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    filesystem = s3_filesystem()
    options = filesystem.__reduce__()[1][0]  # what it was built with
    assert (options["region"], options["endpoint_override"], options["scheme"]) == ("sa-east-1", "127.0.0.1:9", "http")
    client = s3_client()  # boto3's, for single-request reads, checked writes and batch deletes: the same
    assert (client.meta.region_name, client.meta.endpoint_url) == ("sa-east-1", "http://127.0.0.1:9")
