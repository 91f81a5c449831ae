"""Delivery shards (several delivery processes per node) and spooled bodies.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_DUE = sa.text("state = 'PENDING' AND lease_owner IS NULL")


def upgrade() -> None:
    # Which delivery process claims the recipient (by next hop); 0 with one of them.
    op.add_column(
        "recipients", sa.Column("shard", sa.Integer(), nullable=False, server_default="0")
    )
    op.drop_index("ix_recipients_due", table_name="recipients")
    op.create_index(
        "ix_recipients_due", "recipients", ["shard", "next_attempt_at"], sqlite_where=_DUE
    )
    # A body past smtp.spool_threshold lives in a file under <data_dir>/spool/.
    op.add_column("bodies", sa.Column("spool", sa.String(), nullable=False, server_default=""))
    op.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def downgrade() -> None:
    raise NotImplementedError("hubd queues are migrated forward only")
