"""The delivery scheduler: claims due recipients and runs them through per-next-hop queues.

Owns: the loop that leases due work from storage, groups it by message and next hop, bounds
concurrency per next hop, and records each result (delivered, deferred, failed) with its
tracking line.
Public: Scheduler.
Failures: a courier that raises is logged and its recipients deferred with 451 4.3.0.
Limits: at most `max_in_flight` recipients are leased at once; one scheduler per delivery
shard (every recipient of a next hop is in one shard, so per-hop state lives here).
See also: delivery/retry.py (when to retry), storage/repository.py (claim and record).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from hubd.delivery.courier import Courier, DeliveryJob, RecipientResult
from hubd.delivery.notices import Notifier, returnable
from hubd.delivery.outcomes import decide_outcome
from hubd.delivery.retry import RetryPolicy
from hubd.routing import HopKind, NextHop, Router, hop_of
from hubd.shadow.client import record_discard
from hubd.signals import Signals
from hubd.tracking import Tracker, TrackingEvent
from storage import Claim, ClaimedRecipient, Repository, StoredBody
from storage.errors import is_disk_full, log_failure

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Job:
    """One message's recipients for one next hop, as dispatched from a claim."""

    hop: NextHop
    recipients: list[ClaimedRecipient]
    body: StoredBody | None  # None: too big to come with the claim, read it apart
    busy: bool = False  # another copy of the same origin key is in delivery: wait
    duplicates: frozenset[str] = frozenset()  # lower-cased addresses already delivered
    reserved: frozenset[tuple[str, str]] = frozenset()


IDLE_POLL_SECONDS = 30.0  # upper bound on a sleep, in case a wake-up is ever missed
STORAGE_RETRY_SECONDS = 1.0  # after a claim or a record that failed (a full disk, say)


