"""Interoperation with real MTAs: Postfix as hubd's next hop and sender, swaks as a client.

Postfix runs as an instance of its own (`postfix -c DIR start`, as root): main.cf, master.cf,
queue and log under tmp_path, listening only on a 127.0.x.y address and a free port. Its
data_directory is the one exception: the master opens data_directory/master.lock as the
unprivileged `postfix` user, who cannot pass through pytest's 0700 tmp_path ancestors, so it is a
temporary directory of its own under the system temp dir. Teardown stops the instance with
`postfix stop` and then kills, by pid, any process still running with this instance's
MAIL_CONFIG, so nothing is left behind even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import os
import pty
import re
import select
import shutil
import signal
import smtplib
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from hubd.node import Node
from hubd.testing import (
    Cluster,
    async_wait_until,
    free_loopback_address,
    maildir_messages,
    wait_until,
)
from hubd.tracking import read_events
from hubd.users import User, hash_password, write_users
from tests.conftest import NodeFactory
from tests.pki import Pki

pytestmark = pytest.mark.integration

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
POSTFIX = shutil.which("postfix", path=_SEARCH_PATH)
SWAKS = shutil.which("swaks", path=_SEARCH_PATH)
needs_postfix = pytest.mark.skipif(
    POSTFIX is None, reason="postfix is not installed (apt-get install postfix; .ci/run does)"
)
needs_swaks = pytest.mark.skipif(
    SWAKS is None, reason="swaks is not installed (apt-get install swaks; .ci/run does)"
)

POSTFIX_HOSTNAME = "postfix.interop.test"

# Only the services this relay uses; every one runs outside a chroot. postlogd writes maillog_file.
MASTER_CF = """\
{address} inet n - n - - smtpd
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
tlsmgr    unix  - - n 1000? 1 tlsmgr
"""

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {queue}
data_directory = {data}
maillog_file = {maillog}
maillog_file_prefixes = {root}
myhostname = {hostname}
mydomain = interop.test
mydestination =
# Must name a configured interface (127.0.x.y is not one); master.cf says where smtpd listens.
inet_interfaces = loopback-only
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {relay_domains}
transport_maps = inline:{{ {transports} }}
default_transport = error:5.1.2 no route outside this test
smtp_bind_address = {host}
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
alias_maps =
alias_database =
biff = no
"""


def _run_postfix(config_dir: Path, *args: str, timeout: float = 20.0) -> tuple[int, str]:
    """Run `postfix -c DIR ARGS`; stderr is a terminal, where it reports errors it cannot log."""
    assert POSTFIX is not None
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [POSTFIX, "-c", str(config_dir), *args],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=terminal,
        )
    finally:
        os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # EIO: every writer has closed the terminal
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            elif process.poll() is not None:
                break  # a daemon it started may hold the terminal; the command itself is done
        code = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise
    finally:
        os.close(controller)
    return code, b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")


def _alive(pid: int) -> bool:
    """True if `pid` runs (a zombie does not: this sandbox's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _instance_pids(config_dir: Path) -> list[int]:
    """Live processes whose environment names this instance's config directory."""
    marker = f"MAIL_CONFIG={config_dir}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ and _alive(int(entry.name)):
            pids.append(int(entry.name))
    return pids


