"""The one reader of the project's settings (the README's Environment table).

One rule for every setting: a value that is unset, empty or only spaces takes the default. A
relative path is taken from the directory the process runs in. Reading never changes os.environ.
"""

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


def _holds_value(text: str) -> bool:
    return bool(text and text.strip())


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str

    def value(self, configured: str = "", environ: Mapping[str, str] | None = None) -> str:
        """`configured` (a resource's own config) if it holds a value, else the environment's, else the default."""
        if _holds_value(configured):
            return configured
        return self.environment(environ) or self.default

    def environment(self, environ: Mapping[str, str] | None = None) -> str:
        """The variable's value in the environment; empty where it is unset, empty or blank."""
        value = (os.environ if environ is None else environ).get(self.name, "")
        return value if _holds_value(value) else ""

    def path(self, configured: str = "", environ: Mapping[str, str] | None = None) -> Path:
        return Path(self.value(configured, environ)).absolute()

    def describe(self) -> str:
        """What it sets, the variable and the default, for a resource field's description in the UI."""
        return f"{self.meaning}. Empty: ${self.name}, and where that is unset or empty: '{self.default}'"


POSTGRES_URL = Variable("DESAFIO_POSTGRES_URL", "", "libpq URL of the source database (embedded: a Postgres "
                        "under DESAFIO_HOME/pgdata)")
SCHEMA = Variable("DESAFIO_SCHEMA", "sicooperative", "Schema of the four source tables")
HOME = Variable("DESAFIO_HOME", ".desafio", "The project's working folder: the embedded Postgres and run logs")
OUTPUT_DIR = Variable("DESAFIO_OUTPUT_DIR", "data", "Output folder: movements_csv is published in it")
SPARK_MASTER = Variable("DESAFIO_SPARK_MASTER", "local[*]", "Spark master URL: local[*], or spark://host:7077")
VARIABLES = (POSTGRES_URL, SCHEMA, HOME, OUTPUT_DIR, SPARK_MASTER)


@dataclass(frozen=True)
class Settings:
    postgres_url: str  # empty: the embedded Postgres under home/pgdata
    schema: str
    home: Path
    output_dir: Path
    spark_master: str

    @property
    def pgdata(self) -> Path:
        return self.home / "pgdata"


def read(environ: Mapping[str, str] | None = None) -> Settings:
    """The settings from the environment (os.environ unless given)."""
    return Settings(
        postgres_url=POSTGRES_URL.value(environ=environ),
        schema=SCHEMA.value(environ=environ),
        home=HOME.path(environ=environ),
        output_dir=OUTPUT_DIR.path(environ=environ),
        spark_master=SPARK_MASTER.value(environ=environ),
    )
