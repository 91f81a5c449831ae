"""Config like a server's: where the file is found, sizes, [tracking] and [pickup], and TOML out."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path

import pytest

from hubd.config import (
    Config,
    changed_settings,
    dump_config,
    find_config,
    format_duration,
    format_size,
    parse_config,
    parse_size,
    write_config,
)
from hubd.errors import ConfigError


class TestSizes:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (0, 0),
            (4096, 4096),
            ("4096", 4096),
            ("100B", 100),
            ("512KiB", 512 << 10),
            ("10MiB", 10 << 20),
            (" 2 GiB ", 2 << 30),
        ],
        ids=["zero", "int", "digits", "bytes", "kib", "mib", "spaced-gib"],
    )
    def test_parse(self, text: object, expected: int) -> None:
        """Sizes are bytes, or a whole number with a binary unit."""
        assert parse_size(text) == expected

    @pytest.mark.parametrize("text", ["10MB", "1.5MiB", "-1", True, "ten", -4], ids=str)
    def test_refused(self, text: object) -> None:
        """Decimal units, fractions, negatives and booleans are not sizes."""
        with pytest.raises(ValueError, match="expected a size"):
            parse_size(text)

    @pytest.mark.parametrize(
        ("value", "text"),
        [(0, "0B"), (1000, "1000B"), (1024, "1KiB"), (10 << 20, "10MiB"), (3 << 30, "3GiB")],
        ids=str,
    )
    def test_format_is_the_largest_exact_unit(self, value: int, text: str) -> None:
        """A size is written in the largest unit that holds it exactly, and reads back."""
        assert format_size(value) == text
        assert parse_size(text) == value


class TestDurations:
    @pytest.mark.parametrize(
        ("seconds", "text"),
        [(0, "0s"), (0.1, "100ms"), (1.5, "1500ms"), (90, "90s"), (120, "2m"), (30 * 86400, "30d")],
        ids=str,
    )
    def test_format_is_the_largest_exact_unit(self, seconds: float, text: str) -> None:
        """A duration is written in the largest exact unit, so "100ms" does not become "0s"."""
        assert format_duration(timedelta(seconds=seconds)) == text


class TestNewSections:
    def test_defaults(self) -> None:
        """Tracking rotates at 10 MiB and keeps 30 days; pickup is on, every second, unthrottled."""
        config = Config()
        assert config.tracking.max_file_size == 10 << 20
        assert config.tracking.max_age == timedelta(days=30)
        assert config.pickup.enabled is True
        assert config.pickup.interval == timedelta(seconds=1)
        assert config.pickup.rate == 0

    def test_values(self) -> None:
        """Sizes and durations in the new tables take the usual forms; 0 turns a limit off."""
        config = parse_config(
            {
                "tracking": {"max_file_size": "0", "max_age": "7d"},
                "pickup": {"enabled": False, "interval": "250ms", "rate": 600},
            }
        )
        assert config.tracking.max_file_size == 0
        assert config.tracking.max_age == timedelta(days=7)
        assert config.pickup.interval == timedelta(milliseconds=250)
        assert (config.pickup.enabled, config.pickup.rate) == (False, 600)

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ({"tracking": {"max_file_size": "10MB"}}, "tracking.max_file_size: expected a size"),
            ({"tracking": {"max_age": "forever"}}, "tracking.max_age: expected a duration"),
            ({"pickup": {"interval": "0s"}}, "pickup.interval: must be longer than 0s"),
            ({"pickup": {"rate": -1}}, "pickup.rate: Input should be greater than or equal to 0"),
            ({"pickup": {"dir": "x"}}, "pickup.dir: unknown key"),
        ],
        ids=["size-unit", "age", "interval", "rate", "unknown"],
    )
    def test_errors_name_the_key(self, data: dict[str, object], expected: str) -> None:
        """Every problem in the new tables is one line that starts with its key."""
        with pytest.raises(ConfigError) as caught:
            parse_config(data, "hubd.toml")
        (problem,) = caught.value.problems
        assert problem.startswith(expected), problem


class TestTomlOut:
    def test_dump_reads_back_as_the_same_config(self) -> None:
        """`config show` output is TOML that parses to the very same settings."""
        config = parse_config(
            {
                "local_domains": ["corp.test"],
                "node": {"name": "hub-7", "data_dir": "/var/lib/hubd"},
                "smtp": {"listen": ["127.0.0.1:2525", "[::1]:2525"]},
                "routes": [{"domains": [".example.org"], "next_hops": ["127.0.0.9:25"]}],
                "pickup": {"interval": "100ms"},
                "shadow": {"peers": ["127.0.0.0/24"]},
            }
        )
        text = dump_config(config)
        assert parse_config(tomllib.loads(text)) == config
        assert "[[routes]]" in text

    def test_defaults_dump(self) -> None:
        """The defaults dump names every table, with no value for keys that have none."""
        data = tomllib.loads(dump_config(Config()))
        assert set(data) >= {"node", "smtp", "queue", "tracking", "pickup", "shadow"}
        assert "dir" not in data["mailboxes"]  # no value: data_dir/mailboxes applies
        assert parse_config(data) == Config()

    def test_changed_is_only_what_differs(self) -> None:
        """`config show --changed` holds only keys set to something other than the default."""
        config = parse_config({"node": {"name": "hub-7"}, "tracking": {"max_age": "7d"}})
        assert tomllib.loads(changed_settings(config)) == {
            "node": {"name": "hub-7"},
            "tracking": {"max_age": "7d"},
        }
        assert changed_settings(Config()) == ""

    def test_write_config(self, tmp_path: Path) -> None:
        """write_config writes tables, arrays of tables and paths, and hubd reads it back."""
        path = write_config(
            tmp_path / "hubd.toml",
            {
                "local_domains": ["corp.test"],
                "node": {"name": "w", "data_dir": tmp_path / "data"},
                "routes": [{"domains": ["a.test"], "next_hops": ["127.0.0.2:25"]}],
            },
        )
        config = parse_config(tomllib.loads(path.read_text()))
        assert config.node.data_dir == tmp_path / "data"
        assert config.routes[0].domains == ["a.test"]


class TestFindConfig:
    def test_given_wins(self, tmp_path: Path) -> None:
        """-c is used as given, even when it does not exist (the error then names it)."""
        given = tmp_path / "missing.toml"
        assert find_config(given, {"HUBD_CONFIG": "/x.toml"}, tmp_path) == given

    def test_environment_then_cwd(self, tmp_path: Path) -> None:
        """Without -c: $HUBD_CONFIG, else ./hubd.toml."""
        (tmp_path / "hubd.toml").write_text("")
        assert find_config(None, {"HUBD_CONFIG": "/etc/x.toml"}, tmp_path) == Path("/etc/x.toml")
        assert find_config(None, {}, tmp_path) == tmp_path / "hubd.toml"
        assert find_config(None, {"HUBD_CONFIG": ""}, tmp_path) == tmp_path / "hubd.toml"

    def test_nothing_found(self, tmp_path: Path) -> None:
        """With no file anywhere the error says every place that was looked at."""
        if Path("/etc/hubd/hubd.toml").is_file():
            pytest.skip("this machine has /etc/hubd/hubd.toml")
        with pytest.raises(ConfigError) as caught:
            find_config(None, {}, tmp_path)
        (problem,) = caught.value.problems
        for place in ("-c", "$HUBD_CONFIG", "./hubd.toml", "/etc/hubd/hubd.toml"):
            assert place in problem
