"""The operator's changes over a real queue file: selections, bulk changes, a stopped node."""

from __future__ import annotations

import dataclasses
import os
import random
import sqlite3
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
from hubd.routing import Router, RouteTable, redirect_hop
from storage import NewMessage, NewRecipient, RecipientState, Repository, Writer, open_database
from storage.errors import StorageError
from storage.shards import shard_of

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


def _rows(path: Path) -> list[tuple[str, str, int, str | None, float]]:
    with sqlite3.connect(path) as db:
        return list(
            db.execute(
                "SELECT address, next_hop, shard, redirect_to, next_attempt_at FROM recipients"
                " ORDER BY address"
            )
        )


async def test_a_redirect_moves_the_hop_and_its_shard(tmp_path: Path) -> None:
    """On a stopped node sharded for 4 delivery processes, a redirect gives the waiting
    recipients the new next hop, that hop's shard and their target, due now; the claim of
    that shard hands them out with the target; one in delivery is left as it was."""
    data_dir = tmp_path / "node"
    path = data_dir / "queue.db"
    database = await open_database(path, shards=4)
    writer = Writer(database.write_engine)
    writer.start()
    repository = Repository(database, writer, shards=4)
    await repository.enqueue(_message("Q1", "a", "b"))
    await repository.enqueue(_message("Q2", "a"))
    await repository.release("Q1", NOW + 3600)
    leased = await repository.claim_due(time.time(), 1, "run", shard_of("route:b.test", 4))
    assert [r.address for r in leased.recipients] == ["r1@b.test"]
    await writer.stop()
    await database.close()

    target = redirect_hop("127.0.0.9:2525")
    changed = await change_stopped_node(
        data_dir, "redirect", [], now=NOW, every=True, to="127.0.0.9:2525"
    )
    assert changed == {"Q1": 1, "Q2": 1}
    moved = (target.key, shard_of(target.key, 4), "127.0.0.9:2525", NOW)
    assert shard_of("route:a.test", 4) != moved[1]  # so the shard must have moved
    rows = _rows(path)
    assert rows[0] == ("r0@a.test", *moved)
    assert rows[1][:4] == ("r0@a.test", *moved[:3])
    assert rows[2][1:4] == ("route:b.test", shard_of("route:b.test", 4), None)

    database = await open_database(path, shards=4)
    writer = Writer(database.write_engine)
    writer.start()
    try:
        claim = await Repository(database, writer, shards=4).claim_due(NOW, 10, "b", moved[1])
    finally:
        await writer.stop()
        await database.close()
    assert [r.redirect_to for r in claim.recipients] == ["127.0.0.9:2525"] * 2
    with pytest.raises(ValueError, match="--to"):
        await change_stopped_node(data_dir, "retry", ["Q1"], now=NOW, to="127.0.0.9:2525")


async def test_a_flush_makes_deferred_recipients_due_and_leaves_held_ones(
    repository: Repository,
) -> None:
    """make_due() hurries the pending recipients of one hop (or all), never held ones."""
    await repository.enqueue(_message("Q1", "a"))
    await repository.enqueue(_message("Q2", "b"))
    await repository.enqueue(_message("Q3", "a"))
    for queue_id in ("Q1", "Q2", "Q3"):
        await repository.release(queue_id, NOW + 3600)
    await repository.hold("Q3")
    assert await repository.make_due(NOW, "route:a.test") == 1
    assert await repository.make_due(NOW) == 1
    assert await repository.make_due(NOW) == 0
    due = {m.queue_id: m.recipients[0] for m in await repository.list_messages()}
    assert (due["Q1"].next_attempt_at, due["Q2"].next_attempt_at) == (NOW, NOW)
    assert due["Q3"].state is RecipientState.HELD
