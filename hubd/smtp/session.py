"""One inbound SMTP session as a state machine: lines in, replies and actions out (sans-IO).

Owns: the order of commands (greeting, HELO/EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA), each
command's syntax and reply, the session limits (commands, errors, recipients, message rate,
connections, failed AUTHs), who may send as whom on submission listeners, building the
message and its Received: header (and a submission's missing Date and Message-ID) at the end
of DATA, and what the XSHADOW verbs may do.
Public: Session, Phase, TimeoutKind.
Failures: none raised for any client input; every outcome is a Step. A call out of order
(a line while an action is pending) is a bug in the caller and raises RuntimeError.
Limits: AUTH PLAIN and LOGIN only; STARTTLS where the policy offers it (502 5.5.1
elsewhere), AUTH only on submission listeners (503 5.5.1 elsewhere).
See also: hubd/smtp/actions.py (the steps), hubd/smtp/server.py (the glue that feeds it),
RFC 5321 4.1 and 4.3.2 (commands and replies), RFC 1869, 1870, 3207, 3461, 4954, 6152,
6409, 6531.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime

from hubd import replies
from hubd.backpressure import Level, admits
from hubd.queueid import new_queue_id
from hubd.replies import Reply
from hubd.shadow.protocol import Hello
from hubd.smtp import xshadow
from hubd.smtp.actions import (
    AckRefused,
    Action,
    AuthBusy,
    Authenticated,
    AwaitDeparture,
    CheckCredentials,
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
    NotAuthenticated,
    NoticesListed,
    Outcome,
    ReceiveData,
    RegisterUpstream,
    StartTls,
    Step,
    TakenDropped,
    TlsStarted,
    UpstreamRegistered,
    Withdraw,
    Withdrawn,
)
from hubd.smtp.address import parse_mailbox, split_path
from hubd.smtp.commands import line_limit, parse_command, valid_helo
from hubd.smtp.data import ContentFault
from hubd.smtp.limits import NodeCounters, client_key
from hubd.smtp.message import ReceivedMessage, received_header
from hubd.smtp.params import MailParams, RcptParams, parse_mail_params, parse_rcpt_params
from hubd.smtp.policy import BeforeAck, ListenerPolicy
from hubd.smtp.relay import decide_recipient, postmaster
from hubd.smtp.sasl import (
    LOGIN_PASSWORD,
    LOGIN_USERNAME,
    MECHANISMS,
    decode_response,
    login_text,
    plain_credentials,
)

MAX_UNKNOWN_COMMANDS = 5  # the fifth unknown command ends the session (as in aiosmtpd)
_LOCAL_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_+")

_FAULT_REPLIES: dict[ContentFault, Reply] = {
    ContentFault.LINE_TOO_LONG: replies.LINE_TOO_LONG,
    ContentFault.TOO_BIG: replies.MESSAGE_TOO_BIG,
    ContentFault.BARE_LINE_END: replies.BARE_LINE_END,
    ContentFault.NUL: replies.NUL_IN_MESSAGE,
    ContentFault.HEADER_TOO_BIG: replies.HEADER_TOO_BIG,
    ContentFault.ROUTING_LOOP: replies.ROUTING_LOOP,
}
_SYNTAX = {
    "DATA": "DATA",
    "EHLO": "EHLO domain",
    "HELO": "HELO domain",
    "HELP": "HELP [command]",
    "MAIL": "MAIL FROM:<address> [parameters]",
    "NOOP": "NOOP",
    "QUIT": "QUIT",
    "RCPT": "RCPT TO:<address> [parameters]",
    "RSET": "RSET",
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH PLAIN|LOGIN [initial-response]",
    "VRFY": "VRFY <address>",
    "XQDISCARD": "XQDISCARD <max> [ACK=<seq>]",
    "XQTAKEN": "XQTAKEN <queue-id>...",
    "XSHADOW": "XSHADOW <node-name> <incarnation>",
}
_XSHADOW_VERBS = frozenset({"XSHADOW", "XQDISCARD", "XQTAKEN"})


class Phase(enum.StrEnum):
    GREETING = "GREETING"  # connected, not greeted yet
    HELLO = "HELLO"  # greeted; waiting for HELO or EHLO
    READY = "READY"  # no transaction
    MAIL = "MAIL"  # in a transaction, collecting recipients
    DATA = "DATA"  # the message text is being read or committed
    CLOSED = "CLOSED"


class TimeoutKind(enum.StrEnum):
    IDLE = "IDLE"  # the client sent nothing for idle_timeout
    DATA = "DATA"  # DATA took longer than data_timeout


@dataclass(slots=True)
class _SaslExchange:
    """An AUTH waiting for the client's next response line."""

    mechanism: str
    username: str | None = None  # LOGIN: given, the password is asked next


