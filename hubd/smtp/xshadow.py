"""The downstream side of XSHADOW: the XSHADOW, XQDISCARD and XQTAKEN verbs and XORIGIN.

Owns: who may speak XSHADOW (`[shadow] peers`), the replies of the three verbs, and the
bookkeeping they cause (upstream registered, notices listed and forgotten, taken-over
messages dropped and logged DUPLICATE).
Public: ShadowServer.
Failures: none raised into the session; every outcome is a reply.
See also: docs/xshadow.md, storage/shadows.py, hubd/smtp/server.py (dispatches here).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence

from hubd.replies import Reply
from hubd.shadow.protocol import (
    VERSION,
    Hello,
    format_discard_reply,
    format_hello_reply,
    parse_discard,
    parse_hello,
    parse_taken,
    valid_origin,
)
from hubd.smtp.session import HubSession
from hubd.tracking import Tracker, TrackingEvent
from storage.shadows import AckTooHigh, ShadowLedger

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

NOT_A_PEER = Reply(550, "5.7.1", "XSHADOW is only for peers")
BAD_ARGUMENT = Reply(501, "5.5.4", "Syntax error in XSHADOW arguments")
ALREADY = Reply(503, "5.5.1", "XSHADOW already given in this session")
NEEDS_XSHADOW = Reply(503, "5.5.1", "Send XSHADOW first")
ORIGIN_NEEDS_XSHADOW = Reply(555, "5.5.4", "XORIGIN is accepted only after XSHADOW")
BAD_ORIGIN = Reply(501, "5.5.4", "Malformed XORIGIN")
IN_TRANSACTION = Reply(503, "5.5.1", "Not inside a mail transaction")


def client_ip(session: HubSession) -> str:
    """The client's IP address (aiosmtpd keeps the socket's peername)."""
    peer = session.peer
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class ShadowServer:
    """Answers XSHADOW verbs for one node."""

    def __init__(
        self,
        *,
        me: Hello,
        peers: Sequence[IPNetwork],
        ledger: ShadowLedger,
        tracker: Tracker,
        clock: Callable[[], float],
    ) -> None:
        self._me = me
        self._peers = peers
        self._ledger = ledger
        self._tracker = tracker
        self._clock = clock

    def is_peer(self, client_ip: str) -> bool:
        try:
            address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        except ValueError:
            return False
        return any(address in network for network in self._peers)

    def extension(self) -> str:
        """The EHLO line, as the last before HELP."""
        return f"250-XSHADOW {VERSION}"

    async def xshadow(self, session: HubSession, argument: str | None) -> str:
        if not self.is_peer(client_ip(session)):
            return str(NOT_A_PEER)
        if session.upstream is not None:
            return str(ALREADY)
        hello = parse_hello(argument)
        if hello is None:
            return str(BAD_ARGUMENT)
        await self._ledger.register_upstream(hello.name, hello.incarnation, self._clock())
        session.upstream = hello
        return format_hello_reply(self._me)

    async def xqdiscard(self, session: HubSession, argument: str | None) -> list[str]:
        if session.upstream is None:
            return [str(NEEDS_XSHADOW)]
        parsed = parse_discard(argument)
        if parsed is None:
            return [str(BAD_ARGUMENT)]
        limit, ack = parsed
        upstream = session.upstream
        try:
            ids, seq = await self._ledger.discard_notices(
                upstream.name, upstream.incarnation, ack, limit, self._clock()
            )
        except AckTooHigh as error:
            return [str(Reply(501, "5.5.4", str(error)))]
        return format_discard_reply(ids, seq)

    async def xqtaken(self, session: HubSession, argument: str | None) -> str:
        if session.upstream is None:
            return str(NEEDS_XSHADOW)
        ids = parse_taken(argument)
        if ids is None:
            return str(BAD_ARGUMENT)
        upstream = session.upstream
        dropped, _ = await self._ledger.drop_taken(
            upstream.name, upstream.incarnation, ids, self._clock()
        )
        for item in dropped:
            self._tracker.record(
                TrackingEvent.DUPLICATE,
                queue_id=item.queue_id,
                sender=item.sender,
                recipients=list(item.recipients),
                reply=f"taken over by {upstream.name}",
            )
        return f"250 2.0.0 {len(dropped)} dropped"

    def check_origin(self, session: HubSession, origin: str) -> Reply | None:
        """The refusal for an XORIGIN parameter, or None when it may be used."""
        if session.upstream is None:
            return ORIGIN_NEEDS_XSHADOW
        if not valid_origin(origin):
            return BAD_ORIGIN
        return None
