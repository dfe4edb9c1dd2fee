"""The source: the generator, the Postgres database and its loading, the embedded Postgres, the change journal."""
