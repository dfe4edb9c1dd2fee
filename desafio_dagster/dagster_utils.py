"""Small helpers shared by the Dagster layer."""

import contextlib

import dagster as dg
import psycopg

from desafio_dagster.errors import DesafioError, TransientError

# Transient faults (a dropped or refused connection, a lost executor) are retried with
# backoff; explained errors (bad config, a failed audit, a missing table) never are.
TRANSIENT_RETRY_POLICY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL)


@contextlib.contextmanager
def user_errors():
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


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines)
