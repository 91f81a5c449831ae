"""The settings of a comparison, and the node settings given on the command line."""

from __future__ import annotations

import pytest

from hubd.bench.settings import CompareSettings, parse_node_settings


class TestNodeSettings:
    def test_sections_and_toml_values(self) -> None:
        """SECTION.KEY=VALUE items nest, and values are TOML (numbers, strings, booleans)."""
        settings = parse_node_settings(
            ["node.processes=2", 'smtp.idle_timeout="30s"', "smtp.delayed_ack = true"]
        )
        assert settings == {
            "node": {"processes": 2},
            "smtp": {"idle_timeout": "30s", "delayed_ack": True},
        }

    @pytest.mark.parametrize(
        ("item", "match"),
        [("processes", "SECTION.KEY=VALUE"), ("node.=2", "SECTION.KEY"), ("smtp.x=30s", "TOML")],
        ids=["no-equals", "empty-key", "bare-string"],
    )
    def test_bad_items(self, item: str, match: str) -> None:
        """A malformed item is a ValueError that quotes it."""
        with pytest.raises(ValueError, match=match):
            parse_node_settings([item])


class TestCompareSettings:
    def test_defaults(self) -> None:
        """3000 messages of 4096 bytes, 10 sessions, 3 rounds, latency measured."""
        settings = CompareSettings()
        assert (settings.count, settings.size, settings.sessions) == (3000, 4096, (10,))
        assert settings.rounds == 3
        assert settings.latency

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"count": 0}, "count"),
            ({"sessions": ()}, "sessions"),
            ({"sessions": (10, 0)}, "sessions"),
            ({"rounds": 0}, "rounds"),
            ({"size": 10}, "size"),
        ],
        ids=["no-messages", "no-session-counts", "zero-sessions", "no-rounds", "too-small"],
    )
    def test_rejects(self, kwargs: dict[str, object], match: str) -> None:
        """Impossible settings fail at construction, naming the option."""
        with pytest.raises(ValueError, match=match):
            CompareSettings(**kwargs)  # type: ignore[arg-type]
