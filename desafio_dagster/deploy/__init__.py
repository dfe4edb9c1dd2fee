"""What the deployment runs besides Dagster: the docker-compose stack's one-shot preflight."""
