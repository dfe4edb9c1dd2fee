"""Spark: a run's Connect session, the project's Connect server, the tasks' sealed credentials, the Java it needs."""
