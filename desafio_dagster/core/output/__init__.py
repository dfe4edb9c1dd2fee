"""The output: its contract, a version's files, the stores (a folder or S3), what Spark tasks write to, S3 requests."""
