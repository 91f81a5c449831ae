"""A recipient may be redirected by its operator to another node (`hubd queue redirect`).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL for every recipient queued before: each goes where routing sends it, as it did.
    op.add_column("recipients", sa.Column("redirect_to", sa.String(), nullable=True))


def downgrade() -> None:
    raise NotImplementedError("hubd queues are migrated forward only")
