-- The source database of the SiCooperative card data: the data contract.
-- The single source of truth for this DDL: the Postgres resource and the docker
-- init both run this file. Names are unqualified: the caller sets search_path to
-- the target schema (DESAFIO_SCHEMA, default sicooperative). Idempotent.

DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE t.typname = 'tipo_conta' AND n.nspname = current_schema()
    ) THEN
        CREATE TYPE tipo_conta AS ENUM ('corrente', 'poupanca', 'salario', 'investimento');
    END IF;
END $$;

CREATE TABLE IF NOT EXISTS associado (
    id        bigint       PRIMARY KEY,
    nome      varchar(100) NOT NULL,
    sobrenome varchar(100) NOT NULL,
    idade     int          NOT NULL CHECK (idade BETWEEN 18 AND 100),
    email     varchar(255) NOT NULL UNIQUE
);

CREATE TABLE IF NOT EXISTS conta (
    id           bigint     PRIMARY KEY,
    tipo         tipo_conta NOT NULL,
    data_criacao timestamp  NOT NULL,
    id_associado bigint     NOT NULL REFERENCES associado (id)
);

CREATE TABLE IF NOT EXISTS cartao (
    id           bigint       PRIMARY KEY,
    num_cartao   varchar(19)  NOT NULL UNIQUE CHECK (num_cartao ~ '^[0-9]+$'),
    nom_impresso varchar(100) NOT NULL,
    data_criacao timestamp    NOT NULL,
    id_conta     bigint       NOT NULL REFERENCES conta (id),
    id_associado bigint       NOT NULL REFERENCES associado (id)
);

CREATE TABLE IF NOT EXISTS movimento (
    id             bigint        PRIMARY KEY,
    vlr_transacao  numeric(10,2) NOT NULL,
    des_transacao  varchar(255)  NOT NULL,
    data_movimento timestamp     NOT NULL,
    id_cartao      bigint        NOT NULL REFERENCES cartao (id)
);

CREATE INDEX IF NOT EXISTS conta_id_associado_idx  ON conta (id_associado);
CREATE INDEX IF NOT EXISTS cartao_id_conta_idx     ON cartao (id_conta);
CREATE INDEX IF NOT EXISTS cartao_id_associado_idx ON cartao (id_associado);
CREATE INDEX IF NOT EXISTS movimento_id_cartao_idx ON movimento (id_cartao);
