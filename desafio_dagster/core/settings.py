"""The project's environment variables and their defaults (the README's Environment table)."""

import os
from pathlib import Path

DEFAULTS = {
    "DESAFIO_POSTGRES_URL": "",  # empty: the embedded Postgres under DESAFIO_HOME/pgdata
    "DESAFIO_SCHEMA": "sicooperative",
    "DESAFIO_HOME": ".desafio",
    "DESAFIO_OUTPUT_DIR": "data",
    "DESAFIO_SPARK_MASTER": "local[*]",
}


def apply_defaults() -> None:
    """Give every unset variable its default, so the resources can take them all through dg.EnvVar
    (the UI then shows which variable each setting comes from)."""
    for name, default in DEFAULTS.items():
        os.environ.setdefault(name, default)


def _get(name: str) -> str:
    return os.environ.get(name) or DEFAULTS[name]


def home() -> Path:
    return Path(_get("DESAFIO_HOME"))


def output_dir() -> Path:
    return Path(_get("DESAFIO_OUTPUT_DIR"))


def schema() -> str:
    return _get("DESAFIO_SCHEMA")
