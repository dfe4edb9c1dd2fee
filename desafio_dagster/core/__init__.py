"""The pure core: generation, the source database, extract, transform, audit and publication,
Spark and Java start-up, grouped by concern in source/, export/, output/ and spark/. No module here or in
those subpackages imports Dagster (desafio_dagster_tests/core/test_layers.py)."""
