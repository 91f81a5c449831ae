"""The exception tree of hubd.

    HubdError
    ├── ConfigError            a configuration file is missing or invalid (exit code 2)
    ├── DataDirInUse           another node holds the data directory (hubd/datadir.py)
    └── DeliveryError          one delivery attempt failed (transient or permanent)
    StorageError (storage/errors.py; storage imports nothing from hubd)
    ├── SchemaTooNew           written by a newer hubd; refuse to touch it
    └── QueueCorrupt           failed its integrity check; moved aside

Each error that can reach an SMTP peer carries `transient` and an enhanced status code, so the
code that sees the failure decides its kind, and `replies.py` turns it into the reply.
"""

from __future__ import annotations

from storage.errors import QueueCorrupt, SchemaTooNew, StorageError

__all__ = [
    "ConfigError",
    "DeliveryError",
    "HubdError",
    "QueueCorrupt",
    "SchemaTooNew",
    "StorageError",
]


class HubdError(Exception):
    """Base of every error hubd raises on purpose."""


class ConfigError(HubdError):
    """The configuration is invalid; `problems` holds one line per error, naming the key."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))


class DeliveryError(HubdError):
    """One delivery attempt failed; `transient` says whether a retry can help."""

    def __init__(self, message: str, *, transient: bool, enhanced: str) -> None:
        self.transient = transient
        self.enhanced = enhanced
        super().__init__(message)
