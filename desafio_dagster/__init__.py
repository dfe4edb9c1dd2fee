"""desafio_dagster: a credit cooperative's card movements, from Postgres through Spark to one CSV per client."""
