"""The durable queue of a hubd node: SQLite through SQLAlchemy, with no SMTP in it."""

from storage.database import (
    Database,
    attach_database,
    check_revision,
    open_database,
    open_reader,
    prepare_queue,
)
from storage.model import (
    Claim,
    ClaimedRecipient,
    HeldShadow,
    NewMessage,
    NewRecipient,
    QueuedMessage,
    QueuedRecipient,
    RecipientOutcome,
    RecipientState,
    Settled,
    ShadowRecord,
)
from storage.reader import QueueReader
from storage.repository import Recovery, Repository
from storage.shadows import ShadowLedger
from storage.spool import Spool, SpooledBody, StoredBody
from storage.upkeep import Upkeep
from storage.writer import Writer

__all__ = [
    "Claim",
    "ClaimedRecipient",
    "Database",
    "HeldShadow",
    "NewMessage",
    "NewRecipient",
    "QueueReader",
    "QueuedMessage",
    "QueuedRecipient",
    "RecipientOutcome",
    "RecipientState",
    "Recovery",
    "Repository",
    "Settled",
    "ShadowLedger",
    "ShadowRecord",
    "Spool",
    "SpooledBody",
    "StoredBody",
    "Upkeep",
    "Writer",
    "attach_database",
    "check_revision",
    "open_database",
    "open_reader",
    "prepare_queue",
]
