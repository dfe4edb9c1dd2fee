"""The export, start to end: the snapshot and its reads, the plan, the flat view, the Spark job, audit, publication."""
