"""The pure core: generation, the source database, extract, transform, audit and publication,
Spark and Java start-up. No module here imports Dagster (desafio_dagster_tests/core/test_layers.py)."""
