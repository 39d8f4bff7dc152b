"""The job ledger: SQLAlchemy models, sessions, queries and migrations (imports nothing else of LensQ)."""
