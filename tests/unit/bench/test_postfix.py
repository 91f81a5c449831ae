"""The private Postfix instance's configuration: Debian's defaults plus only what it needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hubd.bench.errors import BenchError
from hubd.bench.postfix import instance_settings, render_main_cf, render_master_cf
from hubd.config import HostPort

STOCK_MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command + args
#smtp      inet  n       -       y       -       1       postscreen
smtp      inet  n       -       y       -       -       smtpd
pickup    unix  n       -       y       60      1       pickup
smtp      unix  -       -       y       -       -       smtp
"""

LISTEN = HostPort(host="127.0.8.9", port=2626)
SINK = HostPort(host="127.0.8.10", port=2727)


class TestMasterCf:
    def test_moves_smtpd_to_the_bench_address(self) -> None:
        """Only the active `smtp inet` line changes, to host:port, keeping its other columns."""
        lines = render_master_cf(STOCK_MASTER_CF, LISTEN).splitlines()
        assert lines[2].split() == ["127.0.8.9:2626", "inet", "n", "-", "y", "-", "-", "smtpd"]
        stock = STOCK_MASTER_CF.splitlines()
        assert [lines[i] for i in (0, 1, 3, 4)] == [stock[i] for i in (0, 1, 3, 4)]

    def test_without_a_listener(self) -> None:
        """A master.cf with no `smtp inet` service cannot be used."""
        with pytest.raises(BenchError, match="smtp inet"):
            render_master_cf("pickup unix n - y 60 1 pickup\n", LISTEN)


class TestMainCf:
    def test_settings(self) -> None:
        """Queue, data, log, name, trust, the sink as relayhost, and no client name lookups."""
        root = Path("/var/tmp/run")
        settings = instance_settings(root, SINK, root / "queue", root / "data")
        assert settings == {
            "queue_directory": "/var/tmp/run/queue",
            "data_directory": "/var/tmp/run/data",
            "maillog_file": "/var/tmp/run/maillog",
            "myhostname": "postfix.bench.test",
            "mynetworks": "127.0.0.0/8",
            "relayhost": "[127.0.8.10]:2727",
            "smtpd_peername_lookup": "no",
        }

    def test_defaults_come_first(self) -> None:
        """Debian's defaults stay as they are; the instance's settings follow and win."""
        text = render_main_cf("biff = no\ncompatibility_level = 3.6\n", {"relayhost": "[x]:1"})
        lines = text.splitlines()
        assert lines[:2] == ["biff = no", "compatibility_level = 3.6"]
        assert lines[-1] == "relayhost = [x]:1"
