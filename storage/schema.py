"""The queue database's tables and its schema version.

Owns: table definitions (messages, bodies, recipients, meta, stats, spool_garbage; XSHADOW's
shadows, early_discards, taken, peers, upstreams, notices; delivered_origins), the trigger
that collects the spool files of deleted bodies, and SCHEMA_VERSION.
Not: opening the file (database.py) or the verbs over it (repository.py).
Limits: states are stored by name (RecipientState in repository.py).
"""

from __future__ import annotations

from sqlalchemy import (
    DDL,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    event,
    text,
)

# Bumped by each migration that an older hubd could not read (storage/migrations/).
SCHEMA_VERSION = 2  # what hubd 0.1 checks; revisions since 0002 are refused by Alembic
# The newest migration (storage/migrations/versions/), so that a file already there is
# known without importing Alembic (8 MB and 0.15 s of every start); a unit test holds the
# two equal.
HEAD_REVISION = "0005"

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
    # XSHADOW: the upstream node (and its incarnation) that is owed a discard notice for
    # this message, and whether that notice has been recorded.
    Column("upstream", String, nullable=False, server_default=""),
    Column("upstream_incarnation", String, nullable=False, server_default=""),
    Column("upstream_notified", Integer, nullable=False, server_default="0"),
)

# Bodies apart from envelopes, so that scans of the queue never page through message text.
bodies = Table(
    "bodies",
    metadata,
    Column("message", Integer, ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    Column("data", LargeBinary, nullable=False),
    # A body past smtp.spool_threshold: "data" holds its head (the trace headers this node
    # added), the file <data_dir>/spool/<spool> the rest, as received.
    Column("spool", String, nullable=False, server_default=""),
)

# Spool files whose body row is gone (by any path: delivery, removal, cascades), to unlink.
spool_garbage = Table("spool_garbage", metadata, Column("name", String, primary_key=True))
SPOOL_GARBAGE_TRIGGER = (
    "CREATE TRIGGER bodies_spool_garbage AFTER DELETE ON bodies WHEN old.spool != ''"
    " BEGIN INSERT OR IGNORE INTO spool_garbage (name) VALUES (old.spool); END"
)
event.listen(metadata, "after_create", DDL(SPOOL_GARBAGE_TRIGGER))  # type: ignore[no-untyped-call]

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
    # The shadow this recipient is held under, while it is SHADOWED (handed to a peer).
    Column("shadow", Integer, ForeignKey("shadows.id", ondelete="SET NULL")),
    # Which delivery process claims it (derived from next_hop; 0 with one of them).
    Column("shard", Integer, nullable=False, server_default="0"),
    # host:port an operator redirected it to (`hubd queue redirect`): delivery goes there,
    # whatever routing says; NULL for routing's own next hop.
    Column("redirect_to", String),
)

# Upstream side (U): copies of messages handed to a shadow-aware peer, until it discards them.
shadows = Table(
    "shadows",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("message", Integer, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("peer_address", String, nullable=False),
    Column("peer_name", String, nullable=False),
    Column("peer_incarnation", String, nullable=False),
    Column("peer_queue_id", String, nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_shadows_peer", shadows.c.peer_address, shadows.c.peer_incarnation)
Index("ix_shadows_peer_id", shadows.c.peer_incarnation, shadows.c.peer_queue_id)
Index("ix_shadows_message", shadows.c.message)

# Discard notices that arrived before the shadow they are for was committed.
early_discards = Table(
    "early_discards",
    metadata,
    Column("peer_incarnation", String, primary_key=True),
    Column("peer_queue_id", String, primary_key=True),
    Column("received_at", Float, nullable=False),
)

# Peer queue ids this node took over (resubmitted), to tell the peer when it comes back:
# once this node's own copy (queue_id; "" from before 0004: at once) has left it.
taken = Table(
    "taken",
    metadata,
    Column("peer_address", String, primary_key=True),
    Column("peer_incarnation", String, primary_key=True),
    Column("peer_queue_id", String, primary_key=True),
    Column("taken_at", Float, nullable=False),
    Column("queue_id", String, nullable=False, server_default=""),
)

# What this node knows of each peer it sends to: incarnation, acknowledged notice sequence.
peers = Table(
    "peers",
    metadata,
    Column("address", String, primary_key=True),
    Column("name", String, nullable=False, server_default=""),
    Column("incarnation", String, nullable=False, server_default=""),
    Column("ack", Integer, nullable=False, server_default="0"),
    Column("dead", Integer, nullable=False, server_default="0"),
)

# Downstream side (D): per upstream incarnation, the notices owed to it, in sequence.
upstreams = Table(
    "upstreams",
    metadata,
    Column("name", String, primary_key=True),
    Column("incarnation", String, primary_key=True),
    Column("next_seq", Integer, nullable=False, server_default="1"),
    Column("last_listed", Integer, nullable=False, server_default="0"),
    Column("last_asked_at", Float, nullable=False),
)

notices = Table(
    "notices",
    metadata,
    Column("upstream", String, primary_key=True),
    Column("upstream_incarnation", String, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("queue_id", String, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Final delivery: (origin key, recipient) pairs already delivered, for duplicate suppression.
delivered_origins = Table(
    "delivered_origins",
    metadata,
    Column("origin", String, primary_key=True),
    Column("recipient", String, primary_key=True),
    Column("delivered_at", Float, nullable=False),
)
Index("ix_delivered_origins_at", delivered_origins.c.delivered_at)

Index("ix_recipients_message", recipients.c.message)
# The scheduler's one query: due, pending, unclaimed recipients of a shard in due order.
Index(
    "ix_recipients_due",
    recipients.c.shard,
    recipients.c.next_attempt_at,
    sqlite_where=text("state = 'PENDING' AND lease_owner IS NULL"),
)
Index(
    "ix_recipients_leased",
    recipients.c.lease_owner,
    sqlite_where=text("lease_owner IS NOT NULL"),
)
