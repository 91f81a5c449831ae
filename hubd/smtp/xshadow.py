"""The downstream side of XSHADOW: the XSHADOW, XQDISCARD and XQTAKEN verbs, XORIGIN, XHOLD.

Owns: who may use each verb and when (a peer, after EHLO, outside a transaction, XSHADOW
first and once), their argument checks, and the action each asks for.
Public: check_verb(), xshadow(), xqdiscard(), xqtaken(), check_origin(), check_hold().
Failures: none raised; every refusal is a Reply.
See also: docs/xshadow.md, hubd/smtp/session.py (dispatches here),
hubd/smtp/executor.py (runs the bookkeeping against storage/shadows.py).
"""

from __future__ import annotations

from hubd import replies
from hubd.replies import Reply
from hubd.shadow.protocol import (
    Hello,
    parse_discard,
    parse_hello,
    parse_hold,
    parse_taken,
    valid_origin,
)
from hubd.smtp.actions import DropTaken, ListNotices, RegisterUpstream
from hubd.smtp.policy import ShadowOffer


def check_verb(*, extended: bool, in_transaction: bool) -> Reply | None:
    """The refusal every XSHADOW verb shares, or None when it may go on."""
    if not extended:
        return replies.NEEDS_EHLO
    if in_transaction:
        return replies.XSHADOW_IN_TRANSACTION
    return None


def xshadow(
    offer: ShadowOffer, client_ip: str, upstream: Hello | None, argument: str
) -> Reply | RegisterUpstream:
    """`XSHADOW <name> <incarnation>`: only from a peer, once per session."""
    if not offer.is_peer(client_ip):
        return replies.XSHADOW_NOT_A_PEER
    if upstream is not None:
        return replies.XSHADOW_ALREADY
    hello = parse_hello(argument)
    if hello is None:
        return replies.XSHADOW_BAD_ARGUMENT
    return RegisterUpstream(hello)


def xqdiscard(upstream: Hello | None, argument: str) -> Reply | ListNotices:
    """`XQDISCARD <max> [ACK=<seq>]`, after XSHADOW."""
    if upstream is None:
        return replies.XSHADOW_NEEDED
    parsed = parse_discard(argument)
    if parsed is None:
        return replies.XSHADOW_BAD_ARGUMENT
    limit, ack = parsed
    return ListNotices(upstream, limit, ack)


def xqtaken(upstream: Hello | None, argument: str) -> Reply | DropTaken:
    """`XQTAKEN <id>...`, after XSHADOW."""
    if upstream is None:
        return replies.XSHADOW_NEEDED
    ids = parse_taken(argument)
    if ids is None:
        return replies.XSHADOW_BAD_ARGUMENT
    return DropTaken(upstream, tuple(ids))


def check_origin(upstream: Hello | None, origin: str) -> Reply | None:
    """The refusal of an XORIGIN parameter, or None when it may be used."""
    if upstream is None:
        return replies.ORIGIN_NEEDS_XSHADOW
    if not valid_origin(origin):
        return replies.BAD_ORIGIN
    return None


def check_hold(upstream: Hello | None, origin: str, hold: str) -> Reply | None:
    """The refusal of an XHOLD parameter (a redundancy copy), or None when it may be used.

    Only the accepting node asks for one, so the origin key must be the sender's own.
    """
    if upstream is None:
        return replies.HOLD_NEEDS_XSHADOW
    if parse_hold(hold) is None:
        return replies.BAD_HOLD
    if not origin.startswith(f"{upstream.name}.{upstream.incarnation}."):
        return replies.HOLD_NEEDS_OWN_ORIGIN
    return None
