"""An operator's removal: the upstream holding a shadow is owed its notice, in the same step."""

from __future__ import annotations

import time

from storage import NewMessage, NewRecipient, Repository, ShadowLedger

NOW = 1_700_000_000.0


def _message(queue_id: str, upstream: str = "") -> NewMessage:
    return NewMessage(
        queue_id,
        "a@x.test",
        [NewRecipient("b@y.test", "route:y.test")],
        b"Subject: x\r\n\r\nx\r\n",
        time.time() - 1,
        None,
        f"n.i.{queue_id}",
        "client",
        upstream=upstream,
        upstream_incarnation="inc-1" if upstream else "",
    )


async def test_remove_owes_the_upstream_its_notice(repository: Repository) -> None:
    """Removing a message taken from a shadowing upstream lists it in the next XQDISCARD,
    so the upstream drops its shadow instead of resubmitting what was removed."""
    ledger = ShadowLedger(repository._writer, repository.database.read_engine)
    await ledger.register_upstream("up", "inc-1", NOW)
    await repository.enqueue(_message("Q1", upstream="up"))
    await repository.enqueue(_message("Q2"))
    assert await repository.remove("Q1", NOW)
    assert await repository.remove("Q2", NOW)
    assert not await repository.remove("Q1", NOW)
    assert await repository.list_messages() == []
    ids, _ = await ledger.discard_notices("up", "inc-1", None, 10, NOW)
    assert ids == ["Q1"]
