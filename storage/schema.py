"""The queue database's tables and its schema version.

Owns: table definitions (messages, bodies, recipients, meta, stats) and SCHEMA_VERSION.
Not: opening the file (database.py) or the verbs over it (repository.py).
Limits: states are stored by name (RecipientState in repository.py).
"""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    text,
)

SCHEMA_VERSION = 1

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String, primary_key=True),
    Column("value", String, nullable=False),
)

# Counters kept in the same transactions as the work they count, so they survive kill -9.
stats = Table(
    "stats",
    metadata,
    Column("name", String, primary_key=True),
    Column("value", Integer, nullable=False, server_default="0"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("queue_id", String, nullable=False, unique=True),
    Column("sender", String, nullable=False),
    Column("received_at", Float, nullable=False),
    Column("size", Integer, nullable=False),
    Column("message_id", String),
    Column("origin", String, nullable=False),
    Column("client", String, nullable=False, server_default=""),
    # RFC 3461: the envelope id and what a DSN returns of the message ("FULL", "HDRS" or "").
    Column("envid", String, nullable=False, server_default=""),
    Column("ret", String, nullable=False, server_default=""),
    # Times a run died while delivering this message; past the threshold it is held (poison).
    Column("crashes", Integer, nullable=False, server_default="0"),
)

# Bodies apart from envelopes, so that scans of the queue never page through message text.
bodies = Table(
    "bodies",
    metadata,
    Column("message", Integer, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

recipients = Table(
    "recipients",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message", Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("address", String, nullable=False),
    Column("state", String, nullable=False),
    Column("next_hop", String, nullable=False, server_default=""),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_error", String, nullable=False, server_default=""),
    # The delivery run that holds this recipient; NULL when nobody is working on it.
    Column("lease_owner", String),
    # RFC 3461 NOTIFY (comma list, "" for the default) and ORCPT as given at RCPT.
    Column("notify", String, nullable=False, server_default=""),
    Column("orcpt", String, nullable=False, server_default=""),
    Column("delay_notified", Integer, nullable=False, server_default="0"),
)

Index("ix_recipients_message", recipients.c.message)
# The scheduler's one query: due, pending, unclaimed recipients in due order.
Index(
    "ix_recipients_due",
    recipients.c.next_attempt_at,
    sqlite_where=text("state = 'PENDING' AND lease_owner IS NULL"),
)
Index(
    "ix_recipients_leased",
    recipients.c.lease_owner,
    sqlite_where=text("lease_owner IS NOT NULL"),
)
