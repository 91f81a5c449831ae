"""Helpers for integration tests of mail flows: nodes as processes, waiting, Maildirs.

Public: wait_until(), async_wait_until(), free_loopback_address(), NodeProcess,
maildir_messages(), write_config().
Limits: loopback only; every wait has a timeout and raises TimeoutError naming what it waited for.
See also: tests/conftest.py (fixtures built on these).
"""

from hubd.testing.helpers import (
    NodeProcess,
    async_wait_until,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)

__all__ = [
    "NodeProcess",
    "async_wait_until",
    "free_loopback_address",
    "maildir_messages",
    "wait_until",
    "write_config",
]
