"""A take-over names this node's own copy, so XQTAKEN waits until that copy has left.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # "" for take-overs recorded before: those are told to the peer at once, as they were.
    op.add_column("taken", sa.Column("queue_id", sa.String(), nullable=False, server_default=""))


def downgrade() -> None:
    raise NotImplementedError("hubd queues are migrated forward only")
