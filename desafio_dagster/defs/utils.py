"""Small helpers shared by the Dagster layer."""

import contextlib
from collections.abc import Iterator
from typing import Any

import dagster as dg
import psycopg

from desafio_dagster.core.errors import DesafioError, TransientError
from desafio_dagster.core.settings import Variable

# Transient faults (a dropped or refused connection, a lost executor) are retried with
# backoff; explained errors (bad config, a failed audit, a missing table) never are.
TRANSIENT_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Show the project's explained errors (and Postgres's) as a Dagster Failure; only
    transient ones may be retried by the step's RetryPolicy."""
    try:
        yield
    except TransientError as error:
        raise dg.Failure(f"{error} (a transient fault: the step's retry policy tries again)") from None
    except DesafioError as error:
        raise dg.Failure(str(error), allow_retries=False) from None
    except psycopg.OperationalError as error:  # the connection itself failed: worth another attempt
        raise dg.Failure(f"connection to Postgres lost: {str(error).strip()} (a transient fault: the step's "
                         f"retry policy tries again)") from error
    except psycopg.Error as error:  # the server's own words; never holds the connection password
        raise dg.Failure(f"Postgres refused: {str(error).strip()}", allow_retries=False) from error


def metadata_table(rows: list[dict], schema: dg.TableSchema) -> dg.TableMetadataValue:
    """Rows as a table the UI renders with its column types; values other than text, numbers and
    booleans (timestamps, decimals) are shown as text."""
    def cell(value: Any) -> Any:
        return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)

    return dg.MetadataValue.table([dg.TableRecord({k: cell(v) for k, v in row.items()}) for row in rows], schema=schema)


def from_environment(variable: Variable) -> str:
    """A resource field's value: dg.EnvVar when the variable holds a value as the definitions load
    (the UI's resource page then names it), else empty. Either way the resource reads it through
    desafio_dagster.core.settings, whose rule gives an empty value the default."""
    return dg.EnvVar(variable.name) if variable.environment() else ""
