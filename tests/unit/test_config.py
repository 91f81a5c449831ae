"""The typed configuration: defaults, parsing of durations and addresses, errors naming keys."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hubd.config import HostPort, load_config, parse_config, parse_duration
from hubd.errors import ConfigError


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "hubd.toml")
    assert caught.value.source == "hubd.toml"
    return caught.value.problems


class TestErrorsNameTheKey:
    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            (
                {"smtp": {"listen": ["nonsense"]}},
                "smtp.listen[0]: expected 'host:port' (IPv6 as '[::1]:25'), got 'nonsense'",
            ),
            (
                {"smtp": {"listen": ["127.0.0.1:25", "::1:25"]}},
                "smtp.listen[1]: expected 'host:port' (IPv6 as '[::1]:25'), got '::1:25'",
            ),
            ({"smtp": {"listen": ["[::1]"]}}, "smtp.listen[0]: expected 'host:port'"),
            ({"smtp": {"listen": ["mx.test:99999"]}}, "smtp.listen[0]: port out of range"),
            ({"smtp": {"listen": [25]}}, "smtp.listen[0]: expected 'host:port', got 25"),
            ({"bogus": 1}, "bogus: unknown key"),
            ({"smtp": {"colour": "red"}}, "smtp.colour: unknown key"),
            (
                {"routes": [{"domains": ["a.test"], "next_hops": ["10.0.0.1:25"], "x": 1}]},
                "routes[0].x: unknown key",
            ),
            ({"queue": {"expiry": "2w"}}, "queue.expiry: expected a duration such as '30s'"),
            ({"queue": {"expiry": "-1s"}}, "queue.expiry: expected a duration"),
            ({"queue": {"expiry": -1}}, "queue.expiry: a duration cannot be negative"),
            ({"queue": {"expiry": True}}, "queue.expiry: expected a duration"),
            ({"smtp": {"idle_timeout": "1.5s"}}, "smtp.idle_timeout: expected a duration"),
            ({"queue": {"retry": ["1m", "soon"]}}, "queue.retry[1]: expected a duration"),
            ({"queue": {"retry": []}}, "queue.retry: List should have at least 1 item"),
            (
                {"shadow": {"before_ack": "require"}},
                'shadow: shadow.before_ack = "require" needs shadow.redundancy_peers',
            ),
            ({"shadow": {"before_ack": "always"}}, "shadow.before_ack: Input should be"),
            ({"shadow": {"redundancy_peers": ["b"]}}, "shadow.redundancy_peers[0]: expected"),
            (
                {"smtp": {"trusted_networks": ["10.0.0.0/8", "nope"]}},
                "smtp.trusted_networks[1]: expected a network such as '127.0.0.1/32'",
            ),
            ({"smtp": {"max_line_length": 1000}}, "smtp.max_line_length: "),
            ({"smtp": {"max_recipients": 0}}, "smtp.max_recipients: "),
            (
                {"local_domains": ["corp.test", "bad domain"]},
                "local_domains[1]: expected a domain name such as 'corp.test'",
            ),
            ({"local_domains": ["corp.test\n"]}, "local_domains[0]: expected a domain name"),
            (
                {"routes": [{"domains": [], "next_hops": ["10.0.0.1:25"]}]},
                "routes[0].domains: ",
            ),
            (
                {"routes": [{"domains": ["a.test"], "next_hops": ["nowhere"]}]},
                "routes[0].next_hops[0]: expected 'host:port'",
            ),
            (
                {
                    "local_domains": ["corp.test"],
                    "routes": [{"domains": ["corp.test"], "next_hops": ["10.0.0.1:25"]}],
                },
                "(top level): domains both local and routed: corp.test",
            ),
            ({"mailboxes": {"recipients": ["bob"]}}, "mailboxes.recipients: expected full"),
            ({"node": {"name": "has space"}}, "node.name: "),
            ({"delivery": {"tls": "maybe"}}, "delivery.tls: "),
        ],
        ids=[
            "listen-not-host-port",
            "listen-bare-ipv6",
            "listen-no-port",
            "listen-port-range",
            "listen-not-string",
            "unknown-top-level-key",
            "unknown-section-key",
            "unknown-route-key",
            "duration-unit",
            "duration-negative-string",
            "duration-negative-number",
            "duration-bool",
            "duration-fraction",
            "duration-in-list",
            "retry-empty",
            "require-without-peers",
            "before-ack-value",
            "redundancy-peer",
            "network",
            "line-length-below-rfc",
            "recipients-zero",
            "domain",
            "domain-trailing-newline",
            "route-no-domains",
            "route-hop",
            "local-and-routed",
            "mailbox-recipient",
            "node-name",
            "tls-mode",
        ],
    )
    def test_problem(self, data: dict[str, Any], expected: str) -> None:
        """Each problem is one line that starts with the dotted key of the bad value."""
        (problem,) = problems(data)
        assert problem.startswith(expected), problem

    def test_every_problem_is_reported(self) -> None:
        """All bad keys are listed at once, not just the first."""
        found = problems({"smtp": {"max_message_size": "big"}, "queue": {"expiry": "x"}, "z": 1})
        assert [p.split(":", 1)[0] for p in found] == [
            "smtp.max_message_size",
            "queue.expiry",
            "z",
        ]

    def test_message_names_source(self) -> None:
        """The error's text names the file first, then the problems."""
        with pytest.raises(ConfigError, match=r"^hubd\.toml: bogus: unknown key$"):
            parse_config({"bogus": 1}, "hubd.toml")


