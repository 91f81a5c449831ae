"""`hubd config check/show`, where `-c` falls back to, and `hubd serve`'s log levels and JSON.

Each runs the real command line in a child process, as an operator would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hubd.config import parse_config
from hubd.testing import NodeProcess, free_loopback_address, write_config
from tests.conftest import merge, node_settings

pytestmark = pytest.mark.integration


def hubd(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "HUBD_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "hubd", *args],
        cwd=cwd,
        env={**environment, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


GOOD = '[node]\nname = "c1"\ndata_dir = "/var/lib/hubd"\n\n[tracking]\nmax_age = "7d"\n'


class TestConfigCommands:
    def test_check_good_and_bad(self, tmp_path: Path) -> None:
        """check: exit 0 on a good file; exit 2 and one line per problem on a bad one."""
        good = tmp_path / "good.toml"
        good.write_text(GOOD)
        done = hubd("config", "check", "-c", str(good), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        bad = tmp_path / "bad.toml"
        bad.write_text('[pickup]\ninterval = "0s"\nrate = -1\n[tracking]\nmax_file_size = "1MB"\n')
        done = hubd("config", "check", "-c", str(bad), cwd=tmp_path)
        assert done.returncode == 2
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 3, lines
        assert all(line.startswith(f"hubd: {bad}: ") for line in lines)
        assert {line.split(": ")[2] for line in lines} == {
            "pickup.interval",
            "pickup.rate",
            "tracking.max_file_size",
        }

    def test_show_is_the_effective_config(self, tmp_path: Path) -> None:
        """show prints every setting as TOML; it reads back as the same configuration."""
        (tmp_path / "hubd.toml").write_text(GOOD)
        done = hubd("config", "show", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        shown = tomllib.loads(done.stdout)
        assert shown["node"]["name"] == "c1"
        assert shown["tracking"] == {"max_file_size": "10MiB", "max_age": "7d"}
        assert shown["pickup"] == {"enabled": True, "interval": "1s", "rate": 0}
        assert parse_config(shown).node.name == "c1"

    def test_show_defaults_and_changed(self, tmp_path: Path) -> None:
        """--defaults needs no file (postconf -d); --changed shows only what was set (-n)."""
        done = hubd("config", "show", "--defaults", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert tomllib.loads(done.stdout)["node"]["name"] == "hub"
        (tmp_path / "hubd.toml").write_text(GOOD)
        done = hubd("config", "show", "--changed", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert tomllib.loads(done.stdout) == {
            "node": {"name": "c1", "data_dir": "/var/lib/hubd"},
            "tracking": {"max_age": "7d"},
        }


class TestWhereTheConfigIs:
    def test_environment_then_working_directory(self, tmp_path: Path) -> None:
        """Without -c: $HUBD_CONFIG first, then ./hubd.toml."""
        (tmp_path / "hubd.toml").write_text('[node]\nname = "from-cwd"\n')
        elsewhere = tmp_path / "etc.toml"
        elsewhere.write_text('[node]\nname = "from-env"\n')
        shown = hubd("config", "show", cwd=tmp_path, env={"HUBD_CONFIG": str(elsewhere)})
        assert tomllib.loads(shown.stdout)["node"]["name"] == "from-env"
        shown = hubd("config", "show", cwd=tmp_path)
        assert tomllib.loads(shown.stdout)["node"]["name"] == "from-cwd"

    @pytest.mark.parametrize(
        "command", [["config", "check"], ["serve"], ["queue", "list"], ["track"]], ids=" ".join
    )
    def test_no_config_anywhere(self, tmp_path: Path, command: list[str]) -> None:
        """Every command that takes -c says where it looked, in one line, exit 2."""
        if Path("/etc/hubd/hubd.toml").exists():
            pytest.skip("this machine has /etc/hubd/hubd.toml")
        done = hubd(*command, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            "hubd: no configuration: give -c FILE, set $HUBD_CONFIG, or create ./hubd.toml or "
            "/etc/hubd/hubd.toml"
        ]
        assert not list(tmp_path.iterdir()), "nothing is created"


class TestServeLogging:
    @pytest.mark.parametrize("processes", [1, 3], ids=["one-process", "supervisor"])
    def test_json_log_at_debug(self, tmp_path: Path, processes: int) -> None:
        """--log-format json --log-level debug: log lines are JSON objects, debug included;
        a supervisor's children log the same way, naming themselves."""
        host, port = free_loopback_address()
        settings = node_settings(tmp_path / "data", "lj", host, port)
        config = write_config(
            tmp_path / "hubd.toml", merge(settings, {"node": {"processes": processes}})
        )
        log = tmp_path / "node.log"
        node = NodeProcess(
            config, (host, port), log, args=["--log-format", "json", "--log-level", "debug"]
        )
        node.start()
        assert node.terminate() == 0
        records = [
            json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")
        ]
        assert records, log.read_text()
        assert {"time", "level", "logger", "message"} <= set(records[0])
        assert "debug" in {r["level"] for r in records}
        assert any(r["message"] == "stopping" for r in records)
        children = {r["process"] for r in records if "process" in r}
        assert (len(children) > 1) is (processes > 1), children

    def test_warning_level_hides_info(self, tmp_path: Path) -> None:
        """--log-level warning keeps the info lines out of the log."""
        host, port = free_loopback_address()
        config = write_config(
            tmp_path / "hubd.toml", merge(node_settings(tmp_path / "data", "lw", host, port), {})
        )
        log = tmp_path / "node.log"
        node = NodeProcess(config, (host, port), log, args=["--log-level", "warning"])
        node.start()
        assert node.terminate() == 0
        assert " INFO " not in log.read_text()
