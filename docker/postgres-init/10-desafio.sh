#!/usr/bin/env bash
# First start of an empty Postgres volume (docker-entrypoint-initdb.d): creates Dagster's
# storage database and the source database as separate databases, each owned by its own
# role, then the source schema from the package's schema.sql (mounted, not copied).
set -Eeo pipefail

: "${POSTGRES_USER:=postgres}"
: "${DAGSTER_POSTGRES_USER:?}" "${DAGSTER_POSTGRES_PASSWORD:?}" "${DAGSTER_POSTGRES_DB:?}"
: "${DESAFIO_POSTGRES_USER:?}" "${DESAFIO_POSTGRES_PASSWORD:?}" "${DESAFIO_POSTGRES_DB:?}"
: "${DESAFIO_SCHEMA:=sicooperative}"
schema_sql="${DESAFIO_SCHEMA_SQL:-/opt/desafio/schema.sql}"

if [ "$DAGSTER_POSTGRES_DB" = "$DESAFIO_POSTGRES_DB" ]; then
    echo "DAGSTER_POSTGRES_DB and DESAFIO_POSTGRES_DB must name different databases" >&2
    false
fi
if ! [[ "$DESAFIO_SCHEMA" =~ ^[a-z_][a-z0-9_]{0,62}$ ]]; then
    echo "DESAFIO_SCHEMA=$DESAFIO_SCHEMA is not a valid schema name" >&2
    false
fi

# psql quotes :"identifiers" and :'literals' itself; the heredocs are not shell-expanded.
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
    -v dagster_user="$DAGSTER_POSTGRES_USER" -v dagster_password="$DAGSTER_POSTGRES_PASSWORD" \
    -v dagster_db="$DAGSTER_POSTGRES_DB" \
    -v desafio_user="$DESAFIO_POSTGRES_USER" -v desafio_password="$DESAFIO_POSTGRES_PASSWORD" \
    -v desafio_db="$DESAFIO_POSTGRES_DB" <<'SQL'
CREATE ROLE :"dagster_user" LOGIN PASSWORD :'dagster_password';
CREATE DATABASE :"dagster_db" OWNER :"dagster_user";
REVOKE ALL ON DATABASE :"dagster_db" FROM PUBLIC;
CREATE ROLE :"desafio_user" LOGIN PASSWORD :'desafio_password';
CREATE DATABASE :"desafio_db" OWNER :"desafio_user";
REVOKE ALL ON DATABASE :"desafio_db" FROM PUBLIC;
SQL

# As the source role, so it owns the schema and the tables the app replaces.
PGPASSWORD="$DESAFIO_POSTGRES_PASSWORD" psql -v ON_ERROR_STOP=1 --no-psqlrc \
    --username "$DESAFIO_POSTGRES_USER" --dbname "$DESAFIO_POSTGRES_DB" \
    -v schema="$DESAFIO_SCHEMA" -v schema_sql="$schema_sql" <<'SQL'
BEGIN;
CREATE SCHEMA IF NOT EXISTS :"schema";
SET LOCAL search_path TO :"schema";
\i :schema_sql
COMMIT;
SQL
