"""The inbound session state machine, driven line by line without sockets."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hubd import replies
from hubd.replies import Reply
from hubd.smtp.actions import (
    AckRefused,
    AwaitDeparture,
    Close,
    Commit,
    Committed,
    Copied,
    DataReceived,
    Departed,
    DropTaken,
    Failed,
    ListNotices,
    MakeRedundant,
    NoticesListed,
    Outcome,
    ReceiveData,
    RegisterUpstream,
    Step,
    TakenDropped,
    UpstreamRegistered,
    Withdraw,
    Withdrawn,
)
from hubd.smtp.data import ContentFault, DataSummary
from hubd.smtp.limits import LocalCounters, Occupancy
from hubd.smtp.policy import BeforeAck
from hubd.smtp.session import Phase, Session, TimeoutKind
from tests.unit.smtp.harness import (
    ME,
    OUTSIDER_IP,
    PEER_IP,
    UPSTREAM,
    Clock,
    listener_policy,
    new_session,
)

CLEAN = DataSummary(fault=None, size=20, received=0, message_id="<m@x>")
UPSTREAM_ARG = f"{UPSTREAM.name} {UPSTREAM.incarnation}"


def opened(session: Session | None = None, *, ehlo: str | None = "client.test") -> Session:
    """A session past its greeting and (by default) EHLO."""
    session = session or new_session()
    assert session.open().reply == replies.greeting("hub-d.hubd.test")
    if ehlo is not None:
        assert say(session, f"EHLO {ehlo}").code == 250
    return session


def say(session: Session, line: str | bytes) -> Reply:
    """Send one command line; the reply to it (the step must not ask for an action)."""
    raw = line if isinstance(line, bytes) else line.encode()
    step = session.receive_line(raw + b"\r\n")
    assert step.reply is not None
    assert step.action is None or isinstance(step.action, Close), step
    return step.reply


def transaction(session: Session, *recipients: str) -> None:
    assert say(session, "MAIL FROM:<alice@outside.test>") == replies.SENDER_OK
    for recipient in recipients or ("bob@corp.test",):
        assert say(session, f"RCPT TO:<{recipient}>") == replies.RECIPIENT_OK


def start_data(session: Session) -> Step:
    step = session.receive_line(b"DATA\r\n")
    assert step.reply == replies.START_DATA
    assert isinstance(step.action, ReceiveData)
    return step


def deliver(session: Session, summary: DataSummary = CLEAN, content: bytes = b"x") -> Step:
    """DATA with the given check results; the step after the reader's report."""
    start_data(session)
    return session.finish(DataReceived(summary, content))


class TestGreeting:
    def test_greeting_then_ehlo(self) -> None:
        """The banner names the host; EHLO lists the extensions, XSHADOW only for a peer."""
        session = opened(ehlo=None)
        step = session.receive_line(b"EHLO client.test\r\n")
        assert step.reply is not None
        assert step.reply.lines() == [
            "250-hub-d.hubd.test",
            "250-SIZE 10000",
            "250-8BITMIME",
            "250-SMTPUTF8",
            "250-PIPELINING",
            "250-ENHANCEDSTATUSCODES",
            "250-DSN",
            "250 HELP",
        ]
        peer = opened(new_session(client_ip=PEER_IP), ehlo=None)
        reply = say(peer, "EHLO up.test")
        assert reply.lines()[-2:] == ["250-XSHADOW 1 HOLD", "250 HELP"]

    def test_helo(self) -> None:
        """HELO gets a plain 250 with the host name; the session is not extended."""
        session = opened(ehlo=None)
        assert say(session, "HELO client.test") == replies.helo("hub-d.hubd.test")
        assert session.phase is Phase.READY
        assert not session.extended

    @pytest.mark.parametrize(
        "argument",
        [
            b"evil\rX-Injected: yes",
            b"evil\nX-Injected: yes",
            b"ev\x00il",
            b"ev\x01il",
            b"ev\x7fil",
            b"ev\xc2\x85il",
            b"\xff\xfe",
            b"a b",
            b"ev\xe2\x80\x8bil",
            b"x" * 256,
            b"",
        ],
        ids=[
            "cr",
            "lf",
            "nul",
            "soh",
            "del",
            "c1-nel",
            "invalid-utf8",
            "space",
            "zero-width-space",
            "too-long",
            "empty",
        ],
    )
    @pytest.mark.parametrize("verb", [b"HELO", b"EHLO"])
    def test_bad_helo_argument(self, verb: bytes, argument: bytes) -> None:
        """CR, LF, NUL, other control or format characters and invalid UTF-8 get 501 5.5.2."""
        session = opened(ehlo=None)
        assert say(session, verb + b" " + argument) == replies.BAD_HELO
        assert session.helo_name is None
        assert say(session, "MAIL FROM:<a@outside.test>") == replies.NEEDS_HELO

    @pytest.mark.parametrize(
        "name", ["client.test", "[192.0.2.1]", "[IPv6:2001:db8::1]", "bücher.example", "localhost"]
    )
    def test_good_helo_argument(self, name: str) -> None:
        """Names, address literals and UTF-8 names are taken as given."""
        session = opened(ehlo=None)
        assert say(session, f"EHLO {name}").code == 250
        assert session.helo_name == name

    def test_ehlo_resets_the_transaction(self) -> None:
        """A second EHLO ends the transaction in progress (RFC 5321 4.1.4)."""
        session = opened()
        transaction(session)
        assert say(session, "EHLO again.test").code == 250
        assert session.transaction is None
        assert say(session, "RCPT TO:<bob@corp.test>") == replies.NEEDS_MAIL


