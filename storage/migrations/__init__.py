"""Alembic revisions of the queue schema (run by storage/migrate.py, never by hand)."""
