"""One reader of the settings, one rule: unset, empty or blank takes the default; relative paths
are taken from the working directory; nothing changes os.environ."""

import os
import subprocess
import sys

import pytest

from desafio_dagster.core import settings


def test_unset_empty_and_blank_values_take_the_defaults(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for environ in ({}, dict.fromkeys((v.name for v in settings.VARIABLES), ""),
                    dict.fromkeys((v.name for v in settings.VARIABLES), "  ")):
        read = settings.read(environ)
        assert read == settings.Settings(postgres_url="", schema="sicooperative", home=tmp_path / ".desafio",
                                         output_dir=tmp_path / "data", spark_master="local[*]"), environ
        assert read.pgdata == tmp_path / ".desafio" / "pgdata"


def test_relative_paths_are_taken_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    read = settings.read({"DESAFIO_HOME": "state/home", "DESAFIO_OUTPUT_DIR": "../out", "DESAFIO_SCHEMA": "s2"})
    assert read.home == tmp_path / "state" / "home" and read.home.is_absolute()
    assert read.output_dir == tmp_path / ".." / "out"
    assert read.schema == "s2"


def test_a_resources_own_value_wins_over_the_environment():
    assert settings.SCHEMA.value("mine", {"DESAFIO_SCHEMA": "env"}) == "mine"
    assert settings.SCHEMA.value("", {"DESAFIO_SCHEMA": "env"}) == "env"
    assert settings.SCHEMA.value(" ", {"DESAFIO_SCHEMA": ""}) == "sicooperative"


@pytest.mark.parametrize("home", ["", "relative/home"])
def test_the_resources_follow_the_same_rule(tmp_path, monkeypatch, home):
    from desafio_dagster.defs.io_managers.per_client_csv import PerClientCsvIOManager
    from desafio_dagster.defs.resources.spark import SparkResource

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DESAFIO_HOME", home)
    monkeypatch.setenv("DESAFIO_OUTPUT_DIR", "")
    monkeypatch.setenv("DESAFIO_SPARK_MASTER", " ")
    spark = SparkResource()  # fields left empty: the environment, else the defaults
    assert settings.HOME.path() == tmp_path / (home or ".desafio")
    assert spark.master_url == "local[*]"
    assert PerClientCsvIOManager(spark=spark).store("movements_csv").uri() == str(tmp_path / "data" / "movements_csv")


def test_loading_the_definitions_changes_no_environment_variable():
    script = ("import os; before = dict(os.environ); import desafio_dagster.definitions; "
              "print(sorted(set(os.environ.items()) ^ set(before.items())))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESAFIO_")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
