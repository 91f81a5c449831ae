"""The durable queue of a hubd node: SQLite through SQLAlchemy, with no SMTP in it."""

from storage.database import Database, open_database
from storage.repository import (
    ClaimedRecipient,
    NewMessage,
    NewRecipient,
    QueuedMessage,
    QueuedRecipient,
    RecipientOutcome,
    RecipientState,
    Repository,
)
from storage.writer import Writer

__all__ = [
    "ClaimedRecipient",
    "Database",
    "NewMessage",
    "NewRecipient",
    "QueuedMessage",
    "QueuedRecipient",
    "RecipientOutcome",
    "RecipientState",
    "Repository",
    "Writer",
    "open_database",
]
