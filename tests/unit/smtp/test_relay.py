"""The relay rule: which client may send to which recipient."""

from __future__ import annotations

import ipaddress

import pytest

from hubd import replies
from hubd.config import RouteConfig
from hubd.replies import Reply
from hubd.routing import Router, RouteTable
from hubd.smtp.address import Mailbox
from hubd.smtp.relay import RelayPolicy, decide_recipient

ROUTER = Router(
    ["corp.test"],
    RouteTable(
        [RouteConfig.model_validate({"domains": ["partner.test"], "next_hops": ["10.9.9.9:25"]})]
    ),
)
TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8::/32")]
UNTRUSTED_IP = "192.0.2.1"
TRUSTED_IP = "10.1.2.3"


def policy(*, catch_all: bool = True, known: frozenset[str] = frozenset()) -> RelayPolicy:
    return RelayPolicy(
        router=ROUTER, trusted_networks=TRUSTED, catch_all=catch_all, known_recipients=known
    )


class TestDecideRecipient:
    @pytest.mark.parametrize(
        ("mailbox", "client_ip", "authenticated", "expected"),
        [
            (Mailbox("bob", "corp.test"), UNTRUSTED_IP, False, replies.RECIPIENT_OK),
            (Mailbox("bob", "partner.test"), UNTRUSTED_IP, False, replies.RECIPIENT_OK),
            (Mailbox("bob", "elsewhere.test"), UNTRUSTED_IP, False, replies.RELAY_DENIED),
            (Mailbox("bob", "elsewhere.test"), TRUSTED_IP, False, replies.RECIPIENT_OK),
            (Mailbox("bob", "elsewhere.test"), UNTRUSTED_IP, True, replies.RECIPIENT_OK),
            (Mailbox("bob", "elsewhere.test"), "2001:db8::5", False, replies.RECIPIENT_OK),
            (Mailbox("bob", "elsewhere.test"), "::ffff:10.1.2.3", False, replies.RECIPIENT_OK),
            (Mailbox("bob", "elsewhere.test"), "::ffff:192.0.2.1", False, replies.RELAY_DENIED),
            (Mailbox("bob", "elsewhere.test"), "2001:db8::5%eth0", False, replies.RECIPIENT_OK),
            (Mailbox("bob", "elsewhere.test"), "not-an-ip", False, replies.RELAY_DENIED),
            (Mailbox("bob", "elsewhere.test"), "", False, replies.RELAY_DENIED),
            (Mailbox("bob", "sub.corp.test"), UNTRUSTED_IP, False, replies.RELAY_DENIED),
        ],
        ids=[
            "local-from-anyone",
            "routed-from-anyone",
            "unrouted-untrusted",
            "unrouted-trusted",
            "unrouted-authenticated",
            "unrouted-trusted-ipv6",
            "ipv4-mapped-trusted",
            "ipv4-mapped-untrusted",
            "scoped-ipv6-trusted",
            "unparsable-ip",
            "empty-ip",
            "subdomain-of-local-is-not-local",
        ],
    )
    def test_catch_all(
        self, mailbox: Mailbox, client_ip: str, authenticated: bool, expected: Reply
    ) -> None:
        """Local and routed domains are open to all; any other domain needs trust or AUTH."""
        reply = decide_recipient(
            policy(), mailbox, client_ip=client_ip, authenticated=authenticated
        )
        assert reply == expected

    @pytest.mark.parametrize(
        ("mailbox", "client_ip", "expected"),
        [
            (Mailbox("bob", "corp.test"), UNTRUSTED_IP, replies.RECIPIENT_OK),
            (Mailbox("Bob", "corp.test"), UNTRUSTED_IP, replies.RECIPIENT_OK),
            (Mailbox("BOB", "corp.test"), UNTRUSTED_IP, replies.RECIPIENT_OK),
            (Mailbox("alice", "corp.test"), UNTRUSTED_IP, replies.NO_SUCH_USER),
            (Mailbox("alice", "corp.test"), TRUSTED_IP, replies.NO_SUCH_USER),
            (Mailbox("alice", "partner.test"), UNTRUSTED_IP, replies.RECIPIENT_OK),
        ],
        ids=[
            "known",
            "known-mixed-case",
            "known-upper-case",
            "unknown",
            "unknown-even-when-trusted",
            "list-applies-to-local-only",
        ],
    )
    def test_known_recipients(self, mailbox: Mailbox, client_ip: str, expected: Reply) -> None:
        """Without catch_all a local recipient must be listed (case-insensitively)."""
        strict = policy(catch_all=False, known=frozenset({"bob@corp.test"}))
        reply = decide_recipient(strict, mailbox, client_ip=client_ip, authenticated=False)
        assert reply == expected


class TestIsTrusted:
    @pytest.mark.parametrize(
        ("client_ip", "expected"),
        [
            ("10.0.0.1", True),
            ("10.255.255.255", True),
            ("11.0.0.1", False),
            ("2001:db8:ffff::1", True),
            ("2001:db9::1", False),
            ("::ffff:10.0.0.1", True),
            ("::1", False),
            ("garbage", False),
        ],
        ids=[
            "v4-first",
            "v4-last",
            "v4-outside",
            "v6-inside",
            "v6-outside",
            "mapped",
            "loopback-not-listed",
            "garbage",
        ],
    )
    def test_trusted(self, client_ip: str, expected: bool) -> None:
        """Trust is membership of a configured network; unparsable addresses are not trusted."""
        assert policy().is_trusted(client_ip) is expected

    def test_no_networks(self) -> None:
        """With no trusted networks nobody is trusted."""
        nobody = RelayPolicy(
            router=ROUTER, trusted_networks=[], catch_all=True, known_recipients=frozenset()
        )
        assert not nobody.is_trusted("127.0.0.1")


class TestRoutingCharacters:
    @pytest.mark.parametrize("local_part", ["v%far.test", "far.test!v", '"v@far.test"'])
    def test_refused_to_outsiders(self, local_part: str) -> None:
        """A local part with % ! or @ is a relay request: refused to a client that may not
        relay, even at a local domain; trusted and authenticated clients keep it."""
        mailbox = Mailbox(local_part, "corp.test")
        outsider = decide_recipient(policy(), mailbox, client_ip=UNTRUSTED_IP, authenticated=False)
        assert outsider == replies.RELAY_DENIED
        trusted = decide_recipient(policy(), mailbox, client_ip=TRUSTED_IP, authenticated=False)
        assert trusted == replies.RECIPIENT_OK
        user = decide_recipient(policy(), mailbox, client_ip=UNTRUSTED_IP, authenticated=True)
        assert user == replies.RECIPIENT_OK

    def test_postmaster_exists_without_catch_all(self) -> None:
        """postmaster at a local domain is accepted even when catch_all is off."""
        mailbox = Mailbox("PostMaster", "corp.test")
        reply = decide_recipient(
            policy(catch_all=False), mailbox, client_ip=UNTRUSTED_IP, authenticated=False
        )
        assert reply == replies.RECIPIENT_OK