class TestMailAndRcpt:
    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ('MAIL FROM:"', replies.BAD_SENDER_SYNTAX),
            ("MAIL FROM:<", replies.BAD_SENDER_SYNTAX),
            ('MAIL FROM:<"a>', replies.BAD_SENDER_SYNTAX),
            ("MAIL FROM:<a@b>x", replies.BAD_SENDER_SYNTAX),
            ("MAIL FROM:<no-at-sign>", replies.BAD_SENDER_SYNTAX),
            ("MAIL FROM:", replies.BAD_SENDER_SYNTAX),
            ("MAIL FROM:<a@\udcff.test>", replies.BAD_SENDER_SYNTAX),
            ("MAIL TO:<a@b.test>", replies.BAD_ARGUMENTS),
            ("MAIL", replies.BAD_ARGUMENTS),
            ("MAIL FROM:<a@b.test> FROB=1", replies.UNKNOWN_PARAMETER),
            ("MAIL FROM:<a@b.test> SIZE=x", replies.BAD_SIZE),
            ("MAIL FROM:<a@b.test> SIZE=1 SIZE=2", replies.PARAMETER_TWICE),
            ("MAIL FROM:<a@b.test> BODY=9BIT", replies.BAD_BODY),
            ("MAIL FROM:<a@b.test> SIZE=10001", replies.MESSAGE_TOO_BIG),
            ("MAIL FROM:<ü@b.test>", replies.NEEDS_SMTPUTF8),
            ("MAIL FROM:<a@b.test> XORIGIN=up-1.0123456789abcdef.Q1", replies.ORIGIN_NEEDS_XSHADOW),
        ],
        ids=[
            "lone-quote",
            "open-bracket",
            "open-quote",
            "text-after-path",
            "no-at",
            "empty",
            "invalid-utf8",
            "wrong-keyword",
            "no-argument",
            "unknown-parameter",
            "bad-size",
            "size-twice",
            "bad-body",
            "size-over-limit",
            "utf8-without-smtputf8",
            "xorigin-without-xshadow",
        ],
    )
    def test_mail_refused(self, line: str, expected: Reply) -> None:
        """Each malformed MAIL gets its 5xx, never a 4xx; a good MAIL works afterwards."""
        session = opened()
        assert say(session, line.encode("utf-8", "surrogateescape")) == expected
        assert session.transaction is None
        assert say(session, "MAIL FROM:<a@b.test>") == replies.SENDER_OK

    @pytest.mark.parametrize(
        "line",
        [
            "MAIL FROM:<>",
            "MAIL FROM:<a@b.test>",
            "MAIL FROM: <a@b.test>",
            "mail from:<a@b.test>",
            "MAIL FROM:a@b.test",
            "MAIL FROM:<@relay.test:a@b.test>",
            'MAIL FROM:<"a>b"@b.test>',
            "MAIL FROM:<a@b.test> SIZE=10000 BODY=8BITMIME RET=HDRS ENVID=e1",
            "MAIL FROM:<ü@b.test> SMTPUTF8",
        ],
        ids=[
            "null",
            "plain",
            "space-after-colon",
            "lower-case",
            "no-brackets",
            "source-route",
            "quoted-bracket",
            "parameters",
            "smtputf8",
        ],
    )
    def test_mail_accepted(self, line: str) -> None:
        """Plain, null, lenient and parameter-laden MAIL commands are taken."""
        session = opened()
        assert say(session, line) == replies.SENDER_OK
        assert session.phase is Phase.MAIL

    def test_mail_sequence(self) -> None:
        """MAIL before HELO, and a nested MAIL, get 503 5.5.1."""
        session = opened(ehlo=None)
        assert say(session, "MAIL FROM:<a@b.test>") == replies.NEEDS_HELO
        assert say(session, "HELO c.test").code == 250
        assert say(session, "MAIL FROM:<a@b.test>") == replies.SENDER_OK
        assert say(session, "MAIL FROM:<a@b.test>") == replies.NESTED_MAIL

    def test_parameters_need_ehlo(self) -> None:
        """After HELO, MAIL parameters are refused (RFC 1869)."""
        session = opened(ehlo=None)
        say(session, "HELO c.test")
        assert say(session, "MAIL FROM:<a@b.test> SIZE=10") == replies.BAD_ARGUMENTS

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ('RCPT TO:"', replies.BAD_RECIPIENT_SYNTAX),
            ("RCPT TO:<>", replies.BAD_RECIPIENT_SYNTAX),
            ("RCPT TO:<b\x00ob@corp.test>", replies.BAD_RECIPIENT_SYNTAX),
            ("RCPT FROM:<bob@corp.test>", replies.BAD_ARGUMENTS),
            ("RCPT TO:<bob@corp.test> NOTIFY=SOMETIMES", replies.BAD_NOTIFY),
            ("RCPT TO:<bob@corp.test> FROB", replies.UNKNOWN_PARAMETER),
            ("RCPT TO:<bü@corp.test>", replies.NEEDS_SMTPUTF8),
            ("RCPT TO:<bob@elsewhere.test>", replies.RELAY_DENIED),
        ],
        ids=[
            "lone-quote",
            "null",
            "nul",
            "wrong-keyword",
            "bad-notify",
            "unknown-parameter",
            "utf8-without-smtputf8",
            "relay-denied",
        ],
    )
    def test_rcpt_refused(self, line: str, expected: Reply) -> None:
        """A refused RCPT leaves the transaction as it was."""
        session = opened()
        transaction(session)
        assert say(session, line) == expected
        assert session.transaction is not None
        assert session.transaction.recipients == ["bob@corp.test"]

    def test_rcpt_params_and_utf8(self) -> None:
        """NOTIFY/ORCPT are kept per recipient; a UTF-8 recipient is fine with SMTPUTF8."""
        session = opened()
        assert say(session, "MAIL FROM:<a@b.test> SMTPUTF8") == replies.SENDER_OK
        reply = say(session, "RCPT TO:<bü@corp.test> NOTIFY=FAILURE ORCPT=rfc822;b+40x")
        assert reply == replies.RECIPIENT_OK
        assert session.transaction is not None
        assert session.transaction.rcpt_params[0].notify == "FAILURE"
        assert session.transaction.rcpt_params[0].orcpt == "rfc822;b@x"

    def test_too_many_recipients(self) -> None:
        """Past max_recipients a RCPT gets 452 4.5.3 and is not counted as an error."""
        session = opened()
        transaction(session, "a@corp.test", "b@corp.test", "c@corp.test")
        assert say(session, "RCPT TO:<d@corp.test>") == replies.TOO_MANY_RECIPIENTS
        assert session.errors == 0

    def test_trusted_client_relays(self) -> None:
        """A client in the trusted networks may send anywhere."""
        session = opened(new_session(client_ip=PEER_IP))
        transaction(session, "someone@elsewhere.test")

    def test_vrfy(self) -> None:
        """VRFY of a good address or a plain name gets 252; a malformed one 501 5.1.3."""
        session = opened()
        assert say(session, "VRFY <bob@corp.test>") == replies.CANNOT_VRFY
        assert say(session, "VRFY bob") == replies.CANNOT_VRFY
        assert say(session, 'VRFY "') == replies.BAD_RECIPIENT_SYNTAX
        assert say(session, "VRFY <bob@corp") == replies.BAD_RECIPIENT_SYNTAX
        assert say(session, "VRFY <bü@corp.test>") == replies.NEEDS_SMTPUTF8
        assert say(session, "VRFY") == replies.BAD_ARGUMENTS


