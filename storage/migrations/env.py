"""Alembic's entry point: migrate the connection storage/migrate.py hands over, in place."""

from __future__ import annotations

from alembic import context

from storage.schema import metadata

context.configure(
    connection=context.config.attributes["connection"],
    target_metadata=metadata,
    # SQLite cannot alter most columns in place; batch mode copies the table when needed.
    render_as_batch=True,
)
with context.begin_transaction():
    context.run_migrations()
