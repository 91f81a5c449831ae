"""The configuration of the node under test: relaying to its sink, user settings merged in."""

from __future__ import annotations

from pathlib import Path

from hubd.bench.node import merge_settings, relay_settings
from hubd.config import HostPort, parse_config

LISTEN = HostPort(host="127.0.8.9", port=2626)
SINK = HostPort(host="127.0.8.10", port=2727)


class TestRelaySettings:
    def test_a_valid_config_routing_to_the_sink(self, tmp_path: Path) -> None:
        """The node listens where asked, trusts loopback and routes the bench domain to the sink."""
        config = parse_config(relay_settings(tmp_path, LISTEN, SINK))
        assert config.smtp.listen == [LISTEN]
        assert [str(n) for n in config.smtp.trusted_networks] == ["127.0.0.0/8"]
        (route,) = config.routes
        assert route.next_hops == [SINK]
        assert config.local_domains == []

    def test_user_settings_merge(self, tmp_path: Path) -> None:
        """A user's settings add to a table, or replace a value, and leave the rest."""
        merged = merge_settings(
            relay_settings(tmp_path, LISTEN, SINK),
            {"smtp": {"delayed_ack": True}, "delivery": {"concurrency_per_hop": 20}},
        )
        config = parse_config(merged)
        assert config.smtp.delayed_ack
        assert config.smtp.listen == [LISTEN]
        assert config.delivery.concurrency_per_hop == 20