class TestOtherCommands:
    def test_help_lists_what_is_supported(self) -> None:
        """HELP lists the verbs this client may use: no AUTH, STARTTLS or EXPN."""
        outsider = opened()
        assert say(outsider, "HELP") == replies.help_commands(
            ["DATA", "EHLO", "HELO", "HELP", "MAIL", "NOOP", "QUIT", "RCPT", "RSET", "VRFY"]
        )
        peer = opened(new_session(client_ip=PEER_IP))
        assert "XSHADOW XQDISCARD" not in str(say(peer, "HELP"))
        assert {"XSHADOW", "XQDISCARD", "XQTAKEN"} <= set(str(say(peer, "HELP")).split())
        assert say(outsider, "HELP mail") == replies.help_syntax("MAIL FROM:<address> [parameters]")
        assert say(outsider, "HELP AUTH") == replies.HELP_TOPIC_UNKNOWN

    def test_auth_not_offered(self) -> None:
        """AUTH on a listener without AUTH is out of sequence: 503 5.5.1, not 538."""
        session = opened()
        assert say(session, "AUTH PLAIN AGFsaWNlAHNlY3JldA==") == replies.AUTH_NOT_OFFERED
        assert replies.AUTH_NOT_OFFERED.code == 503
        assert replies.AUTH_NOT_OFFERED.enhanced == "5.5.1"

    @pytest.mark.parametrize(
        ("line", "expected"),
        [
            ("NOOP", replies.OK),
            ("NOOP anything at all", replies.OK),
            ("RSET", replies.OK),
            ("RSET now", replies.NO_ARGUMENTS_EXPECTED),
            ("QUIT now", replies.NO_ARGUMENTS_EXPECTED),
            ("STARTTLS", replies.NOT_IMPLEMENTED),
            ("EXPN list", replies.NOT_IMPLEMENTED),
            ("FROBNICATE", replies.UNKNOWN_COMMAND),
            ("", replies.BAD_SYNTAX),
            ("\xff\xfe", replies.BAD_SYNTAX),
            ("DATA", replies.NEEDS_MAIL),
        ],
        ids=[
            "noop",
            "noop-argument",
            "rset",
            "rset-argument",
            "quit-argument",
            "starttls",
            "expn",
            "unknown",
            "empty",
            "binary",
            "data-without-mail",
        ],
    )
    def test_simple(self, line: str, expected: Reply) -> None:
        """The simple commands and their refusals."""
        session = opened()
        assert say(session, line.encode("utf-8", "surrogateescape")) == expected

    def test_quit(self) -> None:
        """QUIT gets 221 and closes."""
        session = opened()
        step = session.receive_line(b"QUIT\r\n")
        assert step == Step(replies.BYE, Close())
        assert session.closed

    def test_rset_ends_transaction(self) -> None:
        """RSET drops the transaction; the next MAIL starts a new one."""
        session = opened()
        transaction(session)
        assert say(session, "RSET") == replies.OK
        assert session.transaction is None
        assert say(session, "MAIL FROM:<a@b.test>") == replies.SENDER_OK

    def test_line_endings_and_length(self) -> None:
        """A bare LF ends a command too; a command line over 512 octets gets 500 5.5.2."""
        session = opened()
        assert session.receive_line(b"NOOP\n").reply == replies.OK
        assert say(session, "NOOP " + "x" * 506) == replies.LINE_TOO_LONG
        assert say(session, "NOOP " + "x" * 505) == replies.OK
        assert session.line_too_long().reply == replies.LINE_TOO_LONG
        ids = " ".join(f"Q{n:018d}" for n in range(50))
        session = opened(new_session(client_ip=PEER_IP))
        assert say(session, f"XQTAKEN {ids}") == replies.XSHADOW_NEEDED  # long, but not too long


