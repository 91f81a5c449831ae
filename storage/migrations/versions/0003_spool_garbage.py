"""Spool files of deleted messages are collected, whatever deleted their rows.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.schema import SPOOL_GARBAGE_TRIGGER

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("spool_garbage", sa.Column("name", sa.String(), primary_key=True))
    op.execute(SPOOL_GARBAGE_TRIGGER)


def downgrade() -> None:
    raise NotImplementedError("hubd queues are migrated forward only")
