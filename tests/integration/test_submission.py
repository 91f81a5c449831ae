"""Client submission on the wire: STARTTLS and implicit TLS, AUTH PLAIN and LOGIN, users.

Real clients (smtplib, swaks), real certificates (a trustme CA), a real users file with
argon2 hashes; every refusal is checked to have delivered nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import smtplib
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from hubd.config import HostPort
from hubd.node import Node
from hubd.testing import (
    NodeProcess,
    free_loopback_address,
    maildir_messages,
    wait_until,
    write_config,
)
from hubd.users import User, hash_password, write_users
from tests.conftest import NodeFactory, merge, node_settings
from tests.integration.rawsmtp import RawClient
from tests.pki import Pki

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
MESSAGE = b"Subject: submitted\r\n\r\nhello\r\n"  # no Date, no Message-ID: the server adds them


def users_file(path: Path, **users: tuple[str, ...]) -> Path:
    write_users(
        path,
        {name: User(name, hash_password(PASSWORD), addresses) for name, addresses in users.items()},
    )
    return path


def submission_settings(host: str, pki: Pki, users: Path, **submission: Any) -> dict[str, Any]:
    return {
        "local_domains": ["corp.test"],
        # Every loopback address is trusted: a trusted network must not bypass AUTH here.
        "smtp": {"trusted_networks": ["127.0.0.0/8"]},
        "tls": pki.tls_settings(host),
        "submission": {
            "listen": [f"{host}:0"],
            "tls_listen": [f"{host}:0"],
            "users_file": str(users),
            "auth_failure_delay": "100ms",
            **submission,
        },
    }


async def submission_node(
    start_node: NodeFactory, pki: Pki, tmp_path: Path, **submission: Any
) -> Node:
    host = free_loopback_address()[0]
    users = users_file(tmp_path / "users.toml", alice=("alice@corp.test", "al@corp.test"))
    return await start_node(
        address=(host, 0), **submission_settings(host, pki, users, **submission)
    )


def starttls_client(node: Node, pki: Pki) -> smtplib.SMTP:
    address = node.submission_addresses[0]
    client = smtplib.SMTP(address.host, address.port, local_hostname="client.test", timeout=30)
    client.starttls(context=pki.client_context())
    client.ehlo("client.test")
    return client


async def delivered(node: Node, count: int) -> list[bytes]:
    boxes = node.config.mailbox_dir

    def enough() -> bool:
        return len(maildir_messages(boxes)) >= count

    await asyncio.to_thread(wait_until, enough, 15, f"{count} messages delivered")
    return list(maildir_messages(boxes).values())


async def enqueued(node: Node) -> int:
    return (await node.repository.stats()).get("ops:enqueue", 0)


class TestRealClients:
    async def test_smtplib_starttls_auth_plain(
        self, start_node: NodeFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """smtplib: STARTTLS, AUTH PLAIN, a message delivered with Date, Message-ID and a
        Received: naming TLS and the user."""
        node = await submission_node(start_node, pki, tmp_path)

        def submit() -> None:
            with starttls_client(node, pki) as client:
                client.user, client.password = "alice", PASSWORD
                code, _ = client.auth("PLAIN", client.auth_plain)
                assert code == 235
                client.sendmail("Alice@corp.test", ["bob@corp.test"], MESSAGE)

        await asyncio.to_thread(submit)
        (stored,) = await delivered(node, 1)
        header = stored.split(b"\r\n\r\n", 1)[0]
        assert b"with ESMTPSA id" in header, header
        assert b"; authenticated as alice)" in header, header
        assert b"(using TLSv1." in header, header
        assert b"\r\nDate: " in header
        assert b"\r\nMessage-ID: <" in header

    async def test_smtplib_implicit_tls_auth_login(
        self, start_node: NodeFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """smtplib over implicit TLS (465 style) with AUTH LOGIN, relaying to another domain."""
        node = await submission_node(start_node, pki, tmp_path)
        address = node.submission_tls_addresses[0]

        def submit() -> dict[str, tuple[int, bytes]]:
            with smtplib.SMTP_SSL(
                address.host, address.port, context=pki.client_context(), timeout=30
            ) as client:
                client.ehlo("client.test")
                assert "STARTTLS" not in client.esmtp_features.get("auth", "")
                client.user, client.password = "alice", PASSWORD
                code, _ = client.auth("LOGIN", client.auth_login)
                assert code == 235
                return client.sendmail("al@corp.test", ["bob@corp.test", "x@far.test"], MESSAGE)

        assert await asyncio.to_thread(submit) == {}  # every recipient accepted
        assert await enqueued(node) == 1

    @pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
    async def test_swaks_tls_auth(self, start_node: NodeFactory, pki: Pki, tmp_path: Path) -> None:
        """swaks --tls --auth PLAIN and LOGIN, verifying the certificate against the CA."""
        node = await submission_node(start_node, pki, tmp_path)
        address = node.submission_addresses[0]
        for mechanism in ("PLAIN", "LOGIN"):
            process = await asyncio.create_subprocess_exec(
                "swaks", "--server", address.host, "--port", str(address.port),
                "--tls", "--tls-verify", "--tls-ca-path", str(pki.ca_file),
                "--auth", mechanism, "--auth-user", "alice", "--auth-password", PASSWORD,
                "--from", "alice@corp.test", "--to", "bob@corp.test",
                "--ehlo", "client.test", "--timeout", "20",
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            async with asyncio.timeout(60):
                output, _ = await process.communicate()
            said = output.decode(errors="replace")
            assert process.returncode == 0, said
            assert "<~  235 2.7.0" in said, said
        await delivered(node, 2)


async def raw(address: HostPort) -> RawClient:
    return await RawClient.connect(address)


@contextlib.asynccontextmanager
async def secured(node: Node, pki: Pki, source: str | None = None) -> AsyncIterator[RawClient]:
    """A raw client past STARTTLS and the second EHLO."""
    address = node.submission_addresses[0]
    client = await RawClient.connect(address, source)
    try:
        await client.command("EHLO client.test")
        assert (await client.command("STARTTLS")).code == 220
        await client.starttls(pki.client_context(), address.host)
        assert (await client.command("EHLO client.test")).code == 250
        yield client
    finally:
        await client.close()


def plain(user: str, password: str) -> str:
    import base64

    return base64.b64encode(f"\0{user}\0{password}".encode()).decode()


class TestRefusals:
    async def test_refused_and_nothing_delivered(
        self, start_node: NodeFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """Wrong password 535 5.7.8 (after the delay), AUTH before TLS 538 5.7.11, MAIL before
        AUTH 530 5.7.0 (from a trusted address), a foreign sender 553 5.7.1, AUTH on the
        relay listener 503 5.5.1: and not one message is queued."""
        node = await submission_node(start_node, pki, tmp_path)
        async with secured(node, pki) as client:
            started = time.monotonic()
            reply = await client.command(f"AUTH PLAIN {plain('alice', 'wrong')}")
            assert reply.line.startswith("535 5.7.8 "), reply
            assert time.monotonic() - started >= 0.1
            reply = await client.command(f"AUTH PLAIN {plain('nobody', PASSWORD)}")
            assert reply.line.startswith("535 5.7.8 "), reply
            assert (await client.command("MAIL FROM:<alice@corp.test>")).line.startswith(
                "530 5.7.0 "
            )
            assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).code == 235
            reply = await client.command("MAIL FROM:<bob@corp.test>")
            assert reply.line.startswith("553 5.7.1 "), reply
            # A refused MAIL leaves no transaction to add recipients or a message to.
            assert (await client.command("RCPT TO:<bob@corp.test>")).code == 503
            assert (await client.command("DATA")).code == 503
        plain_client = await raw(node.submission_addresses[0])
        try:
            ehlo = await plain_client.command("EHLO client.test")
            assert not any("AUTH" in line for line in ehlo.lines)
            reply = await plain_client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")
            assert reply.line.startswith("538 5.7.11 "), reply
            reply = await plain_client.command("MAIL FROM:<alice@corp.test>")
            assert reply.line.startswith("530 5.7.0 "), reply
        finally:
            await plain_client.close()
        relay = await raw(node.relay_addresses[0])
        try:
            await relay.command("EHLO client.test")
            reply = await relay.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")
            assert reply.line.startswith("503 5.5.1 "), reply
        finally:
            await relay.close()
        assert await enqueued(node) == 0

    async def test_failure_limit_per_address(
        self, start_node: NodeFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """Past max_auth_failures_per_client an address gets 421 4.7.0; another still logs in."""
        node = await submission_node(
            start_node, pki, tmp_path, max_auth_failures_per_client=2, auth_failure_delay="0s"
        )
        guesser = free_loopback_address()[0]
        async with secured(node, pki, guesser) as client:
            for _ in range(2):
                reply = await client.command(f"AUTH PLAIN {plain('alice', 'guess')}")
                assert reply.code == 535
            reply = await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")
            assert reply.line.startswith("421 4.7.0 "), reply
            await client.expect_closed()
        async with secured(node, pki, free_loopback_address()[0]) as client:
            assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).code == 235


class TestUsersFile:
    async def test_changes_seen_without_restart(
        self, start_node: NodeFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """A user added to the file can log in at once; a user removed cannot."""
        node = await submission_node(start_node, pki, tmp_path)
        path = node.config.users_path
        users_file(path, bob=("bob@corp.test",))
        async with secured(node, pki) as client:
            assert (await client.command(f"AUTH PLAIN {plain('bob', PASSWORD)}")).code == 235
        async with secured(node, pki) as client:
            assert (await client.command(f"AUTH PLAIN {plain('alice', PASSWORD)}")).code == 535

    async def test_hubd_user_commands(self, tmp_path: Path) -> None:
        """`hubd user add` makes the file (mode 0600) with no data dir yet; list and remove."""
        config = write_config(tmp_path / "hubd.toml", {"node": {"data_dir": "var/none-yet"}})
        hubd = [sys.executable, "-m", "hubd", "user"]

        def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*hubd, *args, "-c", str(config)],
                input=stdin, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip

        added = run("add", "carol", "--address", "Carol@Corp.test", "--password-stdin",
                    stdin="s3cret\r\n")  # fmt: skip
        assert added.returncode == 0, added.stderr
        path = tmp_path / "var" / "none-yet" / "users.toml"
        assert path.stat().st_mode & 0o777 == 0o600
        listed = run("list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert '"carol@corp.test"' in listed.stdout
        assert "argon2" not in listed.stdout
        from hubd.users import UsersFile

        users = UsersFile(path)
        assert users.verify("carol", "s3cret") is not None  # the line end was not kept
        assert run("add", "dave", "--address", "d@corp.test").returncode == 2  # no terminal
        assert run("remove", "carol").returncode == 0
        assert users.verify("carol", "s3cret") is None


class TestFlood:
    async def test_auth_flood_does_not_stop_others(
        self, start_node: NodeFactory, pki: Pki, tmp_path: Path
    ) -> None:
        """Twenty connections from one address hammering wrong passwords do not keep another
        client from logging in and submitting within a few seconds."""
        node = await submission_node(
            start_node, pki, tmp_path, max_auth_failures_per_client=1000, auth_failure_delay="1s"
        )
        flooder = free_loopback_address()[0]
        stop = asyncio.Event()
        refused_once: set[int] = set()  # the flooders that had a first 535 back
        flooding = asyncio.Event()

        async def flood(n: int) -> int:
            tries = 0
            with contextlib.suppress(ConnectionError, OSError):
                async with secured(node, pki, flooder) as client:
                    while not stop.is_set():
                        await client.command(f"AUTH PLAIN {plain('alice', 'nope')}")
                        tries += 1
                        refused_once.add(n)
                        if len(refused_once) == 20:
                            flooding.set()
            return tries

        floods = [asyncio.create_task(flood(n)) for n in range(20)]
        try:
            await asyncio.wait_for(flooding.wait(), 30)  # all twenty are at it
            started = time.monotonic()

            def submit() -> None:
                with starttls_client(node, pki) as client:
                    client.login("alice", PASSWORD)
                    client.sendmail("alice@corp.test", ["bob@corp.test"], MESSAGE)

            await asyncio.wait_for(asyncio.to_thread(submit), 20)
            took = time.monotonic() - started
        finally:
            stop.set()
            tries = sum(await asyncio.gather(*floods))
        assert took < 10, took
        assert tries > 20  # the flood went on while the client submitted
        await delivered(node, 1)


class TestSeveralProcesses:
    def test_every_acceptor_serves_submission(self, tmp_path: Path, pki: Pki) -> None:
        """A node of two acceptor processes (and delivery ones) accepts submissions."""
        host, port = free_loopback_address()
        submission_port = free_loopback_address()[1]
        users = users_file(tmp_path / "users.toml", alice=("alice@corp.test",))
        settings = merge(
            node_settings(tmp_path / "node", "split", host, port),
            merge(
                submission_settings(host, pki, users),
                {
                    "node": {"processes": 3},
                    "submission": {"listen": [f"{host}:{submission_port}"], "tls_listen": []},
                },
            ),
        )
        config = write_config(tmp_path / "hubd.toml", settings)
        node = NodeProcess(config, (host, port), tmp_path / "node.log")
        node.start()
        try:
            assert {"acceptor-0", "acceptor-1"} <= set(node.children())
            said = (tmp_path / "node.log").read_text()
            assert f"submission with AUTH on {host}:{submission_port} (STARTTLS)" in said
            for n in range(6):
                with smtplib.SMTP(host, submission_port, timeout=30) as client:
                    client.starttls(context=pki.client_context())
                    client.login("alice", PASSWORD)
                    client.sendmail("alice@corp.test", [f"u{n}@corp.test"], MESSAGE)
            boxes = tmp_path / "node" / "mailboxes"
            wait_until(lambda: len(maildir_messages(boxes)) == 6, 30, "6 messages delivered")
        finally:
            assert node.terminate() == 0


def test_config_error_exits_2(tmp_path: Path) -> None:
    """`hubd config check` exits 2 for a submission listener without [tls] (the other
    config errors are in tests/unit/test_config.py)."""
    config = write_config(tmp_path / "bad.toml", {"submission": {"listen": ["127.0.0.1:2587"]}})
    result = subprocess.run(
        [sys.executable, "-m", "hubd", "config", "check", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "submission.listen needs a [tls] section" in result.stderr