class TestData:
    def test_data_sequence(self) -> None:
        """DATA needs a recipient, and takes no argument."""
        session = opened()
        say(session, "MAIL FROM:<a@b.test>")
        assert say(session, "DATA") == replies.NEEDS_RCPT
        say(session, "RCPT TO:<bob@corp.test>")
        assert say(session, "DATA now") == replies.NO_ARGUMENTS_EXPECTED

    def test_commit_then_queued(self) -> None:
        """The message is committed with its envelope and trace header, then 250 names it."""
        session = opened()
        transaction(session, "bob@corp.test")
        step = deliver(session, content=b"Subject: s\r\n\r\nbody\r\n")
        assert step.reply is None
        assert isinstance(step.action, Commit)
        message = step.action.message
        assert not step.action.watch_departure
        assert message.sender == "alice@outside.test"
        assert message.recipients == ("bob@corp.test",)
        assert message.content == b"Subject: s\r\n\r\nbody\r\n"
        assert message.trace.startswith(b"Received: from client.test ([192.0.2.9])\r\n")
        assert b"with ESMTP id " + message.queue_id.encode() in message.trace
        assert message.trace.endswith(b"\r\n")
        assert message.message_id == "<m@x>"
        assert message.size == len(message.trace) + len(message.content)
        done = session.finish(Committed())
        assert done == Step(replies.queued(message.queue_id))
        assert session.phase is Phase.READY
        assert session.transaction is None

    def test_null_sender(self) -> None:
        """MAIL FROM:<> gives a message with the empty sender."""
        session = opened()
        say(session, "MAIL FROM:<>")
        say(session, "RCPT TO:<bob@corp.test>")
        step = deliver(session)
        assert isinstance(step.action, Commit)
        assert step.action.message.sender == ""

    def test_commit_failure(self) -> None:
        """A commit that fails gets 451 4.3.0, and the session goes on."""
        session = opened()
        transaction(session)
        deliver(session)
        assert session.finish(Failed()) == Step(replies.LOCAL_ERROR)
        transaction(session)

    @pytest.mark.parametrize(
        ("fault", "expected"),
        [
            (ContentFault.LINE_TOO_LONG, replies.LINE_TOO_LONG),
            (ContentFault.TOO_BIG, replies.MESSAGE_TOO_BIG),
            (ContentFault.BARE_LINE_END, replies.BARE_LINE_END),
            (ContentFault.NUL, replies.NUL_IN_MESSAGE),
            (ContentFault.HEADER_TOO_BIG, replies.HEADER_TOO_BIG),
            (ContentFault.ROUTING_LOOP, replies.ROUTING_LOOP),
        ],
        ids=lambda v: str(v) if isinstance(v, ContentFault) else "",
    )
    def test_content_fault(self, fault: ContentFault, expected: Reply) -> None:
        """A content fault is the reply to DATA; nothing is committed."""
        session = opened()
        transaction(session)
        step = deliver(session, DataSummary(fault, 0, 0, None), b"")
        assert step == Step(expected)
        assert session.transaction is None
        transaction(session)

    def test_delayed_ack(self) -> None:
        """With delayed ack, a plain client's 250 waits for the message's departure."""
        session = opened(new_session(listener_policy(max_ack_delay=30.0)))
        transaction(session)
        step = deliver(session)
        assert isinstance(step.action, Commit)
        assert step.action.watch_departure
        queue_id = step.action.message.queue_id
        wait = session.finish(Committed())
        assert wait == Step(None, AwaitDeparture(queue_id, 30.0))
        assert session.finish(Departed(left=False)) == Step(replies.queued(queue_id))

    def test_delayed_ack_not_for_shadow_peers(self) -> None:
        """A session that said XSHADOW holds a shadow: its 250 is not delayed."""
        session = opened(
            new_session(listener_policy(max_ack_delay=30.0), client_ip=PEER_IP), ehlo="up.test"
        )
        step = session.receive_line(f"XSHADOW {UPSTREAM_ARG}\r\n".encode())
        session.finish(UpstreamRegistered())
        say(session, "MAIL FROM:<a@up.test> XORIGIN=up-1.0123456789abcdef.Q1")
        say(session, "RCPT TO:<bob@corp.test>")
        step = deliver(session)
        assert isinstance(step.action, Commit)
        assert not step.action.watch_departure
        assert step.action.message.upstream == UPSTREAM
        assert step.action.message.mail_params.origin == "up-1.0123456789abcdef.Q1"
        assert session.finish(Committed()).reply == replies.queued(step.action.message.queue_id)

    def before_ack(self, required: bool) -> tuple[Session, Commit]:
        policy = listener_policy(max_ack_delay=30.0, before_ack=BeforeAck(required, 5.0))
        session = opened(new_session(policy))
        transaction(session)
        step = deliver(session)
        assert isinstance(step.action, Commit)
        return session, step.action

    def test_before_ack_copies_after_the_commit(self) -> None:
        """With before_ack, the committed message (held back) is copied, then gets its 250;
        delayed ack is superseded."""
        session, commit = self.before_ack(required=True)
        assert not commit.watch_departure
        message = commit.message
        assert message.not_before == message.received_at + 10.0
        step = session.finish(Committed())
        assert step == Step(None, MakeRedundant(message, required=True, timeout=5.0))
        assert session.finish(Copied(made=True)) == Step(replies.queued(message.queue_id))

    def test_copy_goes_with_the_peer_the_commit_owes(self) -> None:
        """The peer the commit owes its notice to travels with the copy step."""
        session, commit = self.before_ack(required=False)
        step = session.finish(Committed(owed_to=UPSTREAM))
        assert isinstance(step.action, MakeRedundant)
        assert step.action.message.owed_to == UPSTREAM
        assert step.action.message.queue_id == commit.message.queue_id

    def test_require_withdraws_then_451(self) -> None:
        """With require and no copy, the message is withdrawn and DATA gets 451 4.4.0."""
        session, commit = self.before_ack(required=True)
        session.finish(Committed())
        step = session.finish(Copied(made=False))
        assert step == Step(None, Withdraw(commit.message.queue_id))
        assert session.finish(Withdrawn(done=True)) == Step(replies.NOT_REDUNDANT)
        assert session.phase is Phase.READY

    def test_require_keeps_a_message_already_being_delivered(self) -> None:
        """A message that could not be withdrawn (being delivered) is acknowledged."""
        session, commit = self.before_ack(required=True)
        session.finish(Committed())
        session.finish(Copied(made=False))
        step = session.finish(Withdrawn(done=False))
        assert step == Step(replies.queued(commit.message.queue_id))

    def test_prefer_accepts_without_a_copy(self) -> None:
        """With prefer, no copy still gets the 250 (the executor logs UNPROTECTED)."""
        session, commit = self.before_ack(required=False)
        session.finish(Committed())
        assert session.finish(Copied(made=False)) == Step(replies.queued(commit.message.queue_id))

    def test_no_copy_for_shadow_peers(self) -> None:
        """A session that said XSHADOW (a hubd upstream, or a redundancy copy) is not copied."""
        policy = listener_policy(before_ack=BeforeAck(True, 5.0))
        session = opened(new_session(policy, client_ip=PEER_IP), ehlo="up.test")
        session.receive_line(f"XSHADOW {UPSTREAM_ARG}\r\n".encode())
        session.finish(UpstreamRegistered())
        say(session, "MAIL FROM:<a@up.test> XORIGIN=up-1.0123456789abcdef.Q1 XHOLD=10.1.1.1:25")
        say(session, "RCPT TO:<bob@corp.test>")
        step = deliver(session)
        assert isinstance(step.action, Commit)
        assert step.action.message.not_before is None
        assert step.action.message.mail_params.hold == "10.1.1.1:25"
        assert session.finish(Committed()).reply == replies.queued(step.action.message.queue_id)

    @pytest.mark.parametrize(
        ("kind", "expected"),
        [(TimeoutKind.IDLE, replies.IDLE_TIMEOUT), (TimeoutKind.DATA, replies.DATA_TIMEOUT)],
    )
    def test_timeout_in_data(self, kind: TimeoutKind, expected: Reply) -> None:
        """A client too slow in DATA gets 421 4.4.2 and the connection closes."""
        session = opened()
        transaction(session)
        start_data(session)
        assert session.timed_out(kind) == Step(expected, Close())
        assert session.closed
        assert session.pending is None