class PostfixInstance:
    """A Postfix of its own: config, queue and maillog under `root`, one smtpd on `address`."""

    def __init__(
        self,
        root: Path,
        address: tuple[str, int],
        transports: dict[str, str],
        extra_main_cf: str = "",
        files: dict[str, bytes] | None = None,
    ) -> None:
        self.root = root
        self.host, self.port = address
        self.config_dir = root / "conf"
        self.queue_dir = root / "queue"
        self.maillog = root / "maillog"
        self._data = tempfile.TemporaryDirectory(prefix="hubd-interop-postfix-")
        self.transports = transports
        # More main.cf lines ({data} is a directory the postfix user can read), and files
        # to put there (tmp_path is out of that user's reach).
        self.extra_main_cf = extra_main_cf
        self.files = files or {}

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    def log(self) -> str:
        """Postfix's log so far (for assertion messages)."""
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def start(self) -> None:
        """Write the configuration, check it, start the master and wait for smtpd's 220."""
        self.config_dir.mkdir(parents=True)
        self.queue_dir.mkdir(mode=0o755)  # `postfix check` makes the subdirectories
        data = Path(self._data.name)
        shutil.chown(data, user="postfix")
        for name, content in self.files.items():
            (data / name).write_bytes(content)
            shutil.chown(data / name, user="postfix")
        transports = ", ".join(f"{domain}={hop}" for domain, hop in self.transports.items())
        extra = self.extra_main_cf.format(data=data)
        redefined = {line.partition("=")[0].strip() for line in extra.splitlines()}
        base = "".join(
            line
            for line in MAIN_CF.splitlines(keepends=True)
            if line.partition("=")[0].strip() not in redefined
        )
        (self.config_dir / "main.cf").write_text(
            base.format(
                queue=self.queue_dir,
                data=data,
                maillog=self.maillog,
                root=self.root,
                hostname=POSTFIX_HOSTNAME,
                relay_domains=", ".join(self.transports),
                transports=transports,
                host=self.host,
            )
            + extra
        )
        (self.config_dir / "master.cf").write_text(MASTER_CF.format(address=self))
        for command in ("check", "start"):
            code, output = _run_postfix(self.config_dir, command)
            assert code == 0, f"postfix {command} exited {code}:\n{output}\n{self.log()}"
        wait_until(self._greets, 15, f"Postfix to greet on {self}")

    def problems(self) -> list[str]:
        """Log lines where Postfix complained (about hubd's SMTP, for one)."""
        pattern = re.compile(r"\b(warning|error|fatal|panic): ")
        return [line for line in self.log().splitlines() if pattern.search(line)]

    def _greets(self) -> bool:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=2) as client:
                return client.noop()[0] == 250
        except OSError:
            return False

    def stop(self) -> None:
        """`postfix stop`, then SIGKILL whatever of this instance still runs; remove the data."""
        try:
            if self.queue_dir.joinpath("pid", "master.pid").exists():
                with contextlib.suppress(subprocess.TimeoutExpired):
                    _run_postfix(self.config_dir, "stop", timeout=15)
            with contextlib.suppress(TimeoutError):
                wait_until(lambda: not _instance_pids(self.config_dir), 5, "Postfix to exit")
            for pid in _instance_pids(self.config_dir):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not _instance_pids(self.config_dir), 5, "killed Postfix to exit")
        finally:
            self._data.cleanup()


PostfixFactory = Callable[..., Awaitable[PostfixInstance]]


@pytest.fixture
async def start_postfix(tmp_path: Path) -> AsyncIterator[PostfixFactory]:
    """Start Postfix instances on given addresses with given transports; all stop at the end."""
    instances: list[PostfixInstance] = []

    async def start(
        address: tuple[str, int], transports: dict[str, str], **extra: Any
    ) -> PostfixInstance:
        root = tmp_path / f"postfix{len(instances)}"
        instance = PostfixInstance(root, address, transports, **extra)
        instances.append(instance)
        await asyncio.to_thread(instance.start)
        return instance

    yield start
    for instance in reversed(instances):
        await asyncio.to_thread(instance.stop)


# Dot lines (stuffed and unstuffed at every hop), trailing blanks, a tab and a long line.
BODY = b"".join(
    line + b"\r\n"
    for line in [
        b"first line",
        b".",
        b"..two dots",
        b".leading dot",
        b"trailing blanks   ",
        b"\ta tab",
        b"x" * 900,
        b"",
        b"last line",
    ]
)


def _message(tag: str, recipient: str) -> bytes:
    headers = (
        f"From: alice@a.test\r\nTo: {recipient}\r\nSubject: {tag}\r\n"
        f"Date: Mon, 24 Nov 2025 10:00:00 +0000\r\nMessage-ID: <{tag}@a.test>\r\n\r\n"
    )
    return headers.encode() + BODY


def _send(node: Node, recipient: str, tag: str) -> tuple[int, bytes]:
    address = node.relay_addresses[0]
    with smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=10) as c:
        c.ehlo()
        c.mail("alice@a.test")
        c.rcpt(recipient)
        return c.data(_message(tag, recipient))


