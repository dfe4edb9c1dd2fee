"""The one reader of the project's settings (the README's Environment table).

One rule for every setting: a value that is unset, empty or only spaces takes the default. A
relative path is taken from the directory the process runs in. Reading never changes os.environ.
"""

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from desafio_dagster.core.errors import DesafioError


def _holds_value(text: str) -> bool:
    return bool(text and text.strip())


def environment(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A variable's value in the environment (os.environ unless given); empty where it is unset, empty or
    blank. For the variables the project reads besides its own (JAVA_HOME, AWS_*) too."""
    value = (os.environ if environ is None else environ).get(name, "")
    return value if _holds_value(value) else ""


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
        return environment(self.name, environ)

    def path(self, configured: str = "", environ: Mapping[str, str] | None = None) -> Path:
        return Path(self.value(configured, environ)).absolute()

    def describe(self) -> str:
        """What it sets, the variable and the default, for a resource field's description in the UI."""
        return f"{self.meaning}. Empty: ${self.name}, and where that is unset or empty: '{self.default}'"


POSTGRES_URL = Variable("DESAFIO_POSTGRES_URL", "", "libpq URL of the source database (embedded: a Postgres "
                        "under DESAFIO_HOME/pgdata)")
SCHEMA = Variable("DESAFIO_SCHEMA", "sicooperative", "Schema of the four source tables")
HOME = Variable("DESAFIO_HOME", ".desafio", "The project's working folder: the embedded Postgres and run logs")
OUTPUT_DIR = Variable("DESAFIO_OUTPUT_DIR", "data", "Where movements_csv is published: a local folder, or "
                      "s3://bucket/prefix (credentials and endpoint from the standard AWS_* variables)")
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


class SettingError(DesafioError):
    """A setting holds a value the project cannot use."""


OUTPUT_FORMS = "a local folder (e.g. ./data or /srv/exports, or file:///srv/exports) or s3://bucket/prefix"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_S3 = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/[^?#]*)?$")


@dataclass(frozen=True)
class OutputLocation:
    """Where the output goes: a local folder (path), or an S3 bucket and key prefix."""

    path: Path | None = None
    bucket: str = ""
    prefix: str = ""  # no leading or trailing slash; may be empty

    @property
    def uri(self) -> str:
        if self.path is not None:
            return str(self.path)
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


def output_location(configured: str = "", environ: Mapping[str, str] | None = None) -> OutputLocation:
    """DESAFIO_OUTPUT_DIR (or a resource's configured value) checked before anything is written: a local
    path, file:///path, or s3://bucket/prefix. Any other scheme is refused, never taken as a folder name."""
    value = OUTPUT_DIR.value(configured, environ).strip()
    scheme = _SCHEME.match(value)
    if scheme is None:
        return OutputLocation(path=Path(value).absolute())
    kind = scheme.group(1).lower()
    if kind == "file":
        parts = urlsplit(value)
        if value.startswith("file://") and parts.netloc in ("", "localhost") and parts.path.startswith("/"):
            return OutputLocation(path=Path(unquote(parts.path)))
    elif kind == "s3":
        s3 = _S3.match(value)
        if s3:
            return OutputLocation(bucket=s3.group(1), prefix=(s3.group(2) or "").strip("/"))
    raise SettingError(
        f"{OUTPUT_DIR.name}={value!r} is not a supported output location: use {OUTPUT_FORMS}"
        + (" (a bucket name is 3 to 63 lower-case letters, digits, dots and hyphens)" if kind == "s3" else "")
        + (f" (for a local folder whose name holds a colon, write ./{value})" if kind not in ("s3", "file") else "")
        + "; nothing was written"
    )