class TestXshadow:
    def peer(self, **policy: float) -> Session:
        return opened(new_session(listener_policy(**policy), client_ip=PEER_IP), ehlo="up.test")

    def registered(self) -> Session:
        session = self.peer()
        step = session.receive_line(f"XSHADOW {UPSTREAM_ARG}\r\n".encode())
        assert step == Step(None, RegisterUpstream(UPSTREAM))
        assert session.upstream is None  # not before the ledger has it
        assert session.finish(UpstreamRegistered()) == Step(
            replies.xshadow_identity(ME.name, ME.incarnation)
        )
        assert session.upstream == UPSTREAM
        return session

    def test_xshadow(self) -> None:
        """A peer's XSHADOW registers its upstream; the reply names this node."""
        self.registered()

    def test_xqdiscard(self) -> None:
        """XQDISCARD asks the ledger for notices and lists them, or refuses a bad ACK."""
        session = self.registered()
        step = session.receive_line(b"XQDISCARD 10 ACK=3\r\n")
        assert step == Step(None, ListNotices(UPSTREAM, 10, 3))
        reply = session.finish(NoticesListed(("Q1", "Q2"), 5)).reply
        assert reply is not None
        assert reply.lines() == ["250-2.0.0 ID=Q1", "250-2.0.0 ID=Q2", "250 2.0.0 SEQ=5"]
        session.receive_line(b"XQDISCARD 10 ACK=99\r\n")
        assert session.finish(AckRefused()) == Step(replies.ACK_TOO_HIGH)

    def test_xqtaken(self) -> None:
        """XQTAKEN asks the ledger to drop the named messages and says how many went."""
        session = self.registered()
        step = session.receive_line(b"XQTAKEN Q1 Q2\r\n")
        assert step == Step(None, DropTaken(UPSTREAM, ("Q1", "Q2")))
        assert session.finish(TakenDropped(1)) == Step(replies.taken_dropped(1))

    @pytest.mark.parametrize(
        ("setup", "line", "expected"),
        [
            ([], "XSHADOW up-1", replies.XSHADOW_BAD_ARGUMENT),
            ([], "XSHADOW up-1 NOTHEX0123456789", replies.XSHADOW_BAD_ARGUMENT),
            ([], "XQDISCARD 10", replies.XSHADOW_NEEDED),
            ([], "XQTAKEN Q1", replies.XSHADOW_NEEDED),
            (["XSHADOW"], f"XSHADOW {UPSTREAM_ARG}", replies.XSHADOW_ALREADY),
            (["XSHADOW"], "XQDISCARD ten", replies.XSHADOW_BAD_ARGUMENT),
            (["XSHADOW"], "XQTAKEN bad-id!", replies.XSHADOW_BAD_ARGUMENT),
            (["XSHADOW"], "MAIL FROM:<a@up.test> XORIGIN=bad", replies.BAD_ORIGIN),
            (["MAIL"], f"XSHADOW {UPSTREAM_ARG}", replies.XSHADOW_IN_TRANSACTION),
            (["HELO"], f"XSHADOW {UPSTREAM_ARG}", replies.NEEDS_EHLO),
        ],
        ids=[
            "missing-incarnation",
            "bad-incarnation",
            "discard-first",
            "taken-first",
            "twice",
            "discard-bad-max",
            "taken-bad-id",
            "bad-origin",
            "in-transaction",
            "after-helo",
        ],
    )
    def test_refusals(self, setup: list[str], line: str, expected: Reply) -> None:
        """Each misuse of a verb gets its own refusal, and asks nothing of the ledger."""
        session = self.registered() if "XSHADOW" in setup else self.peer()
        if "MAIL" in setup:
            say(session, "MAIL FROM:<a@up.test>")
        if "HELO" in setup:
            say(session, "HELO up.test")
        assert say(session, line) == expected

    def test_not_a_peer(self) -> None:
        """A client outside the peers gets 550 5.7.1 and no XSHADOW in EHLO."""
        session = opened()
        assert say(session, f"XSHADOW {UPSTREAM_ARG}") == replies.XSHADOW_NOT_A_PEER

    def test_without_shadow_the_verbs_are_unknown(self) -> None:
        """A listener with XSHADOW off does not know the verbs."""
        policy = listener_policy()
        session = opened(new_session(type(policy)(policy.hostname, policy.relay, policy.limits)))
        assert say(session, f"XSHADOW {UPSTREAM_ARG}") == replies.UNKNOWN_COMMAND

    def test_ledger_failure(self) -> None:
        """A storage fault under an XSHADOW verb gets 451 4.3.0; the session goes on."""
        session = self.peer()
        session.receive_line(f"XSHADOW {UPSTREAM_ARG}\r\n".encode())
        assert session.finish(Failed()) == Step(replies.LOCAL_ERROR)
        assert session.upstream is None
        assert say(session, "NOOP") == replies.OK


