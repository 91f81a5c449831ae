"""Spooled bodies: durable files beside the queue, read back in chunks, cleaned up after."""

from __future__ import annotations

import time

from storage import NewMessage, NewRecipient, RecipientOutcome, RecipientState, Repository


def _spooled(repository: Repository, queue_id: str, text: bytes) -> NewMessage:
    spool = repository.database.spool
    spool.prepare()
    file = spool.open()
    for start in range(0, len(text), 1000):
        file.write(text[start : start + 1000])
    return NewMessage(
        queue_id,
        "a@x.test",
        [NewRecipient("b@y.test", "route:y.test")],
        b"Received: by test\r\n",
        time.time() - 1,
        None,
        f"n.i.{queue_id}",
        "client",
        spooled=file.keep(queue_id),
    )


class TestSpool:
    async def test_round_trip_and_clean_up(self, repository: Repository) -> None:
        """A spooled body is read back whole, in chunks; its file goes once it is delivered."""
        text = b"Subject: big\r\n\r\n" + b"x" * 200_000 + b"\r\n"
        await repository.enqueue(_spooled(repository, "Q1", text))
        claim = await repository.claim_due(time.time(), 10, "run-1")
        (recipient,) = claim.recipients
        assert recipient.size == len(b"Received: by test\r\n") + len(text)
        assert claim.bodies == {}  # never read inside the write transaction
        body = await repository.load_body(recipient.message)
        assert body is not None
        assert b"".join(body.chunks()) == b"Received: by test\r\n" + text
        assert max(len(c) for c in body.chunks()) <= 1 << 16
        path = repository.database.spool.path("Q1")
        assert path.exists()
        done = RecipientOutcome(recipient, RecipientState.DELIVERED, "route:y.test", "250 ok")
        await repository.record_outcomes([done])
        assert await repository.collect_spool_garbage() == ["Q1"]
        assert await repository.collect_spool_garbage() == []

    async def test_start_up_sweeps_what_no_row_refers_to(self, repository: Repository) -> None:
        """Files of half-received bodies, and unreferenced ones, are deleted; queued ones kept."""
        await repository.enqueue(_spooled(repository, "Q1", b"kept\r\n"))
        spool = repository.database.spool
        orphan = spool.open()
        orphan.write(b"committed nowhere\r\n")
        orphan.keep("Q2")
        half = spool.open()
        half.write(b"half received")  # as a node killed mid-DATA leaves it
        try:
            assert await repository.sweep_spool() == 2
        finally:
            half.discard()
        assert sorted(p.name for p in spool.directory.iterdir() if p.is_file()) == ["Q1"]
        assert list(spool.tmp.iterdir()) == []
