#!/usr/bin/env bash
# The official postgres image's contract, reduced to what the stack uses: on the first start
# of an empty $PGDATA, a UTF-8 cluster whose superuser is $POSTGRES_USER with $POSTGRES_PASSWORD
# (scram over TCP, trust on the socket), the database $POSTGRES_DB, then the scripts of
# /docker-entrypoint-initdb.d (*.sh run, or sourced when not executable; *.sql through psql)
# on a server that listens on its socket only. Then the server, on every address.
set -Eeuo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
export POSTGRES_USER="${POSTGRES_USER:-postgres}"
export POSTGRES_DB="${POSTGRES_DB:-$POSTGRES_USER}"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
    pg_ctl -w -o "-c listen_addresses=''" start >/dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
            -v db="$POSTGRES_DB" <<< 'CREATE DATABASE :"db";'
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        case "$f" in
            *.sh) if [ -x "$f" ]; then "$f"; else . "$f"; fi ;;
            *.sql) psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" -f "$f" ;;
        esac
    done
    pg_ctl -w -m fast stop >/dev/null
    echo "database initialised; starting the server"
fi
exec "$@"