class TestDurations:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("30s", timedelta(seconds=30)),
            ("5m", timedelta(minutes=5)),
            ("2h", timedelta(hours=2)),
            ("2d", timedelta(days=2)),
            ("250ms", timedelta(milliseconds=250)),
            (" 7 s ", timedelta(seconds=7)),
            ("0s", timedelta(0)),
            (10, timedelta(seconds=10)),
            (1.5, timedelta(seconds=1.5)),
            (timedelta(minutes=1), timedelta(minutes=1)),
        ],
        ids=["s", "m", "h", "d", "ms", "spaces", "zero", "int", "float", "timedelta"],
    )
    def test_parse(self, value: object, expected: timedelta) -> None:
        """A whole number with one unit, or a number of seconds."""
        assert parse_duration(value) == expected

    @pytest.mark.parametrize(
        "value",
        ["", "30", "1w", "1.5s", "-1s", "s", "1 s 2", -1, True, None, [1]],
        ids=["empty", "no-unit", "weeks", "fraction", "negative", "no-number", "two-values",
             "negative-number", "bool", "none", "list"],
    )  # fmt: skip
    def test_refuse(self, value: object) -> None:
        """Anything else is refused with a message showing the expected form."""
        with pytest.raises(ValueError, match="duration"):
            parse_duration(value)

    def test_in_config(self) -> None:
        """Config durations become timedeltas."""
        config = parse_config({"smtp": {"idle_timeout": "1s"}, "queue": {"retry": ["1m", 90]}})
        assert config.smtp.idle_timeout == timedelta(seconds=1)
        assert config.queue.retry == [timedelta(minutes=1), timedelta(seconds=90)]


class TestHostPort:
    @pytest.mark.parametrize(
        ("text", "host", "port", "printed"),
        [
            ("127.0.0.1:2525", "127.0.0.1", 2525, "127.0.0.1:2525"),
            ("localhost:0", "localhost", 0, "localhost:0"),
            ("mx.corp.test:25", "mx.corp.test", 25, "mx.corp.test:25"),
            ("[::1]:2525", "::1", 2525, "[::1]:2525"),
            ("[2001:db8::1]:25", "2001:db8::1", 25, "[2001:db8::1]:25"),
            ("[::ffff:192.0.2.1]:25", "::ffff:192.0.2.1", 25, "[::ffff:192.0.2.1]:25"),
            ("0.0.0.0:65535", "0.0.0.0", 65535, "0.0.0.0:65535"),
        ],
        ids=["ipv4", "port-zero", "name", "ipv6-loopback", "ipv6", "ipv4-mapped", "max-port"],
    )
    def test_parse_and_print(self, text: str, host: str, port: int, printed: str) -> None:
        """IPv6 hosts come in brackets, lose them when parsed, and get them back when printed."""
        parsed = HostPort.parse(text)
        assert (parsed.host, parsed.port) == (host, port)
        assert str(parsed) == printed
        assert HostPort.parse(str(parsed)) == parsed

    @pytest.mark.parametrize(
        "text",
        ["::1:25", "[::1]", "host", "host:", ":25", "h:port", "h:65536", "[host]:25", " h:25"],
        ids=["bare-ipv6", "no-port", "no-colon", "empty-port", "no-host", "port-not-number",
             "port-too-big", "name-in-brackets", "space"],
    )  # fmt: skip
    def test_refuse(self, text: str) -> None:
        """Anything not host:port or [ipv6]:port is refused."""
        with pytest.raises(ValueError, match=r"host:port|out of range"):
            HostPort.parse(text)

    def test_listen_in_config(self) -> None:
        """smtp.listen takes a list of addresses, IPv6 included."""
        config = parse_config({"smtp": {"listen": ["127.0.0.1:25", "[::1]:2525"]}})
        assert config.smtp.listen == [
            HostPort(host="127.0.0.1", port=25),
            HostPort(host="::1", port=2525),
        ]