def _headers(data: bytes) -> Message:
    return email.parser.BytesHeaderParser().parsebytes(data)


def _received(data: bytes) -> list[str]:
    """The Received: headers, top (newest) first, unfolded."""
    return [" ".join(str(h).split()) for h in _headers(data).get_all("Received", [])]


def _events(node: Node, event: str) -> list[dict[str, Any]]:
    return [e for e in read_events(node.config.node.data_dir / "tracking") if e["event"] == event]


async def _relay_through_postfix(
    start_node: NodeFactory, start_postfix: PostfixFactory, **b_settings: Any
) -> tuple[Node, PostfixInstance, Node]:
    """B keeps corp.test; Postfix relays corp.test to B and a.test to A; A routes corp.test
    to Postfix and keeps a.test."""
    postfix_address = free_loopback_address()
    b = await start_node("b", local_domains=["corp.test"], **b_settings)
    a = await start_node(
        "a",
        local_domains=["a.test"],
        routes=[{"domains": ["corp.test"], "next_hops": ["{}:{}".format(*postfix_address)]}],
    )
    hops = {"corp.test": b.relay_addresses[0], "a.test": a.relay_addresses[0]}
    postfix = await start_postfix(
        postfix_address, {d: f"smtp:[{h.host}]:{h.port}" for d, h in hops.items()}
    )
    return a, postfix, b


async def _wait_for_mail(box: Path, postfix: PostfixInstance, what: str) -> dict[Path, bytes]:
    """Wait for mail in a Maildir; on timeout, say what Postfix logged."""
    try:
        return await async_wait_until(lambda: maildir_messages(box), 15, what)
    except TimeoutError as error:
        raise TimeoutError(f"{error}; Postfix log:\n{postfix.log()}") from None


def _postfix_queue_id(reply: str) -> str:
    """The queue id in Postfix's "250 2.0.0 Ok: queued as ID" (which hubd tracked as SEND)."""
    match = re.fullmatch(r"250 2\.0\.0 Ok: queued as (\w+)", reply)
    assert match, reply
    return match[1]


async def _postfix_status(postfix: PostfixInstance, queue_id: str, recipient: str) -> str:
    """Postfix's final log line for one recipient of one queued message."""

    def status() -> str:
        prefix = f" {queue_id}: to=<{recipient}>,"
        lines = [line for line in postfix.log().splitlines() if prefix in line]
        return next((line for line in lines if " status=" in line), "")

    return await async_wait_until(status, 10, f"Postfix to log {queue_id} to {recipient}")