class TestLimits:
    def test_errors(self) -> None:
        """Past max_errors syntax errors, the next gets 421 4.7.0 and the session closes."""
        session = opened()
        for _ in range(5):
            assert say(session, "MAIL FROM:bad") == replies.BAD_SENDER_SYNTAX
        step = session.receive_line(b"MAIL FROM:bad\r\n")
        assert step == Step(replies.TOO_MANY_ERRORS, Close())
        assert session.closed

    def test_policy_refusals_are_not_errors(self) -> None:
        """Refused recipients are the relay rule's answer, not the client's mistake."""
        session = opened()
        transaction(session)
        for _ in range(10):
            assert say(session, "RCPT TO:<x@elsewhere.test>") == replies.RELAY_DENIED
        assert session.errors == 0

    def test_commands(self) -> None:
        """Past max_commands lines (NOOPs too), the next gets 421 4.7.0."""
        session = opened(ehlo=None)
        for _ in range(100):
            assert say(session, "NOOP") == replies.OK
        assert session.receive_line(b"NOOP\r\n") == Step(replies.TOO_MANY_COMMANDS, Close())

    def test_unknown_commands(self) -> None:
        """The fifth unknown command gets 502 5.5.1 and closes (lines that are no command too)."""
        session = opened()
        for line in ("GET / HTTP/1.1", "Host: example", "BOGUS", ""):
            assert say(session, line).code == 500
        assert session.receive_line(b"BOGUS\r\n") == Step(replies.TOO_MANY_UNKNOWN, Close())

    def test_sessions(self) -> None:
        """Past max_sessions on the node, even a trusted client gets 421 4.7.0."""
        counters = LocalCounters()
        for _ in range(4):
            opened(new_session(client_ip=f"10.0.0.{_ + 1}", counters=counters), ehlo=None)
        session = new_session(client_ip=PEER_IP, counters=counters)
        assert session.open() == Step(replies.TOO_MANY_SESSIONS, Close())
        session.connection_lost()
        assert counters.connect("x").sessions == 5  # the refused one was released

    def test_connections_per_client(self) -> None:
        """A third connection from one outside address gets 421 4.7.0; trusted ones do not."""
        counters = LocalCounters()
        first = opened(new_session(counters=counters), ehlo=None)
        opened(new_session(counters=counters), ehlo=None)
        third = new_session(counters=counters)
        assert third.open() == Step(replies.TOO_MANY_FROM_CLIENT, Close())
        third.connection_lost()
        first.connection_lost()
        opened(new_session(counters=counters), ehlo=None)
        for _ in range(3):
            opened(new_session(client_ip=PEER_IP, counters=LocalCounters()), ehlo=None)

    def test_message_rate(self) -> None:
        """Past its message rate an outside address gets 421 4.7.0, until time passes."""
        clock = Clock()
        counters = LocalCounters()

        def session() -> Session:
            return opened(new_session(counters=counters, clock=clock))

        first = session()
        for _ in range(3):
            assert say(first, "MAIL FROM:<a@b.test>") == replies.SENDER_OK
            say(first, "RSET")
        step = first.receive_line(b"MAIL FROM:<a@b.test>\r\n")
        assert step == Step(replies.TOO_MANY_MESSAGES, Close())
        first.connection_lost()
        clock.now += 20  # one minute / three messages
        second = session()
        assert say(second, "MAIL FROM:<a@b.test>") == replies.SENDER_OK
        say(second, "RSET")
        assert second.receive_line(b"MAIL FROM:<a@b.test>\r\n").reply == replies.TOO_MANY_MESSAGES
        trusted = opened(new_session(client_ip=PEER_IP, counters=counters, clock=clock))
        for _ in range(10):
            assert say(trusted, "MAIL FROM:<a@b.test>") == replies.SENDER_OK
            say(trusted, "RSET")