class TestDefaultsAndNormalising:
    def test_empty_config_is_valid(self) -> None:
        """An empty document gives the documented defaults."""
        config = parse_config({})
        assert config.smtp.listen == [HostPort(host="127.0.0.1", port=2525)]
        assert config.smtp.max_line_length == 8192
        assert config.smtp.idle_timeout == timedelta(minutes=5)
        assert config.mailboxes.catch_all is True
        assert config.mailbox_dir == config.node.data_dir / "mailboxes"

    def test_domains_normalised(self) -> None:
        """Domains and route patterns are lower-cased and lose a trailing dot."""
        config = parse_config(
            {
                "local_domains": ["Corp.Test."],
                "routes": [{"domains": [".Partner.TEST", "X.test"], "next_hops": ["h:25"]}],
            }
        )
        assert config.local_domains == ["corp.test"]
        assert config.routes[0].domains == [".partner.test", "x.test"]

    def test_mailbox_recipients_lowered(self) -> None:
        """Listed mailbox recipients are compared lower-case."""
        config = parse_config({"mailboxes": {"recipients": ["Bob@Corp.Test"], "dir": ""}})
        assert config.mailboxes.recipients == ["bob@corp.test"]
        assert config.mailboxes.dir is None

    def test_frozen(self) -> None:
        """A validated config cannot be changed afterwards."""
        config = parse_config({})
        with pytest.raises(ValueError, match="frozen"):
            config.smtp.max_recipients = 5


class TestLoadConfig:
    def test_reads_toml(self, tmp_path: Path) -> None:
        """A TOML file is read and validated."""
        path = tmp_path / "hubd.toml"
        path.write_text('local_domains = ["corp.test"]\n[smtp]\nlisten = ["[::1]:2525"]\n')
        config = load_config(path)
        assert config.local_domains == ["corp.test"]
        assert config.smtp.listen == [HostPort(host="::1", port=2525)]

    @pytest.mark.parametrize(
        ("content", "expected"),
        [
            (None, "file not found"),
            ("[smtp\n", "not valid TOML: "),
            ('[smtp]\nlisten = ["x"]\n', "smtp.listen[0]: expected 'host:port'"),
        ],
        ids=["missing", "bad-toml", "bad-value"],
    )
    def test_errors_name_the_file(self, tmp_path: Path, content: str | None, expected: str) -> None:
        """Every load error is a ConfigError naming the file and the problem."""
        path = tmp_path / "hubd.toml"
        if content is not None:
            path.write_text(content)
        with pytest.raises(ConfigError) as caught:
            load_config(path)
        assert caught.value.source == str(path)
        (problem,) = caught.value.problems
        assert problem.startswith(expected), problem


class TestSmtpLimits:
    def test_defaults(self) -> None:
        """Every [smtp] limit key has the default the README documents."""
        smtp = parse_config({}).smtp
        assert smtp.max_connections_per_client == 50
        assert smtp.max_sessions == 1000
        assert smtp.max_commands_per_session == 10000
        assert smtp.max_errors == 20
        assert smtp.max_header_size == 1 << 20
        assert smtp.data_timeout == timedelta(minutes=10)
        assert smtp.max_messages_per_minute_per_client == 600
        assert smtp.listen_backlog == 1024

    def test_sizes(self) -> None:
        """max_header_size takes a number of octets or a size with a unit."""
        assert parse_config({"smtp": {"max_header_size": "64KiB"}}).smtp.max_header_size == 65536
        assert parse_config({"smtp": {"max_header_size": 4000}}).smtp.max_header_size == 4000

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("max_header_size", "lots"),
            ("max_header_size", 0),
            ("max_errors", 0),
            ("listen_backlog", -1),
            ("data_timeout", "soon"),
        ],
    )
    def test_bad_values_name_the_key(self, key: str, value: object) -> None:
        """A bad limit is refused with its key in the message."""
        (problem,) = problems({"smtp": {key: value}})
        assert problem.startswith(f"smtp.{key}: ")