@needs_postfix
class TestPostfix:
    async def test_relayed_through_postfix_into_hubd(
        self, start_node: NodeFactory, start_postfix: PostfixFactory
    ) -> None:
        """A relays to Postfix, Postfix relays to B: the body arrives unchanged under three
        Received headers."""
        a, postfix, b = await _relay_through_postfix(start_node, start_postfix)

        code, reply = await asyncio.to_thread(_send, a, "bob@corp.test", "via-postfix")
        assert code == 250, reply

        mailbox = b.config.mailbox_dir / "corp.test" / "bob"
        files = await _wait_for_mail(mailbox, postfix, "delivery on B")
        (data,) = files.values()
        assert data.split(b"\r\n\r\n", 1)[1] == BODY
        assert _headers(data)["Message-ID"] == "<via-postfix@a.test>"
        by_b, by_postfix, by_a = _received(data)
        assert by_b.startswith(f"from {POSTFIX_HOSTNAME} ([{postfix.host}])")
        assert "by b.hubd.test (hubd)" in by_b
        assert by_postfix.startswith(f"from a.hubd.test (unknown [{a.relay_addresses[0].host}])")
        assert f"by {POSTFIX_HOSTNAME} (Postfix) with ESMTP" in by_postfix
        assert "for <bob@corp.test>" in by_postfix
        assert by_a.startswith("from client.test")
        assert "by a.hubd.test (hubd)" in by_a

        (sent,) = await async_wait_until(lambda: _events(a, "SEND"), 10, "A's SEND")
        assert sent["remote"] == str(postfix)
        postfix_id = _postfix_queue_id(sent["reply"])
        relayed = await _postfix_status(postfix, postfix_id, "bob@corp.test")
        assert f" relay={b.relay_addresses[0].host}[" in relayed
        assert " status=sent (250 2.0.0 " in relayed
        assert not postfix.problems()

    async def test_refused_by_hubd_is_postfixs_to_bounce(
        self, start_node: NodeFactory, start_postfix: PostfixFactory
    ) -> None:
        """A recipient B refuses: A's job ends with Postfix's 250, and Postfix's bounce comes
        back to the sender through A."""
        a, postfix, b = await _relay_through_postfix(
            start_node,
            start_postfix,
            mailboxes={"catch_all": False, "recipients": ["bob@corp.test"]},
        )

        code, reply = await asyncio.to_thread(_send, a, "nobody@corp.test", "refused")
        assert code == 250, reply

        (sent,) = await async_wait_until(lambda: _events(a, "SEND"), 15, "A's SEND to Postfix")
        assert sent["recipients"] == ["nobody@corp.test"]
        assert sent["remote"] == str(postfix)
        postfix_id = _postfix_queue_id(sent["reply"])
        assert not _events(a, "FAIL")

        # Postfix's own failure notice comes back to the sender, through A.
        box = a.config.mailbox_dir / "a.test" / "alice"
        files = await _wait_for_mail(box, postfix, "Postfix's bounce on A")
        (notice,) = files.values()
        assert _headers(notice).get_content_type() == "multipart/report"
        assert b"Final-Recipient: rfc822; nobody@corp.test" in notice
        assert b"Status: 5.1.1" in notice
        assert not maildir_messages(b.config.mailbox_dir / "corp.test")
        refused = await _postfix_status(postfix, postfix_id, "nobody@corp.test")
        assert f" relay={b.relay_addresses[0].host}[" in refused
        assert " status=bounced (host " in refused
        assert "said: 550 5.1.1 " in refused
        assert not postfix.problems()


SASL_PASSWORD = "postfix-s3cret"

# Postfix's SMTP client as an authenticated submitter: STARTTLS (required), then AUTH with
# the password of the next hop (Cyrus SASL's PLAIN or LOGIN: Debian's libsasl2-modules).
SASL_MAIN_CF = """\
smtp_tls_security_level = encrypt
smtp_tls_CAfile = {{data}}/ca.pem
smtp_sasl_auth_enable = yes
smtp_sasl_password_maps = inline:{{{{ [{host}]:{port}=alice:{password} }}}}
smtp_sasl_security_options = noanonymous
smtp_sasl_tls_security_options = noanonymous
"""


