"""The command line of `make run` and `make stop-db` (`python -m desafio_dagster.cli`) and the
progress report it draws from a run's Dagster events."""