@dataclass(slots=True)
class _Transaction:
    sender: str
    params: MailParams
    recipients: list[str] = field(default_factory=list)
    rcpt_params: list[RcptParams] = field(default_factory=list)


class Session:
    """The state of one connection, fed what the client sends and what the node did."""

    def __init__(
        self,
        policy: ListenerPolicy,
        *,
        client_ip: str,
        counters: NodeCounters,
        clock: Callable[[], float],
        rng: random.Random,
        pressure: Callable[[], Level] = lambda: Level.NORMAL,
        tls: str | None = None,
    ) -> None:
        self.policy = policy
        self.client_ip = client_ip
        self._client = client_key(client_ip)
        self._trusted = policy.relay.is_trusted(client_ip)
        # Who still sends at Medium back pressure: trusted networks and shadow peers (so a
        # cluster drains into itself), and authenticated users (see _admitted()).
        self._privileged = self._trusted or (
            policy.shadow is not None and policy.shadow.is_peer(client_ip)
        )
        self._pressure = pressure
        self._counters = counters
        self._counted = False
        self._clock = clock
        self._rng = rng
        self.phase = Phase.GREETING
        self.helo_name: str | None = None
        self.extended = False
        self.upstream: Hello | None = None
        self.transaction: _Transaction | None = None
        self.tls = tls  # the TLS version in use ("TLSv1.3"), None in the clear
        self.user: str | None = None  # the authenticated submission user
        self._addresses: frozenset[str] = frozenset()  # the senders it may use
        self._sasl: _SaslExchange | None = None
        self.commands = 0
        self.errors = 0
        self._unknown = 0
        self.pending: Action | None = None
        self._message: ReceivedMessage | None = None  # the one being committed
        self._verbs: dict[str, Callable[[str], Step]] = {
            "HELO": self.helo,
            "EHLO": self.ehlo,
            "MAIL": self.mail,
            "RCPT": self.rcpt,
            "DATA": self.data,
            "RSET": self.rset,
            "NOOP": self.noop,
            "QUIT": self.quit,
            "VRFY": self.vrfy,
            "HELP": self.help,
            "EXPN": self._not_implemented,
            "STARTTLS": self.starttls,
            "AUTH": self.auth,
        }
        if policy.shadow is not None:
            self._verbs |= {
                "XSHADOW": self.xshadow,
                "XQDISCARD": self.xqdiscard,
                "XQTAKEN": self.xqtaken,
            }

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def in_auth_exchange(self) -> bool:
        """The next line is an AUTH response (base64), not a command."""
        return self._sasl is not None

    # Events from the connection.

    def open(self) -> Step:
        """The connection is made: the greeting, or a refusal when the node is too full."""
        self._expect(Phase.GREETING)
        occupancy = self._counters.connect(self._client)
        self._counted = True
        limits = self.policy.limits
        if occupancy.sessions > limits.max_sessions:
            return self._close(replies.TOO_MANY_SESSIONS)
        if not self._trusted and occupancy.from_client > limits.max_connections_per_client:
            return self._close(replies.TOO_MANY_FROM_CLIENT)
        self.phase = Phase.HELLO
        return Step(replies.greeting(self.policy.hostname))

    def receive_line(self, line: bytes) -> Step:
        """One command line, its line end included."""
        if self._count_command():
            return self._close(replies.TOO_MANY_COMMANDS)
        if self._sasl is not None:
            return self._sasl_response(line)
        command = parse_command(line)
        if command is None:
            return self._unknown_command(replies.BAD_SYNTAX)
        if len(line) > line_limit(command.verb):
            return self._error(replies.LINE_TOO_LONG)
        verb = self._verbs.get(command.verb)
        if verb is None:
            return self._unknown_command(replies.UNKNOWN_COMMAND)
        return verb(command.argument)

    def line_too_long(self) -> Step:
        """A command line longer than the reader holds arrived (and was read to its end)."""
        if self._count_command():
            return self._close(replies.TOO_MANY_COMMANDS)
        self._sasl = None
        return self._error(replies.LINE_TOO_LONG)

    def timed_out(self, kind: TimeoutKind) -> Step:
        """The client was too slow: close with 421."""
        self.pending = None
        self.transaction = None
        return self._close(
            replies.DATA_TIMEOUT if kind is TimeoutKind.DATA else replies.IDLE_TIMEOUT
        )

    def connection_lost(self) -> None:
        """The connection is gone; whatever was in progress is dropped."""
        if self._counted:
            self._counters.disconnect(self._client)
            self._counted = False
        self.pending = None
        self.transaction = None
        self.phase = Phase.CLOSED

    def finish(self, outcome: Outcome) -> Step:
        """The outcome of the pending action."""
        action = self.pending
        if action is None or self.closed:
            raise RuntimeError(f"no action is pending for {outcome!r}")
        self.pending = None
        if isinstance(action, StartTls | CheckCredentials):
            return self._finish_secure(action, outcome)
        match action, outcome:
            case ReceiveData(), DataReceived():
                return self._data_received(outcome)
            case Commit(), Committed():
                return self._committed(action, outcome)
            case AwaitDeparture(), Departed():
                return self._end_transaction(replies.queued(action.queue_id))
            case Commit() | ReceiveData(), Failed():
                return self._end_transaction(_failure_reply(outcome))
            case MakeRedundant() | Withdraw(), _:
                return self._redundancy_finished(action, outcome)
            case RegisterUpstream(), UpstreamRegistered():
                self.upstream = action.upstream
                assert self.policy.shadow is not None
                me = self.policy.shadow.me
                return Step(replies.xshadow_identity(me.name, me.incarnation))
            case ListNotices(), NoticesListed():
                return Step(replies.discard_notices(outcome.queue_ids, outcome.seq))
            case ListNotices(), AckRefused():
                return self._error(replies.ACK_TOO_HIGH)
            case DropTaken(), TakenDropped():
                return Step(replies.taken_dropped(outcome.count))

            case RegisterUpstream() | ListNotices() | DropTaken(), Failed():
                return Step(replies.LOCAL_ERROR)
        raise RuntimeError(f"{outcome!r} is no outcome of {action!r}")

    def _finish_secure(self, action: StartTls | CheckCredentials, outcome: Outcome) -> Step:
        match action, outcome:
            case StartTls(), TlsStarted():
                return self._tls_started(outcome.version)
            case CheckCredentials(), Authenticated():
                self.user = outcome.user
                self._addresses = outcome.addresses
                return Step(replies.AUTH_OK)
            case CheckCredentials(), NotAuthenticated():
                return self._auth_failed()
            case CheckCredentials(), AuthBusy() | Failed():
                return Step(replies.AUTH_BUSY)
        raise RuntimeError(f"{outcome!r} is no outcome of {action!r}")

    def _redundancy_finished(self, action: MakeRedundant | Withdraw, outcome: Outcome) -> Step:
        """After the copy before the 250: the 250, or (require) withdraw, then 451 4.4.0."""
        match action, outcome:
            case MakeRedundant(), Copied():
                if outcome.made or not action.required:
                    return self._end_transaction(replies.queued(action.message.queue_id))
                return self._ask(None, Withdraw(action.message.queue_id))
            case Withdraw(), Withdrawn():
                if outcome.done:
                    return self._end_transaction(replies.NOT_REDUNDANT)
                return self._end_transaction(replies.queued(action.queue_id))
            case Withdraw(), Failed():
                return self._end_transaction(replies.LOCAL_ERROR)
        raise RuntimeError(f"{outcome!r} is no outcome of {action!r}")

    # The commands, named after their verbs.

    def helo(self, argument: str) -> Step:
        if not valid_helo(argument):
            return self._error(replies.BAD_HELO)
        self._greeted(argument, extended=False)
        return Step(replies.helo(self.policy.hostname))

    def ehlo(self, argument: str) -> Step:
        if not valid_helo(argument):
            return self._error(replies.BAD_HELO)
        self._greeted(argument, extended=True)
        return Step(replies.ehlo(self.policy.hostname, self._extensions()))

    def mail(self, argument: str) -> Step:
        refusal = self._sequence(needs_transaction=False)
        if refusal is None and self.policy.submission is not None and self.user is None:
            refusal = replies.AUTH_REQUIRED  # RFC 6409 4.3: trusted networks are no exception
        if refusal is not None:
            return self._error(refusal)
        path = _after_keyword(argument, "FROM:")
        split = split_path(path) if path is not None else None
        if split is None:
            return self._error(
                replies.BAD_SENDER_SYNTAX if path is not None else replies.BAD_ARGUMENTS
            )
        address, parameters = split
        params = self._unextended(parameters) or parse_mail_params(parameters)
        if isinstance(params, Reply):
            return self._error(params)
        if address and parse_mailbox(address) is None:
            return self._error(replies.BAD_SENDER_SYNTAX)
        if not address.isascii() and not params.smtputf8:
            return self._error(replies.NEEDS_SMTPUTF8)
        if params.origin:
            refusal = xshadow.check_origin(self.upstream, params.origin)
            if refusal is not None:
                return self._error(refusal)
        if params.hold:
            refusal = xshadow.check_hold(self.upstream, params.origin, params.hold)
            if refusal is not None:
                return self._error(refusal)
        if self.user is not None and address.lower() not in self._addresses:
            return self._error(replies.SENDER_NOT_OWNED)
        held = self._room_for_mail(params.size)
        if held is not None:
            return held
        self.transaction = _Transaction(address, params)
        self.phase = Phase.MAIL
        return Step(replies.SENDER_OK)

    def _room_for_mail(self, size: int | None) -> Step | None:
        """The refusal of a well-formed MAIL for want of room: its size, the node's
        back pressure, or the client's or user's message rate; None when it may go on."""
        if size is not None and size > self.policy.limits.content.max_message_size:
            return Step(replies.MESSAGE_TOO_BIG)
        if not self._admitted():
            return Step(replies.INSUFFICIENT_RESOURCES)
        if not self._trusted and not self._counters.take_message(
            self._client, self._clock(), self.policy.limits.max_messages_per_minute
        ):
            return self._close(replies.TOO_MANY_MESSAGES)
        submission = self.policy.submission
        if (
            submission is not None
            and self.user is not None
            and not self._counters.take_message(
                f"user:{self.user}", self._clock(), submission.max_messages_per_minute_per_user
            )
        ):
            return self._close(replies.TOO_MANY_MESSAGES_FROM_USER)
        return None

    def rcpt(self, argument: str) -> Step:
        refusal = self._sequence(needs_transaction=True)
        if refusal is not None:
            return self._error(refusal)
        transaction = self.transaction
        assert transaction is not None
        path = _after_keyword(argument, "TO:")
        split = split_path(path) if path is not None else None
        if split is None:
            bad = replies.BAD_RECIPIENT_SYNTAX if path is not None else replies.BAD_ARGUMENTS
            return self._error(bad)
        address, parameters = split
        params = self._unextended(parameters) or parse_rcpt_params(parameters)
        if isinstance(params, Reply):
            return self._error(params)
        mailbox = parse_mailbox(address)
        if mailbox is None and address.lower() == "postmaster":
            # RFC 5321 4.5.1: <postmaster> without a domain must be accepted.
            mailbox = postmaster(self.policy.relay)
            if mailbox is None:
                return Step(replies.NO_SUCH_USER)
            address = str(mailbox)
        if mailbox is None:
            return self._error(replies.BAD_RECIPIENT_SYNTAX)
        if not address.isascii() and not transaction.params.smtputf8:
            return self._error(replies.NEEDS_SMTPUTF8)
        if len(transaction.recipients) >= self.policy.limits.max_recipients:
            return Step(replies.TOO_MANY_RECIPIENTS)
        if not self._admitted():  # the level may have risen since MAIL
            return Step(replies.INSUFFICIENT_RESOURCES)
        authenticated = self.user is not None
        verdict = decide_recipient(
            self.policy.relay, mailbox, client_ip=self.client_ip, authenticated=authenticated
        )
        if verdict.is_success:
            transaction.recipients.append(address)
            transaction.rcpt_params.append(params)
        return Step(verdict)

    def data(self, argument: str) -> Step:
        refusal = self._sequence(needs_transaction=True)
        if refusal is None and self.transaction is not None and not self.transaction.recipients:
            refusal = replies.NEEDS_RCPT
        if refusal is None and argument:
            refusal = replies.NO_ARGUMENTS_EXPECTED
        if refusal is not None:
            return self._error(refusal)
        self.phase = Phase.DATA
        return self._ask(replies.START_DATA, ReceiveData(self.policy.limits.content))

    def rset(self, argument: str) -> Step:
        if argument:
            return self._error(replies.NO_ARGUMENTS_EXPECTED)
        self._reset_transaction()
        return Step(replies.OK)

    def noop(self, argument: str) -> Step:
        return Step(replies.OK)  # RFC 5321 4.1.1.9: any argument is ignored

    def quit(self, argument: str) -> Step:
        if argument:
            return self._error(replies.NO_ARGUMENTS_EXPECTED)
        return self._close(replies.BYE)

    def vrfy(self, argument: str) -> Step:
        split = split_path(argument) if argument else None
        if split is None:
            return self._error(
                replies.BAD_ARGUMENTS if not argument else replies.BAD_RECIPIENT_SYNTAX
            )
        address, parameters = split
        if parameters.strip(" ").upper() not in ("", "SMTPUTF8"):
            return self._error(replies.UNKNOWN_PARAMETER)
        plain_name = bool(address) and set(address) <= _LOCAL_NAME
        if not plain_name and parse_mailbox(address) is None:
            return self._error(replies.BAD_RECIPIENT_SYNTAX)
        if not address.isascii() and not parameters.strip(" "):
            return self._error(replies.NEEDS_SMTPUTF8)
        return Step(replies.CANNOT_VRFY)

    def help(self, argument: str) -> Step:
        offered = [verb for verb in self._verbs if verb in _SYNTAX and self._may_use(verb)]
        if not argument:
            return Step(replies.help_commands(offered))
        topic = argument.upper()
        if topic not in offered:
            return self._error(replies.HELP_TOPIC_UNKNOWN)
        return Step(replies.help_syntax(_SYNTAX[topic]))

    def starttls(self, argument: str) -> Step:
        if not self.policy.starttls:
            return self._error(replies.NOT_IMPLEMENTED)
        if self.tls is not None:
            return self._error(replies.TLS_ALREADY)
        if argument:
            return self._error(replies.NO_ARGUMENTS_EXPECTED)
        if self.phase is Phase.HELLO:
            return self._error(replies.NEEDS_EHLO)
        return self._ask(replies.READY_FOR_TLS, StartTls())

    def auth(self, argument: str) -> Step:
        offer = self.policy.submission
        if offer is None:
            return self._error(replies.AUTH_NOT_OFFERED)
        if self.tls is None and not offer.plaintext_auth:
            return self._error(replies.AUTH_NEEDS_TLS)
        refusal = None
        if not self.extended:
            refusal = replies.NEEDS_EHLO  # RFC 4954 4: AUTH is an extension
        elif self.user is not None:
            # (Never inside a transaction: MAIL needs AUTH first on a submission listener.)
            refusal = replies.AUTH_ALREADY
        if refusal is not None:
            return self._error(refusal)
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in MECHANISMS:
            return self._error(replies.AUTH_MECHANISM_UNKNOWN)
        failures = self._counters.auth_failures(self._client, self._clock(), offer.failure_window)
        if failures >= offer.max_failures:
            return self._close(replies.TOO_MANY_AUTH_FAILURES)
        self._sasl = _SaslExchange(mechanism)
        if not initial:
            prompt = "" if mechanism == "PLAIN" else LOGIN_USERNAME
            return Step(replies.auth_challenge(prompt))
        return self._sasl_text(initial.strip(" "))

    def xshadow(self, argument: str) -> Step:
        offer = self.policy.shadow
        assert offer is not None
        return self._shadow_verb(
            lambda: xshadow.xshadow(offer, self.client_ip, self.upstream, argument)
        )

    def xqdiscard(self, argument: str) -> Step:
        return self._shadow_verb(lambda: xshadow.xqdiscard(self.upstream, argument))

    def xqtaken(self, argument: str) -> Step:
        return self._shadow_verb(lambda: xshadow.xqtaken(self.upstream, argument))

    # The rest.

    def _shadow_verb(
        self, decide: Callable[[], Reply | RegisterUpstream | ListNotices | DropTaken]
    ) -> Step:
        refusal = xshadow.check_verb(
            extended=self.extended, in_transaction=self.transaction is not None
        )
        decision = refusal if refusal is not None else decide()
        if isinstance(decision, Reply):
            return self._error(decision)
        return self._ask(None, decision)

    def _admitted(self) -> bool:
        """Whether the node's back-pressure level lets this client send new mail now."""
        # Authenticated users are privileged too: they are known, as trusted networks are.
        return admits(self._pressure(), privileged=self._privileged or self.user is not None)

    def _sasl_response(self, line: bytes) -> Step:
        try:
            text = line.rstrip(b"\r\n").decode("ascii").strip(" ")
        except UnicodeDecodeError:
            text = ""
        return self._sasl_text(text)

    def _sasl_text(self, text: str) -> Step:
        """One base64 response of the exchange in progress."""
        exchange = self._sasl
        assert exchange is not None
        if text == "*":
            self._sasl = None
            return self._error(replies.AUTH_CANCELLED)
        data = decode_response(text)
        if data is None:
            self._sasl = None
            return self._error(replies.AUTH_BAD_RESPONSE)
        credentials: tuple[str, str] | None
        if exchange.mechanism == "PLAIN":
            credentials = plain_credentials(data)
        elif exchange.username is None:
            username = login_text(data)
            if username:
                exchange.username = username
                return Step(replies.auth_challenge(LOGIN_PASSWORD))
            credentials = None
        else:
            password = login_text(data)
            credentials = None if password is None else (exchange.username, password)
        self._sasl = None
        if credentials is None:
            return self._error(replies.AUTH_BAD_RESPONSE)
        offer = self.policy.submission
        assert offer is not None
        return self._ask(
            None, CheckCredentials(credentials[0], credentials[1], offer.failure_delay)
        )

    def _auth_failed(self) -> Step:
        offer = self.policy.submission
        assert offer is not None
        self._counters.auth_failed(self._client, self._clock(), offer.failure_window)
        return self._error(replies.AUTH_FAILED)

    def _tls_started(self, version: str) -> Step:
        # RFC 3207 4.2: the client starts afresh, with EHLO; nothing said before counts.
        self.tls = version
        self.phase = Phase.HELLO
        self.helo_name = None
        self.extended = False
        self.transaction = None
        self.upstream = None
        return Step()

    def _not_implemented(self, argument: str) -> Step:
        return self._error(replies.NOT_IMPLEMENTED)

    def _data_received(self, outcome: DataReceived) -> Step:
        transaction = self.transaction
        assert transaction is not None
        summary = outcome.summary
        if summary.fault is not None:
            return self._end_transaction(_FAULT_REPLIES[summary.fault])
        now = self._clock()
        queue_id = new_queue_id(now, self._rng)
        helo = self.helo_name or ""
        moment = datetime.fromtimestamp(now, UTC)
        trace = received_header(
            helo=helo,
            client_ip=self.client_ip,
            hostname=self.policy.hostname,
            protocol=self._protocol(),
            queue_id=queue_id,
            recipients=transaction.recipients,
            now=moment,
            tls=self.tls,
            user=self.user,
        )
        message_id = summary.message_id
        if self.policy.submission is not None:
            # RFC 6409 8.2, 8.3: a submission server completes what the client left out.
            if not summary.has_date:
                trace += f"Date: {format_datetime(moment)}\r\n".encode()
            if message_id is None:
                message_id = f"<{queue_id}.{self._rng.getrandbits(32):08x}@{self.policy.hostname}>"
                trace += f"Message-ID: {message_id}\r\n".encode()
        before_ack = self._before_ack()
        message = ReceivedMessage(
            queue_id=queue_id,
            sender=transaction.sender,
            recipients=tuple(transaction.recipients),
            trace=trace,
            content=outcome.content,
            received_at=now,
            message_id=message_id,
            client_ip=self.client_ip,
            helo=helo,
            mail_params=transaction.params,
            rcpt_params=tuple(transaction.rcpt_params),
            upstream=self.upstream,
            # Held back (at most twice the copy's timeout) until its copy is made.
            not_before=now + 2 * before_ack.timeout if before_ack is not None else None,
        )
        # XSHADOW.md, delayed acknowledgement: only a sender that holds no shadow waits,
        # and not when its message is copied before the 250 instead.
        delayed = (
            self.policy.max_ack_delay is not None and self.upstream is None and before_ack is None
        )
        return self._ask(
            None,
            Commit(message, watch_departure=delayed, copy_before_ack=before_ack is not None),
        )

    def _before_ack(self) -> BeforeAck | None:
        """The copy before the 250, for a sender that holds no shadow (a redundancy copy
        itself is never copied again)."""
        return self.policy.before_ack if self.upstream is None else None

    def _committed(self, commit: Commit, outcome: Committed) -> Step:
        queue_id = commit.message.queue_id
        before_ack = self._before_ack()
        if before_ack is not None:
            message = dataclasses.replace(commit.message, owed_to=outcome.owed_to)
            return self._ask(None, MakeRedundant(message, before_ack.required, before_ack.timeout))
        if commit.watch_departure and self.policy.max_ack_delay is not None:
            return self._ask(None, AwaitDeparture(queue_id, self.policy.max_ack_delay))
        return self._end_transaction(replies.queued(queue_id))

    def _end_transaction(self, reply: Reply) -> Step:
        self._reset_transaction()
        return Step(reply)

    def _greeted(self, name: str, *, extended: bool) -> None:
        # RFC 5321 4.1.4: HELO and EHLO reset the transaction, as RSET does.
        self.helo_name = name
        self.extended = extended
        self.phase = Phase.READY
        self.transaction = None

    def _protocol(self) -> str:
        """The Received: `with` keyword (RFC 3848): ESMTP, then S for TLS, A for AUTH."""
        if not self.extended:
            return "SMTP"
        return "ESMTP" + ("S" if self.tls else "") + ("A" if self.user else "")

    def _may_use(self, verb: str) -> bool:
        if verb == "STARTTLS":
            return self.policy.starttls and self.tls is None
        if verb == "AUTH":
            return self._auth_offered()
        shadow = self.policy.shadow
        return verb not in _XSHADOW_VERBS or (shadow is not None and shadow.is_peer(self.client_ip))

    def _auth_offered(self) -> bool:
        offer = self.policy.submission
        return offer is not None and (self.tls is not None or offer.plaintext_auth)

    def _extensions(self) -> list[str]:
        content = self.policy.limits.content
        extensions = [
            f"SIZE {content.max_message_size}",
            "8BITMIME",
            "SMTPUTF8",
            "PIPELINING",
            "ENHANCEDSTATUSCODES",
            "DSN",
        ]
        if self._may_use("STARTTLS"):
            extensions.append("STARTTLS")
        if self._auth_offered() and self.user is None:
            extensions.append("AUTH " + " ".join(MECHANISMS))
        if self.policy.shadow is not None and self._may_use("XSHADOW"):
            extensions.append(self.policy.shadow.extension)
        return extensions

    def _unextended(self, parameters: str) -> Reply | None:
        # RFC 1869 6: MAIL and RCPT parameters only in a session opened with EHLO.
        if parameters.strip(" ") and not self.extended:
            return replies.BAD_ARGUMENTS
        return None

    def _sequence(self, *, needs_transaction: bool) -> Reply | None:
        if self.phase is Phase.HELLO:
            return replies.NEEDS_HELO
        if needs_transaction and self.transaction is None:
            return replies.NEEDS_MAIL
        if not needs_transaction and self.transaction is not None:
            return replies.NESTED_MAIL
        return None

    def _reset_transaction(self) -> None:
        self.transaction = None
        if self.phase in (Phase.MAIL, Phase.DATA):
            self.phase = Phase.READY

    def _ask(self, reply: Reply | None, action: Action) -> Step:
        self.pending = action
        return Step(reply, action)

    def _count_command(self) -> bool:
        """Count one command line; True when it is one past the limit."""
        if self.pending is not None or self.phase in (Phase.GREETING, Phase.CLOSED):
            raise RuntimeError(f"a command line in phase {self.phase} with {self.pending!r}")
        self.commands += 1
        return self.commands > self.policy.limits.max_commands

    def _error(self, reply: Reply) -> Step:
        """A command refused for its syntax or order: counted against max_errors."""
        self.errors += 1
        if self.errors > self.policy.limits.max_errors:
            return self._close(replies.TOO_MANY_ERRORS)
        return Step(reply)

    def _unknown_command(self, reply: Reply) -> Step:
        # Lines that are no command at all count too: they are how other protocols (an
        # HTTP request sent to port 25) look, and such a client should be gone quickly.
        self._unknown += 1
        if self._unknown >= MAX_UNKNOWN_COMMANDS:
            return self._close(replies.TOO_MANY_UNKNOWN)
        return self._error(reply)

    def _close(self, reply: Reply) -> Step:
        self.phase = Phase.CLOSED
        self.transaction = None
        return Step(reply, Close())

    def _expect(self, phase: Phase) -> None:
        if self.phase is not phase:
            raise RuntimeError(f"expected phase {phase}, in {self.phase}")


def _failure_reply(failed: Outcome) -> Reply:
    # A full disk is the node's resources, not a fault: 452 4.3.1, as back pressure says.
    if isinstance(failed, Failed) and failed.no_space:
        return replies.INSUFFICIENT_RESOURCES
    return replies.LOCAL_ERROR


def _after_keyword(argument: str, keyword: str) -> str | None:
    """The text after MAIL's FROM: or RCPT's TO: (any case), or None without it."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    return argument[len(keyword) :]
