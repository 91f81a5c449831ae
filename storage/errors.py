"""Errors of the queue database (part of the tree drawn in hubd/errors.py)."""

from __future__ import annotations


class StorageError(Exception):
    """The queue database cannot be opened or used."""


class SchemaTooNew(StorageError):
    """The queue database was written by a newer hubd."""


class QueueCorrupt(StorageError):
    """The queue database failed its integrity check."""
