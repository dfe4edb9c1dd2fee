"""The compose stack's preflight against a real Postgres: each login said ok or failed, in one line,
without the password (the wrong-password case itself runs in system/test_compose.py: this server
trusts every login)."""

from psycopg.conninfo import conninfo_to_dict

from desafio_dagster.deploy import preflight
from desafio_dagster_tests.helpers import free_port


def test_both_logins_ok_and_a_missing_schema_is_fine_when_it_can_be_created(database_url, dagster_storage_url,
                                                                           monkeypatch):
    import os

    monkeypatch.setenv("DAGSTER_POSTGRES_PASSWORD", "any")  # this server trusts the login
    if not os.environ["DAGSTER_POSTGRES_HOST"]:  # the embedded server: a socket folder, as libpq takes it
        monkeypatch.setenv("DAGSTER_POSTGRES_HOST", os.environ["PGHOST"])
    assert preflight.main(os.environ) == 0
    assert "login ok, schema sicooperative missing (populate creates it)" in preflight.check_source(os.environ)
    params = conninfo_to_dict(dagster_storage_url)
    assert preflight.check_dagster_storage(os.environ) == (
        f"Dagster storage ({os.environ['DAGSTER_POSTGRES_USER']}@{os.environ['DAGSTER_POSTGRES_HOST']}:"
        f"{os.environ['DAGSTER_POSTGRES_PORT']}/{params['dbname']}): login ok")


def test_every_failed_login_is_one_line_without_the_secret(capsys):
    port = free_port()  # nothing listens there
    env = {"DAGSTER_POSTGRES_HOST": "127.0.0.1", "DAGSTER_POSTGRES_PORT": str(port), "DAGSTER_POSTGRES_USER": "dagster",
           "DAGSTER_POSTGRES_PASSWORD": "s3cret-storage", "DAGSTER_POSTGRES_DB": "dagster",
           "DESAFIO_POSTGRES_URL": f"postgresql://desafio:s3cret-source@127.0.0.1:{port}/sicooperative"}
    assert preflight.main(env) == 1
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("preflight failed: ") for line in lines), err
    assert "Dagster storage (dagster@127.0.0.1" in lines[0] and "cannot log in" in lines[0]
    assert "source database (desafio@127.0.0.1" in lines[1] and "cannot log in" in lines[1]
    assert "s3cret" not in err
    del env["DAGSTER_POSTGRES_PASSWORD"]
    assert preflight.main(env) == 1 and "DAGSTER_POSTGRES_PASSWORD not set" in capsys.readouterr().err
