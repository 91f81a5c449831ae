"""Helpers for integration tests of mail flows: nodes as processes, waiting, Maildirs.

Public: Cluster (a local cluster for your failover tests; the `hubd_cluster` pytest fixture
in hubd.testing.plugin), wait_until(), async_wait_until(), free_loopback_address(),
NodeProcess, maildir_messages(), write_config().
Limits: loopback only; every wait has a timeout and raises TimeoutError naming what it waited for.
See also: tests/conftest.py (fixtures built on these).
"""

from hubd.config import write_config
from hubd.testing.cluster import Cluster, Sent
from hubd.testing.faultproxy import FaultProxy
from hubd.testing.helpers import (
    NodeProcess,
    async_wait_until,
    child_processes,
    free_loopback_address,
    group_alive,
    maildir_messages,
    wait_until,
)

__all__ = [
    "Cluster",
    "FaultProxy",
    "NodeProcess",
    "Sent",
    "async_wait_until",
    "child_processes",
    "free_loopback_address",
    "group_alive",
    "maildir_messages",
    "wait_until",
    "write_config",
]
