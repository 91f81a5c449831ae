"""The operator's changes over a real queue file: selections, bulk changes, a stopped node."""

from __future__ import annotations

import dataclasses
import os
import random
import time
from pathlib import Path

import pytest

from hubd import queue_changes
from hubd.config import parse_config
from hubd.datadir import acquire_data_dir
from hubd.delivery.notices import notifier_for
from hubd.queue_changes import (
    NodeRunning,
    apply_change,
    change_stopped_node,
    removal_dsns,
    select_ids,
)
from hubd.routing import Router, RouteTable
from storage import NewMessage, NewRecipient, RecipientState, Repository, Writer, open_database
from storage.errors import StorageError

NOW = 1_700_000_000.0


def _message(queue_id: str, *hops: str) -> NewMessage:
    return NewMessage(
        queue_id,
        "a@x.test",
        [NewRecipient(f"r{i}@{hop}.test", f"route:{hop}.test") for i, hop in enumerate(hops)],
        b"Subject: x\r\n\r\nx\r\n",
        time.time() - 1,
        None,
        f"n.i.{queue_id}",
        "client",
    )


async def test_select_by_hop_and_all(repository: Repository) -> None:
    """--hop picks each message with a recipient for that hop; ALL picks every one."""
    await repository.enqueue(_message("Q1", "a"))
    await repository.enqueue(_message("Q2", "b", "a"))
    await repository.enqueue(_message("Q3", "b"))
    listed = await repository.list_messages()
    assert sorted(select_ids(listed, hop="route:a.test")) == ["Q1", "Q2"]
    assert sorted(select_ids(listed, every=True)) == ["Q1", "Q2", "Q3"]
    assert select_ids(listed, hop="route:none.test") == []


async def test_bulk_changes_in_chunks(
    repository: Repository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change of many messages goes through in chunks and reports each id once."""
    monkeypatch.setattr(queue_changes, "CHUNK", 2)
    ids = [f"Q{n}" for n in range(5)]
    for queue_id in ids:
        await repository.enqueue(_message(queue_id, "a"))
    held = await apply_change(repository, "suspend", [*ids, "Q0", "NONE"], NOW)
    assert held == {**dict.fromkeys(ids, 1), "NONE": 0}
    states = {r.state for m in await repository.list_messages() for r in m.recipients}
    assert states == {RecipientState.HELD}
    removed = await apply_change(repository, "remove", ids[:3], NOW)
    assert removed == dict.fromkeys(ids[:3], 1)
    assert [m.queue_id for m in await repository.list_messages()] == ids[3:]


async def test_stopped_node_changes_and_running_node_refused(tmp_path: Path) -> None:
    """Under its lock a stopped node's queue is changed; a held lock names its holder."""
    data_dir = tmp_path / "node"
    database = await open_database(data_dir / "queue.db")
    writer = Writer(database.write_engine)
    writer.start()
    await Repository(database, writer).enqueue(_message("Q1", "a"))
    await writer.stop()
    await database.close()
    assert await change_stopped_node(data_dir, "remove", ["Q1"], now=NOW) == {"Q1": 1}
    with (
        acquire_data_dir(data_dir),
        pytest.raises(NodeRunning, match=r"is running \(pid \d+\)"),
    ):
        await change_stopped_node(data_dir, "retry", [], now=NOW, every=True)


async def test_no_queue_creates_nothing(tmp_path: Path) -> None:
    """A directory with no queue is refused before any file (not even the lock) is made."""
    with pytest.raises(StorageError, match="no queue database here"):
        await change_stopped_node(tmp_path, "retry", ["Q1"], now=NOW)
    assert os.listdir(tmp_path) == []


async def test_remove_with_dsn(repository: Repository) -> None:
    """remove --dsn queues, in the removal's transaction, one failure DSN to the sender
    naming each waiting recipient and the operator's 5.0.0."""
    await repository.enqueue(_message("Q1", "a", "b"))
    await repository.enqueue(dataclasses.replace(_message("Q2", "a"), sender=""))
    config = parse_config({"node": {"hostname": "hub.test"}, "queue": {"double_bounce_to": ""}})
    router = Router([], RouteTable([]))
    notices = removal_dsns(notifier_for(config, router, "inc", random.Random(1)), router, NOW)
    assert await apply_change(repository, "remove", ["Q1", "Q2"], NOW, notices=notices) == {
        "Q1": 1,
        "Q2": 1,
    }
    (dsn,) = await repository.list_messages()  # none for mail from <>: nowhere to go
    assert dsn.sender == ""
    assert [r.address for r in dsn.recipients] == ["a@x.test"]
    body = await repository.body_of(dsn.queue_id)
    assert body is not None
    text = b"".join(body.chunks()).decode()
    assert "5.0.0 Removed from the queue by its operator" in text
    assert "r0@a.test" in text
    assert "r1@b.test" in text
