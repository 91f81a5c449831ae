"""Which queued messages a listing selects: by state, next hop, sender, recipient and age.

Owns: QueueFilter, the one meaning of `hubd queue list`'s and the API's filters.
Public: QueueFilter.
Limits: pure, over QueuedMessage values. A message is selected when its sender and age
match and at least one of its recipients matches every recipient criterion given.
Addresses match whole and without regard to case; "@corp.test" matches a domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from storage import QueuedMessage, QueuedRecipient, RecipientState


def _address_matches(address: str, pattern: str) -> bool:
    lowered, wanted = address.lower(), pattern.lower()
    return lowered.endswith(wanted) if wanted.startswith("@") else lowered == wanted


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """What a listing selects; a field left empty selects everything."""

    states: frozenset[RecipientState] = frozenset()
    next_hop: str | None = None
    sender: str | None = None  # "" selects the null sender <>
    recipient: str | None = None
    older_than: float | None = None  # seconds since it was received
    newer_than: float | None = None

    @classmethod
    def build(
        cls,
        *,
        states: Iterable[str] = (),
        next_hop: str | None = None,
        sender: str | None = None,
        recipient: str | None = None,
        older_than: float | None = None,
        newer_than: float | None = None,
    ) -> QueueFilter:
        """From an operator's words; ValueError names an unknown state."""
        known = {s.value for s in RecipientState}
        wanted = {s.upper() for s in states}
        unknown = sorted(wanted - known)
        if unknown:
            raise ValueError(
                f"state: unknown {', '.join(unknown)} (known: {', '.join(sorted(known))})"
            )
        return cls(
            frozenset(RecipientState(s) for s in wanted),
            next_hop or None,
            sender,
            recipient or None,
            older_than,
            newer_than,
        )

    def _recipient_matches(self, recipient: QueuedRecipient) -> bool:
        if self.states and recipient.state not in self.states:
            return False
        if self.next_hop is not None and recipient.next_hop != self.next_hop:
            return False
        return self.recipient is None or _address_matches(recipient.address, self.recipient)

    def matches(self, message: QueuedMessage, now: float) -> bool:
        """Whether `message` is selected, at time `now`."""
        if self.sender is not None:
            if self.sender in ("", "<>"):
                if message.sender:
                    return False
            elif not _address_matches(message.sender, self.sender):
                return False
        age = now - message.received_at
        if self.older_than is not None and age < self.older_than:
            return False
        if self.newer_than is not None and age >= self.newer_than:
            return False
        return any(self._recipient_matches(r) for r in message.recipients)

    def select(self, messages: Iterable[QueuedMessage], now: float) -> list[QueuedMessage]:
        return [m for m in messages if self.matches(m, now)]
