"""Queues written by hubd 0.1 (schema 1) are migrated at start-up and their mail delivered.

The two dumps in data/queue-v1/ were written by hubd 0.1 itself: hub-a relayed three
messages to hub-b under XSHADOW (hub-a holds their shadows) while hub-b's next hop, the
mailstore, was down (hub-b holds them, owing hub-a discard notices); a fourth waits at
hub-a for a next hop that stays down. Addresses are the ones the dumps name.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from hubd.testing import async_wait_until, maildir_messages
from storage.migrate import head_revision
from tests.conftest import NodeFactory

pytestmark = pytest.mark.integration

DUMPS = Path(__file__).parent / "data" / "queue-v1"
HUB_A = ("127.0.211.1", 25251)
HUB_B = ("127.0.211.2", 25252)
MAILSTORE = ("127.0.211.3", 25253)
# The dumps' messages were received on the day they were made: keep them from expiring.
AGELESS = {
    "queue": {"retry": ["1s"], "expiry": "36500d"},
    "shadow": {"heartbeat_interval": "1s", "auto_discard": "36500d", "dedup_window": "36500d"},
}


def _load(dump: str, data_dir: Path) -> Path:
    data_dir.mkdir(parents=True)
    path = data_dir / "queue.db"
    conn = sqlite3.connect(path)
    conn.executescript((DUMPS / dump).read_text())
    conn.close()
    return path


def _query(path: Path, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


class TestUpgradeFromSchemaOne:
    async def test_migrated_keeping_incarnations_and_delivered(
        self, start_node: NodeFactory, tmp_path: Path
    ) -> None:
        """Both queues reach the newest revision with their incarnations, and all mail flows."""
        a_db = _load("hub-a.sql", tmp_path / "hub-a")
        b_db = _load("hub-b.sql", tmp_path / "hub-b")
        incarnations = {
            p: _query(p, "SELECT value FROM meta WHERE key='incarnation'") for p in (a_db, b_db)
        }
        mailstore = await start_node(
            "mbx", address=MAILSTORE, local_domains=["corp.test"], **AGELESS
        )
        await start_node(
            "hub-b",
            address=HUB_B,
            routes=[{"domains": ["corp.test"], "next_hops": [f"{MAILSTORE[0]}:{MAILSTORE[1]}"]}],
            **AGELESS,
        )
        await start_node(
            "hub-a",
            address=HUB_A,
            routes=[
                {"domains": ["corp.test"], "next_hops": [f"{HUB_B[0]}:{HUB_B[1]}"]},
                {"domains": ["example.org"], "next_hops": ["127.0.211.9:25259"]},
            ],
            **AGELESS,
        )
        for path, incarnation in incarnations.items():
            assert _query(path, "SELECT value FROM meta WHERE key='incarnation'") == incarnation
            assert _query(path, "SELECT version_num FROM alembic_version") == [(head_revision(),)]
        boxes = mailstore.config.mailbox_dir
        delivered = await async_wait_until(
            lambda: (found := maildir_messages(boxes)) and len(found) == 3 and found,
            within=30,
            what="the three relayed messages in the mailstore",
        )
        assert sorted(b"v1 message" in body for body in delivered.values()) == [True] * 3
        # hub-b delivered and told hub-a, which drops its shadows; the fourth still waits.
        await async_wait_until(
            lambda: _query(a_db, "SELECT count(*) FROM shadows") == [(0,)],
            within=30,
            what="hub-a's shadows discarded",
        )
        assert _query(a_db, "SELECT address, state FROM recipients") == [
            ("bob@example.org", "PENDING")
        ]
