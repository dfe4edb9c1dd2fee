"""Fixtures of the export tests: a source with text that needs quoting, and an output published from it."""

import pytest

from desafio_dagster.core.source import loading
from desafio_dagster.core.source.fakedata import generate
from desafio_dagster_tests.helpers import SPEC, output, run, snapshot


@pytest.fixture
def source(source_db, env_home):
    loading.replace(source_db, generate(SPEC))
    with source_db.connect() as conn:  # text that needs RFC 4180 quoting, and accents for the slug
        conn.execute("UPDATE associado SET nome = 'João \"Jota\"', sobrenome = 'Conceição, Filho' WHERE id = 1")
        conn.execute("UPDATE movimento SET des_transacao = 'Compra: \"Loja\", linha1\nlinha2' WHERE id = "
                     "(SELECT min(m.id) FROM movimento m JOIN cartao k ON k.id = m.id_cartao WHERE k.id_associado = 1)")
    return source_db


@pytest.fixture
def published(source, env_home):
    assert run("export").success
    folder = output(env_home)
    return folder, snapshot(folder), folder.resolve()