@needs_postfix
class TestPostfixSasl:
    async def test_postfix_relays_into_submission_with_auth(
        self, start_node: NodeFactory, start_postfix: PostfixFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """Postfix (smtp_sasl_auth_enable) relays into hubd's submission port: STARTTLS, AUTH
        as alice, and the message is delivered with ESMTPSA and alice's name in Received:."""
        host = free_loopback_address()[0]
        users = tmp_path / "users.toml"
        write_users(
            users, {"alice": User("alice", hash_password(SASL_PASSWORD), ("alice@a.test",))}
        )
        hub = await start_node(
            "hub",
            address=(host, 0),
            local_domains=["corp.test"],
            tls=pki.tls_settings(host),
            submission={"listen": [f"{host}:0"], "users_file": str(users)},
        )
        submission = hub.submission_addresses[0]
        postfix_address = free_loopback_address()
        postfix = await start_postfix(
            postfix_address,
            {"corp.test": f"smtp:[{submission.host}]:{submission.port}"},
            extra_main_cf=SASL_MAIN_CF.format(
                host=submission.host, port=submission.port, password=SASL_PASSWORD
            ),
            files={"ca.pem": pki.ca_file.read_bytes()},
        )

        def send() -> None:
            with smtplib.SMTP(*postfix_address, local_hostname="client.test", timeout=10) as c:
                c.sendmail("alice@a.test", ["bob@corp.test"], _message("sasl", "bob@corp.test"))

        await asyncio.to_thread(send)
        box = hub.config.mailbox_dir / "corp.test" / "bob"
        files = await _wait_for_mail(box, postfix, "delivery through Postfix with AUTH")
        (data,) = files.values()
        by_hub = _received(data)[0]
        assert by_hub.startswith(f"from {POSTFIX_HOSTNAME} ([{postfix.host}])"), by_hub
        assert "with ESMTPSA id" in by_hub, by_hub
        assert "authenticated as alice)" in by_hub, by_hub
        assert not postfix.problems(), postfix.problems()

    async def test_postfix_into_the_clusters_submission_port(
        self, start_postfix: PostfixFactory, tmp_path: Path
    ) -> None:
        """The local cluster's submission port takes Postfix as an authenticated client, with
        the ready user and the cluster's CA (hubd.testing.Cluster hands out both)."""
        cluster = Cluster(tmp_path / "cluster", hubs=1)
        await asyncio.to_thread(cluster.__enter__)
        try:
            user, password = cluster.credentials
            submission = cluster.submission("hub-1")
            postfix_address = free_loopback_address()
            postfix = await start_postfix(
                postfix_address,
                {"corp.test": f"smtp:[{submission.host}]:{submission.port}"},
                extra_main_cf=SASL_MAIN_CF.replace("alice:", f"{user}:").format(
                    host=submission.host, port=submission.port, password=password
                ),
                files={"ca.pem": cluster.ca_file.read_bytes()},
            )

            def send() -> None:
                with smtplib.SMTP(*postfix_address, local_hostname="client.test", timeout=10) as c:
                    c.sendmail("client@corp.test", ["gina@corp.test"], _message("c", "x"))

            await asyncio.to_thread(send)
            message = await asyncio.to_thread(
                cluster.wait_for_message, "gina@corp.test", "<c@a.test>", 60
            )
            trace = " ".join(str(h) for h in message.get_all("Received", []))
            assert f"authenticated as {user})" in trace, trace
            assert not postfix.problems(), postfix.problems()
        finally:
            await asyncio.to_thread(cluster.__exit__, None, None, None)


async def _swaks(*args: str) -> tuple[int, str]:
    """Run swaks; return its exit code and its transcript (stdout and stderr together)."""
    assert SWAKS is not None
    process = await asyncio.create_subprocess_exec(
        SWAKS,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 20)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


@needs_swaks
class TestSwaks:
    @pytest.mark.parametrize("options", [[], ["--pipeline"]], ids=["plain", "pipeline"])
    async def test_swaks_submission(self, start_node: NodeFactory, options: list[str]) -> None:
        """swaks submits a message: exit 0, a 250 queued reply, and the Maildir delivery."""
        node = await start_node("hub", local_domains=["corp.test"])
        address = node.relay_addresses[0]
        tag = "swaks-" + ("-".join(o.strip("-") for o in options) or "plain")
        data = (
            f"From: alice@outside.test\\nTo: bob@corp.test\\nSubject: {tag}\\n"
            f"Message-ID: <{tag}@outside.test>\\n\\nhello from swaks\\n.dot line\\nend"
        )
        code, transcript = await _swaks(
            "--server",
            f"{address.host}:{address.port}",
            "--helo",
            "client.test",
            "--from",
            "alice@outside.test",
            "--to",
            "bob@corp.test",
            "--data",
            data,
            "--timeout",
            "10",
            *options,
        )
        assert code == 0, transcript
        assert re.search(r"^<-  250 2\.0\.0 \S+ queued$", transcript, re.MULTILINE), transcript
        # Pipelined, MAIL, RCPT and DATA all go out before the first of their replies comes back.
        sent_together = " -> MAIL FROM:<alice@outside.test>\n -> RCPT TO:<bob@corp.test>\n"
        assert (sent_together in transcript) == bool(options), transcript

        mailbox = node.config.mailbox_dir / "corp.test" / "bob"
        files = await async_wait_until(lambda: maildir_messages(mailbox), 15, "the delivery")
        (delivered,) = files.values()
        assert _headers(delivered)["Subject"] == tag
        assert delivered.endswith(b"\r\n\r\nhello from swaks\r\n.dot line\r\nend\r\n")