class TestMisuse:
    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.receive_line(b"NOOP\r\n"),
            lambda s: s.finish(Committed()),
        ],
        ids=["line-before-greeting", "outcome-without-action"],
    )
    def test_calls_out_of_order_raise(self, call: Callable[[Session], Step]) -> None:
        """The glue calling out of order is a bug, and says so."""
        with pytest.raises(RuntimeError):
            call(new_session())

    def test_line_while_action_pending(self) -> None:
        """No command line may arrive while DATA is being read."""
        session = opened()
        transaction(session)
        start_data(session)
        with pytest.raises(RuntimeError):
            session.receive_line(b"NOOP\r\n")

    def test_wrong_outcome(self) -> None:
        """An outcome that does not answer the pending action raises."""
        session = opened()
        transaction(session)
        start_data(session)
        outcome: Outcome = Committed()
        with pytest.raises(RuntimeError):
            session.finish(outcome)

    def test_connection_lost_releases_counters(self) -> None:
        """Whatever the phase, a lost connection gives its place back."""
        counters = LocalCounters()
        session = opened(new_session(counters=counters, client_ip=OUTSIDER_IP))
        transaction(session)
        start_data(session)
        session.connection_lost()
        assert session.closed
        assert counters.connect(OUTSIDER_IP) == Occupancy(1, 1)
