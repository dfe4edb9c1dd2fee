"""Small helpers shared by the Dagster layer."""

import contextlib

import dagster as dg
import psycopg

from desafio_dagster.errors import DesafioError


@contextlib.contextmanager
def user_errors():
    """Show the project's explained errors (and Postgres's) as a Dagster Failure."""
    try:
        yield
    except DesafioError as error:
        raise dg.Failure(str(error)) from None
    except psycopg.Error as error:  # the server's own words; never holds the connection password
        raise dg.Failure(f"Postgres refused: {str(error).strip()}") from error


def markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "(no rows)"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(row[column]) for column in header) + " |" for row in rows]
    return "\n".join(lines)
