"""Turning one courier result into a recipient's next state and its tracking event.

Owns: delivered / deferred (with the next attempt time) / failed (5xx, or expired).
Public: Decision, decide_outcome().
Failures: none raised.
See also: delivery/retry.py (the schedule), delivery/scheduler.py (the caller).
"""

from __future__ import annotations

from dataclasses import dataclass

from hubd.delivery.courier import RecipientResult
from hubd.delivery.retry import EXPIRED, RetryPolicy, next_attempt
from hubd.routing import HopKind, NextHop
from hubd.tracking import TrackingEvent
from storage import RecipientOutcome, RecipientState

NO_SPACE_RETRY = 5.0  # seconds: how soon a delivery that found our disk full is tried again


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: RecipientOutcome
    event: TrackingEvent


def decide_outcome(
    result: RecipientResult,
    hop: NextHop,
    policy: RetryPolicy,
    *,
    now: float,
    delay_due: bool = False,
) -> Decision:
    """The recipient's new state after this result; `delay_due` marks a delay warning sent."""
    recipient = result.recipient
    if result.no_space:
        # Not the recipient's fault nor an attempt: tried again soon, so a disk that gets
        # space back delivers within seconds, and the retry schedule is not used up.
        outcome = RecipientOutcome(
            recipient,
            RecipientState.PENDING,
            hop.key,
            result.reply,
            now + NO_SPACE_RETRY,
            delay_due,
            counted=False,
        )
        return Decision(outcome, TrackingEvent.DEFER)
    if result.duplicate:
        outcome = RecipientOutcome(recipient, RecipientState.DELIVERED, hop.key, result.reply)
        return Decision(outcome, TrackingEvent.DUPLICATE)
    if result.delivered:
        event = TrackingEvent.DELIVER if hop.kind is HopKind.LOCAL else TrackingEvent.SEND
        state = RecipientState.SHADOWED if result.shadow else RecipientState.DELIVERED
        outcome = RecipientOutcome(
            recipient, state, hop.key, result.reply, shadow=result.shadow, final=result.final
        )
        return Decision(outcome, event)
    if result.transient:
        when = next_attempt(
            policy, received_at=recipient.received_at, attempts=recipient.attempts + 1, now=now
        )
        if when != EXPIRED:
            outcome = RecipientOutcome(
                recipient, RecipientState.PENDING, hop.key, result.reply, float(when), delay_due
            )
            return Decision(outcome, TrackingEvent.DEFER)
        reply = f"{result.reply} (expired: message too old to retry)"
        return Decision(
            RecipientOutcome(recipient, RecipientState.FAILED, hop.key, reply), TrackingEvent.FAIL
        )
    failed = RecipientOutcome(recipient, RecipientState.FAILED, hop.key, result.reply)
    return Decision(failed, TrackingEvent.FAIL)
