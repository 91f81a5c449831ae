"""Open-relay probes from a client outside the trusted networks: every one refused.

The node trusts only 127.0.0.1; the probing client connects from another 127.x.y.z, so it is
an outsider. It may send to the local domain corp.test and the routed domain partner.test,
nothing else, whatever the address is dressed up as.
"""

from __future__ import annotations

import pytest

from hubd.node import Node
from hubd.testing import free_loopback_address
from tests.conftest import NodeFactory
from tests.integration.rawsmtp import RawClient

pytestmark = pytest.mark.integration

# Each is a RCPT path that some MTA, somewhere, has read as "relay to far.example".
PROBES = [
    "<victim@far.example>",  # plain relaying
    "<victim%far.example@corp.test>",  # percent hack
    "<victim%far.example@[127.0.0.1]>",  # percent hack at an IP literal
    "<@corp.test:victim@far.example>",  # source route through the local domain
    "<@corp.test,@partner.test:victim@far.example>",  # a longer source route
    '<"victim@far.example"@corp.test>',  # a quoted local part holding @
    '<"victim@far.example">',  # a quoted local part and no domain
    "<victim@far.example@corp.test>",  # two @
    "<far.example!victim@corp.test>",  # bang path
    "<far.example!victim>",  # bang path without a domain
    "<victim@[192.0.2.1]>",  # IP literal
    "<victim@[127.0.0.1]>",  # IP literal of loopback
    "<victim@[IPv6:::1]>",  # IPv6 literal
    "<victim@far.example.>",  # trailing dot
    "<victim@far.example..>",  # two trailing dots
    "<victim@corp.test.far.example>",  # the local domain as a prefix
    "<victim@xcorp.test>",  # a look-alike
    "<victim@corp-test>",  # a look-alike
    "<victim@corp.test.example.org>",  # the local domain as a look-alike label
    "<victim@partner.test.example.org>",  # the routed domain as a look-alike label
    "<victim@notpartner.test>",  # a look-alike of the routed domain
    "<victim@FAR.EXAMPLE>",  # case
    "<VICTIM%FAR.EXAMPLE@CORP.TEST>",  # case and the percent hack
    "<victim@Far.Example.>",  # case and a trailing dot
    "victim@far.example",  # no brackets
    "<victim@far.example> NOTIFY=NEVER",  # a parameter
    "<victim%far.example%corp.test@partner.test>",  # percent hack via the routed domain
]


async def node_for_probes(start_node: NodeFactory) -> Node:
    return await start_node(
        local_domains=["corp.test"],
        routes=[{"domains": ["partner.test"], "next_hops": ["127.0.0.1:9"]}],
        smtp={"trusted_networks": ["127.0.0.1/32"]},
    )


async def rcpt(node: Node, source: str, path: str) -> str:
    """The reply to RCPT TO:`path`; when it is a refusal, DATA is tried too and must find no
    recipient to take a message for."""
    client = await RawClient.connect(node.relay_addresses[0], source)
    try:
        assert (await client.command("EHLO probe.test")).code == 250
        assert (await client.command("MAIL FROM:<spammer@outside.test>")).code == 250
        reply = (await client.command(f"RCPT TO:{path}")).line
        if reply.startswith("5"):
            assert (await client.command("DATA")).code == 503, path
        return reply
    finally:
        await client.close()


async def test_every_probe_refused(start_node: NodeFactory) -> None:
    """Every open-relay probe gets a permanent refusal, DATA then finds no recipient, and
    nothing is queued."""
    node = await node_for_probes(start_node)
    outsider = free_loopback_address()[0]
    assert outsider != "127.0.0.1"
    accepted = {}
    for path in PROBES:
        reply = await rcpt(node, outsider, path)
        if not reply.startswith("5"):
            accepted[path] = reply
    assert accepted == {}
    assert (await node.repository.stats()).get("ops:enqueue", 0) == 0


async def test_what_an_outsider_may_do(start_node: NodeFactory) -> None:
    """An outsider may send to local users, the routed domain (any case, a trailing dot)
    and <postmaster> without a domain (RFC 5321 4.5.1)."""
    node = await node_for_probes(start_node)
    outsider = free_loopback_address()[0]
    for path in (
        "<bob@corp.test>",
        "<Bob@CORP.TEST>",
        "<bob@corp.test.>",
        "<someone@partner.test>",
        "<postmaster>",
        "<PostMaster>",
        "<postmaster@corp.test>",
    ):
        reply = await rcpt(node, outsider, path)
        assert reply.startswith("250 "), (path, reply)


async def test_trusted_client_still_relays(start_node: NodeFactory) -> None:
    """The trusted network (127.0.0.1 here) relays anywhere, as before."""
    node = await node_for_probes(start_node)
    assert (await rcpt(node, "127.0.0.1", "<victim@far.example>")).startswith("250 ")