class Scheduler:
    """Runs deliveries for one node."""

    def __init__(
        self,
        *,
        repository: Repository,
        router: Router,
        couriers: Mapping[HopKind, Courier],
        policy: RetryPolicy,
        notifier: Notifier,
        tracker: Tracker,
        clock: Callable[[], float],
        owner: str,
        concurrency_per_hop: int,
        signals: Signals,
        shard: int = 0,
        max_in_flight: int = 512,
        claim_batch: int = 256,
    ) -> None:
        self._repository = repository
        self._router = router
        self._couriers = couriers
        self._policy = policy
        self._notifier = notifier
        self._signals = signals
        self._shard = shard
        # (origin key, recipient) pairs being delivered now, so two copies never race, and
        # those whose final delivery committed since the last claim was dispatched.
        self._final_keys: set[tuple[str, str]] = set()
        self._just_finalized: set[tuple[str, str]] = set()
        self._tracker = tracker
        self._clock = clock
        self._owner = owner
        self._concurrency = concurrency_per_hop
        self._max_in_flight = max_in_flight
        self._claim_batch = claim_batch
        self._hop_slots: dict[str, asyncio.Semaphore] = {}
        # Next hops that just failed as a whole: until when, and the reply that said so.
        self._hop_down: dict[str, tuple[float, int, str]] = {}
        self._in_flight = 0
        self._jobs: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()

    def wake(self) -> None:
        """New work may be due now (a message was committed, or a job finished)."""
        self._wake.set()

    def flush(self) -> None:
        """An operator's retry (postqueue -f): next hops known down are tried again."""
        self._hop_down.clear()
        self._wake.set()

    async def stop(self, grace: float) -> None:
        """Stop claiming, let jobs in flight finish for up to `grace` seconds, then cancel them."""
        self._stopping = True
        self._wake.set()
        await self._stopped.wait()
        if self._jobs:
            _, pending = await asyncio.wait(self._jobs, timeout=grace)
            for job in pending:
                job.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._repository.release_leases(self._owner)

    async def run(self) -> None:
        """Claim and dispatch due work until stop() (which then drains the jobs)."""
        try:
            while not self._stopping:
                try:
                    claim = await self._claim()
                except Exception as error:
                    log_failure(log, "claiming due work", error)
                    # Soon again, not at the idle poll: space coming back must resume work.
                    claim = Claim(next_due=self._clock() + STORAGE_RETRY_SECONDS)
                if claim.recipients:
                    self._dispatch(claim)
                    if claim.next_due is None:
                        continue  # the claim filled up: more may be due now
                await self._sleep(claim.next_due)
        finally:
            self._stopped.set()

    async def _claim(self) -> Claim:
        room = min(self._max_in_flight - self._in_flight, self._claim_batch)
        if room <= 0:
            return Claim()
        return await self._repository.claim_due(self._clock(), room, self._owner, self._shard)

    async def _sleep(self, due: float | None) -> None:
        # The event is cleared only after waking: a commit that woke us while the claim ran
        # is then seen by the next claim, which starts after it.
        timeout = IDLE_POLL_SECONDS
        if due is not None:
            timeout = min(max(due - self._clock(), 0.0), IDLE_POLL_SECONDS)
        if not self._stopping:
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
        self._wake.clear()

    def _dispatch(self, claim: Claim) -> None:
        groups: dict[tuple[int, NextHop], list[ClaimedRecipient]] = defaultdict(list)
        for recipient in claim.recipients:
            hop = hop_of(self._router, recipient.address, recipient.redirect_to)
            groups[(recipient.message, hop)].append(recipient)
        for (message, hop), recipients in groups.items():
            job = self._reserve(hop, recipients, claim.bodies.get(message), claim.delivered)
            self._in_flight += len(recipients)
            task = asyncio.create_task(self._run_job(job), name=f"deliver-{hop.key}")
            self._jobs.add(task)
            task.add_done_callback(self._jobs.discard)
        # Every claim from now on reads the outcomes behind these keys itself.
        self._just_finalized.clear()

    def _reserve(
        self,
        hop: NextHop,
        recipients: list[ClaimedRecipient],
        body: StoredBody | None,
        delivered: frozenset[tuple[str, str]],
    ) -> _Job:
        """Decide, before any await, which recipients are duplicates or must wait.

        The claim read the final-hop duplicate check in its own transaction; a copy whose
        outcome committed after that read is either still reserved here (so this one
        waits) or in `_just_finalized` (so this one is a duplicate).
        """
        origin = recipients[0].origin
        keys = {(origin, r.address.lower()) for r in recipients}
        if keys & self._final_keys:
            return _Job(hop, recipients, body, busy=True)
        self._final_keys |= keys
        seen = {address for _, address in keys & (delivered | self._just_finalized)}
        return _Job(hop, recipients, body, duplicates=frozenset(seen), reserved=frozenset(keys))

    async def _run_job(self, job: _Job) -> None:
        final: set[tuple[str, str]] = set()
        try:
            slots = self._hop_slots.setdefault(job.hop.key, asyncio.Semaphore(self._concurrency))
            async with slots:
                body = job.body
                if body is None:
                    body = await self._repository.load_body(job.recipients[0].message)
                results = await self._attempt(job, body)
            final = await self._record_until_stored(job.hop, job.recipients[0], body, results)
        except Exception as error:
            log_failure(log, f"delivery job for {job.recipients[0].queue_id}", error)
        finally:
            # Held until the outcome is committed, so that another copy's check sees it.
            self._final_keys -= job.reserved
            self._just_finalized |= final
            self._in_flight -= len(job.recipients)
            self._wake.set()

    async def _attempt(self, job: _Job, body: StoredBody | None) -> list[RecipientResult]:
        hop = job.hop
        down = self._hop_down.get(hop.key)
        if down is not None and down[0] > self._clock():
            # The queue waits: no new connection attempts while the next hop is known down.
            _, code, text = down
            return [
                RecipientResult(r, code, f"{text} (next hop down; not tried)")
                for r in job.recipients
            ]
        results = await self._try(job, body)
        if results and all(r.hop_down for r in results):
            # Only unreachable hosts get here; the recipients not tried meanwhile defer,
            # never fail: a 5xx comes only from a recipient's own attempt.
            code = results[0].code if results[0].transient else 451
            self._hop_down[hop.key] = (
                self._clock() + self._policy.intervals[0],
                code,
                results[0].text,
            )
        elif any(r.delivered for r in results):
            self._hop_down.pop(hop.key, None)
        return results

    async def _try(self, job: _Job, body: StoredBody | None) -> list[RecipientResult]:
        hop, recipients = job.hop, job.recipients
        first = recipients[0]
        courier = self._couriers.get(hop.kind)
        if courier is None:
            text = f"4.4.0 No courier for {hop.kind} next hops"
            return [RecipientResult(r, 451, text) for r in recipients]
        if body is None:
            return [RecipientResult(r, 451, "4.3.0 Message body missing") for r in recipients]
        if job.busy:
            # Another copy of this origin key is in delivery, or its outcome is not committed
            # yet: wait for it, so that the duplicate check sees that outcome.
            text = "4.3.0 Another copy of this message is in delivery"
            return [RecipientResult(r, 451, text) for r in recipients]
        to_send = [r for r in recipients if r.address.lower() not in job.duplicates]
        results = [
            RecipientResult(r, 250, f"2.0.0 Duplicate of {first.origin} dropped", duplicate=True)
            for r in recipients
            if r.address.lower() in job.duplicates
        ]
        if not to_send:
            return results
        delivery = DeliveryJob(
            hop,
            first.queue_id,
            first.sender,
            first.received_at,
            first.message_id,
            body,
            to_send,
            first.origin,
        )
        try:
            return results + await courier.deliver(delivery)
        except Exception as error:
            log.exception("courier %s failed on %s", hop.key, first.queue_id)
            text = f"4.3.0 Local delivery error: {error}"
            return results + [RecipientResult(r, 451, text) for r in to_send]

    async def _record_until_stored(
        self,
        hop: NextHop,
        first: ClaimedRecipient,
        body: StoredBody | None,
        results: list[RecipientResult],
    ) -> set[tuple[str, str]]:
        """_record(), tried again while the disk is full: what was delivered must be
        recorded as delivered once space returns, not tried again after a restart."""
        while True:
            try:
                return await self._record(hop, first, body, results)
            except Exception as error:
                if self._stopping or not is_disk_full(error):
                    raise
                log_failure(log, f"recording the outcome of {first.queue_id}", error)
            await asyncio.sleep(STORAGE_RETRY_SECONDS)

    async def _record(
        self,
        hop: NextHop,
        first: ClaimedRecipient,
        body: StoredBody | None,
        results: list[RecipientResult],
    ) -> set[tuple[str, str]]:
        """Commit the results (and the DSNs they cause), log them; returns the origin keys
        that reached their final hop."""
        now = self._clock()
        decisions = [
            decide_outcome(
                result,
                hop,
                self._policy,
                now=now,
                delay_due=self._notifier.delay_due(result.recipient, now),
            )
            for result in results
        ]
        notices = self._notifier.notices(
            hop=hop,
            first=first,
            body=returnable(body),
            results=results,
            decisions=decisions,
            now=now,
        )
        settled = await self._repository.record_outcomes(
            [d.outcome for d in decisions], [n.message for n in notices], now=now
        )
        if settled.left:
            self._signals.left(settled.left)
        for decision, result in zip(decisions, results, strict=True):
            self._tracker.record(
                decision.event,
                queue_id=first.queue_id,
                sender=first.sender,
                recipients=[result.recipient.address],
                message_id=first.message_id,
                next_hop=hop.key,
                reply=decision.outcome.reply,
                size=first.size,
                remote=result.remote or None,
                attempt=result.recipient.attempts + 1,
            )
            if result.shadow is not None:
                self._tracker.record(
                    TrackingEvent.SHADOW,
                    queue_id=first.queue_id,
                    sender=first.sender,
                    recipients=[result.recipient.address],
                    message_id=first.message_id,
                    next_hop=result.shadow.peer_address,
                    reply=f"shadow held; {result.shadow.peer_name} has it as "
                    f"{result.shadow.peer_queue_id}",
                )
        for shadow in settled.discarded:
            # The peer's notice came before this shadow was recorded (an early discard).
            record_discard(
                self._tracker,
                queue_id=first.queue_id,
                sender=first.sender,
                recipients=[r.recipient.address for r in results if r.shadow == shadow],
                peer_address=shadow.peer_address,
                peer_name=shadow.peer_name,
                peer_queue_id=shadow.peer_queue_id,
                message_id=first.message_id,
            )
        for notice in notices:
            self._tracker.record(
                TrackingEvent.DSN,
                queue_id=first.queue_id,
                sender=first.sender,
                recipients=list(notice.recipients),
                message_id=first.message_id,
                reply=notice.kind,
                dsn_queue_id=notice.message.queue_id,
            )
        if notices:
            self._signals.work(r.next_hop for n in notices for r in n.message.recipients)
        return {
            (first.origin, d.outcome.recipient.address.lower())
            for d in decisions
            if d.outcome.final
        }
