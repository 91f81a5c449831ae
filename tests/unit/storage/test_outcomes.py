"""Outcomes recorded in bulk: only by the lease holder, settled together, deduplicated."""

from __future__ import annotations

import asyncio
import time

from storage import (
    NewMessage,
    NewRecipient,
    RecipientOutcome,
    RecipientState,
    Repository,
)


def _message(queue_id: str, *addresses: str, origin: str = "") -> NewMessage:
    return NewMessage(
        queue_id,
        "a@x.test",
        [NewRecipient(address, "route:y.test") for address in addresses],
        b"Subject: x\r\n\r\nx\r\n",
        time.time() - 1,
        None,
        origin or f"n.i.{queue_id}",
        "client",
    )


class TestRecordOutcomes:
    async def test_a_stale_lease_cannot_overwrite(self, repository: Repository) -> None:
        """An outcome from a run that no longer holds the lease changes nothing."""
        await repository.enqueue(_message("Q1", "b@y.test"))
        (claimed,) = (await repository.claim_due(time.time(), 10, "run-1")).recipients
        await repository.release_leases()
        (again,) = (await repository.claim_due(time.time(), 10, "run-2")).recipients
        assert again.recipient_id == claimed.recipient_id
        late = RecipientOutcome(claimed, RecipientState.DELIVERED, "route:y.test", "250 late")
        settled = await repository.record_outcomes([late])
        assert settled.finished == ()
        (message,) = await repository.list_messages("Q1")
        assert message.recipients[0].state is RecipientState.PENDING
        current = RecipientOutcome(again, RecipientState.DELIVERED, "route:y.test", "250 ok")
        assert (await repository.record_outcomes([current])).finished == ("Q1",)

    async def test_jobs_in_one_batch_settle_their_own_messages(
        self, repository: Repository
    ) -> None:
        """Concurrent jobs' outcomes share a commit, and each learns what left of its own."""
        await repository.enqueue(_message("Q1", "b@y.test", "c@y.test"))
        await repository.enqueue(_message("Q2", "d@y.test"))
        claim = await repository.claim_due(time.time(), 10, "run-1")
        by_queue = {r.address: r for r in claim.recipients}

        def done(address: str) -> RecipientOutcome:
            return RecipientOutcome(
                by_queue[address], RecipientState.DELIVERED, "route:y.test", "250 ok"
            )

        first, second = await asyncio.gather(
            repository.record_outcomes([done("b@y.test")]),
            repository.record_outcomes([done("d@y.test")]),
        )
        assert (first.finished, second.finished) == ((), ("Q2",))
        last = await repository.record_outcomes([done("c@y.test")])
        assert last.left == ("Q1",)
        assert last.finished == ("Q1",)
        assert await repository.list_messages() == []

    async def test_the_claim_reports_final_deliveries_of_its_origin_keys(
        self, repository: Repository
    ) -> None:
        """A second copy of an origin key is claimed with the first copy's final delivery."""
        await repository.enqueue(_message("Q1", "B@y.test", origin="hub.1.Q1"))
        (first,) = (await repository.claim_due(time.time(), 10, "run-1")).recipients
        await repository.record_outcomes(
            [RecipientOutcome(first, RecipientState.DELIVERED, "local", "250", final=True)]
        )
        await repository.enqueue(_message("Q2", "b@y.test", origin="hub.1.Q1"))
        claim = await repository.claim_due(time.time(), 10, "run-1")
        assert claim.delivered == frozenset({("hub.1.Q1", "b@y.test")})
