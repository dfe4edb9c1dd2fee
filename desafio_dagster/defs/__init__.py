"""The Dagster layer: assets and checks, resources, the per-client CSV IO manager, jobs, schedules
and automation. Thin: the work is done by desafio_dagster.core."""
