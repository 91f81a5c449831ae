"""Per-connection and per-transaction state hubd keeps beside aiosmtpd's own.

Public: HubSession, HubEnvelope.
See also: hubd/smtp/params.py (what fills them), hubd/smtp/server.py (creates them).
"""

from __future__ import annotations

import asyncio

from aiosmtpd.smtp import Envelope, Session

from hubd.shadow.protocol import Hello
from hubd.smtp.params import MailParams, RcptParams


class HubSession(Session):
    """aiosmtpd's Session, plus the parameters of the MAIL or RCPT being handled now."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pending_mail = MailParams()
        self.pending_rcpt = RcptParams()
        self.upstream: Hello | None = None  # set by XSHADOW: this session owes it notices


class HubEnvelope(Envelope):
    """aiosmtpd's Envelope, plus RFC 3461 parameters (one RcptParams per accepted RCPT)."""

    def __init__(self) -> None:
        super().__init__()
        self.mail_params = MailParams()
        self.rcpt_params: list[RcptParams] = []