class TestSubmission:
    def test_defaults(self) -> None:
        """No submission listeners and no [tls] by default; the users file is in data_dir."""
        config = parse_config({"node": {"data_dir": "/srv/q"}})
        assert config.submission.listen == []
        assert config.submission.tls_listen == []
        assert config.tls is None
        assert config.users_path == Path("/srv/q/users.toml")
        assert config.submission.max_messages_per_minute_per_user == 120

    @pytest.mark.parametrize(
        ("submission", "expected"),
        [
            ({"listen": ["127.0.0.1:2587"]}, "submission.listen needs a [tls] section"),
            ({"tls_listen": ["127.0.0.1:2465"]}, "submission.tls_listen needs a [tls] section"),
            (
                {"tls_listen": ["127.0.0.1:2465"], "allow_plaintext_auth": True},
                "submission.tls_listen needs a [tls] section",
            ),
            (
                {"listen": ["127.0.0.1:2587", "0.0.0.0:2587"], "allow_plaintext_auth": True},
                "allow_plaintext_auth is for loopback only, but it would apply to 0.0.0.0:2587",
            ),
        ],
    )
    def test_tls_required(self, submission: dict[str, Any], expected: str) -> None:
        """A submission listener needs [tls], unless allow_plaintext_auth and all loopback."""
        (problem,) = problems({"submission": submission})
        assert expected in problem

    def test_plaintext_on_loopback_and_overrides(self) -> None:
        """allow_plaintext_auth on loopback is accepted; [submission] keys override [smtp]'s
        for the submission listeners only."""
        config = parse_config(
            {
                "smtp": {"max_errors": 7, "max_recipients": 5},
                "submission": {
                    "listen": ["127.0.0.1:2587", "[::1]:2587"],
                    "allow_plaintext_auth": True,
                    "max_errors": 3,
                    "delayed_ack": True,
                    "idle_timeout": "1m",
                },
            }
        )
        submission = config.submission_smtp
        assert (submission.max_errors, submission.max_recipients) == (3, 5)
        assert submission.delayed_ack
        assert submission.idle_timeout == timedelta(minutes=1)
        assert config.smtp.max_errors == 7
        assert not config.smtp.delayed_ack

    def test_tls_paths_relative_to_the_file(self, tmp_path: Path) -> None:
        """[tls] cert and key and users_file resolve against the config file's directory."""
        path = tmp_path / "hubd.toml"
        path.write_text(
            '[tls]\ncert = "c.pem"\nkey = "k.pem"\n[submission]\nusers_file = "u.toml"\n'
        )
        config = load_config(path)
        assert config.tls is not None
        assert (config.tls.cert, config.tls.key) == (tmp_path / "c.pem", tmp_path / "k.pem")
        assert config.users_path == tmp_path / "u.toml"


class TestRelativePaths:
    def test_relative_to_the_config_files_directory(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """data_dir, mailboxes.dir and tls_ca are taken from the file's directory, not the CWD."""
        (tmp_path / "etc").mkdir()
        path = tmp_path / "etc" / "hubd.toml"
        path.write_text(
            '[node]\ndata_dir = "var/q"\n[mailboxes]\ndir = "../mail"\n'
            '[delivery]\ntls = "verify"\ntls_ca = "ca.pem"\n'
        )
        monkeypatch.chdir(tmp_path)
        config = load_config(Path("etc/hubd.toml"))
        assert config.node.data_dir == tmp_path / "etc" / "var" / "q"
        assert config.mailbox_dir == tmp_path / "mail"
        assert config.delivery.tls_ca == tmp_path / "etc" / "ca.pem"

    def test_default_data_dir_and_absolute_paths(self, tmp_path: Path) -> None:
        """The default data_dir is anchored the same way; absolute paths are kept as written."""
        path = tmp_path / "hubd.toml"
        path.write_text('[mailboxes]\ndir = "/srv/mail"\n')
        config = load_config(path)
        assert config.node.data_dir == tmp_path / "var" / "hub"
        assert config.mailbox_dir == Path("/srv/mail")
        assert config.mailboxes.dir == Path("/srv/mail")

    def test_without_a_file_paths_stay_as_given(self) -> None:
        """parse_config() of a dictionary with no base leaves relative paths alone."""
        assert parse_config({"node": {"data_dir": "q"}}).node.data_dir == Path("q")
