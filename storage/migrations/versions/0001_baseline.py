"""The schema as hubd 0.1 created it (schema_version 1): nothing to do.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Queues of schema version 1 are stamped with this revision, then upgraded."""


def downgrade() -> None:
    raise NotImplementedError("hubd queues are migrated forward only")
