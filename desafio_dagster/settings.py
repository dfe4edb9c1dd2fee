"""Settings from the environment, with the defaults of DESIGN.md."""

import os
from pathlib import Path


def home() -> Path:
    return Path(os.environ.get("DESAFIO_HOME", ".desafio"))


def output_dir() -> Path:
    return Path(os.environ.get("DESAFIO_OUTPUT_DIR", "data"))


def schema() -> str:
    return os.environ.get("DESAFIO_SCHEMA", "sicooperative")


def spark_master() -> str:
    return os.environ.get("DESAFIO_SPARK_MASTER", "local[*]")
