"""Small helpers over psycopg. Pure: no Dagster."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql


def one(conn: psycopg.Connection, query: str | sql.SQL | sql.Composed, params: Any = None) -> tuple:
    """The row of a query that returns exactly one (an aggregate, a setting, a function's result)."""
    row = conn.execute(query, params).fetchone()
    if row is None:
        raise psycopg.ProgrammingError(f"no row from a query that always returns one: {query!r}")
    return row
