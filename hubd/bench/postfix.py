"""A private Postfix instance for the comparison: `postfix -c DIR`, relaying to its sink.

Owns: the instance's main.cf (Debian's defaults plus only what relaying to a sink on loopback
and running as a second instance need) and master.cf (the stock one, its smtpd on the
bench's address), preparing it as Debian prepares an instance (its chroot), starting and
stopping it, telling whether its queue is empty, and killing whatever of it is left.
Public: PostfixInstance, postfix_instance(), render_main_cf(), render_master_cf(),
instance_settings().
Failures: BenchError when a Postfix command fails (with its output and the maillog's end).
Limits: needs root; the instance's processes are found by MAIL_CONFIG in their environment.
See also: MULTI_INSTANCE_README and postfix(1) (-c), hubd/bench/requirements.py.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hubd.bench.errors import BenchError
from hubd.bench.requirements import PostfixPrograms
from hubd.bench.usage import read_stats
from hubd.config import HostPort
from hubd.probe import smtp_greets
from hubd.waiting import wait_until

HOSTNAME = "postfix.bench.test"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")  # where messages wait


def instance_settings(
    root: Path, next_hop: HostPort, queue_dir: Path, data_dir: Path
) -> dict[str, str]:
    """What main.cf adds to the defaults: each setting is needed to relay or to run apart."""
    return {
        # A second instance: its own queue and data (MULTI_INSTANCE_README), its own log.
        "queue_directory": str(queue_dir),
        "data_directory": str(data_dir),
        # No syslog daemon is assumed: postlogd writes the log to a file, as hubd does.
        "maillog_file": str(root / "maillog"),
        "myhostname": HOSTNAME,
        # Relaying: the bench's clients are trusted, and all mail goes to the sink by address.
        "mynetworks": "127.0.0.0/8",
        "relayhost": f"[{next_hop.host}]:{next_hop.port}",
        # No DNS: smtpd would look up each client's name (and verify it) per connection.
        "smtpd_peername_lookup": "no",
    }


def render_main_cf(defaults: str, settings: dict[str, str]) -> str:
    """Debian's main.cf defaults followed by the instance's own settings (later ones win)."""
    added = "\n".join(f"{name} = {value}" for name, value in settings.items())
    return f"{defaults.rstrip()}\n\n# hubd bench: a second instance relaying to its sink\n{added}\n"


def render_master_cf(stock: str, listen: HostPort) -> str:
    """The stock master.cf with its `smtp inet` service listening on `listen` instead of :25."""
    lines = stock.splitlines()
    for number, line in enumerate(lines):
        fields = line.split()
        if len(fields) >= 8 and fields[0] == "smtp" and fields[1] == "inet":
            fields[0] = f"{listen.host}:{listen.port}"
            lines[number] = " ".join(fields)
            return "\n".join(lines) + "\n"
    raise BenchError("the stock master.cf has no `smtp inet` service to move to the bench's port")


def _instance_pids(config_dir: Path) -> list[int]:
    """Live processes whose environment names this instance (master sets MAIL_CONFIG)."""
    marker = f"MAIL_CONFIG={config_dir}".encode()
    pids = []
    for stat in read_stats():
        if stat.state == "Z":
            continue
        with contextlib.suppress(OSError):
            if marker in Path(f"/proc/{stat.pid}/environ").read_bytes().split(b"\0"):
                pids.append(stat.pid)
    return pids


class PostfixInstance:
    """A Postfix instance with config, queue, data and log under `root`, one smtpd on `listen`."""

    def __init__(
        self, programs: PostfixPrograms, root: Path, listen: HostPort, next_hop: HostPort
    ) -> None:
        self.programs = programs
        self.root = root
        self.address = listen
        self.next_hop = next_hop
        self.config_dir = root / "conf"
        self.queue_dir = root / "queue"
        self.data_dir = root / "data"
        self.maillog = root / "maillog"
        self._commands = root / "commands.log"

    def _run(self, *argv: str, env: dict[str, str] | None = None) -> None:
        # Output to a file, not a pipe: the master it starts must not hold our pipe open.
        with self._commands.open("ab") as output:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=START_TIMEOUT,
                check=False,
            )
        if done.returncode != 0:
            raise BenchError(f"{' '.join(argv)} exited {done.returncode}: {self._tail()}")

    def _tail(self) -> str:
        lines = []
        for path in (self._commands, self.maillog):
            if path.exists():
                lines += path.read_text(errors="replace").strip().splitlines()[-3:]
        return " / ".join(lines) or "no output"

    def _postfix(self, command: str) -> None:
        self._run(str(self.programs.postfix), "-c", str(self.config_dir), command)

    def write_config(self) -> None:
        """Write main.cf and master.cf, and make the directories Postfix needs."""
        self.config_dir.mkdir(parents=True)
        self.queue_dir.mkdir(mode=0o755)  # `postfix check` makes the queue's subdirectories
        self.data_dir.mkdir(mode=0o700)
        os.chown(self.data_dir, *_owner_ids(self.programs.mail_owner))
        defaults = self.programs.main_cf.read_text() if self.programs.main_cf else ""
        settings = instance_settings(self.root, self.next_hop, self.queue_dir, self.data_dir)
        (self.config_dir / "main.cf").write_text(render_main_cf(defaults, settings))
        stock = self.programs.master_cf.read_text()
        (self.config_dir / "master.cf").write_text(render_master_cf(stock, self.address))

    def start(self) -> None:
        """Prepare the instance as Debian does, check it, start it, wait for its 220."""
        self.write_config()
        if self.programs.configure_instance is not None:
            # Debian's own preparation of an instance (its postfix@.service runs it): copies
            # the files its chrooted services need into the queue directory.
            env = {**os.environ, "MAIL_CONFIG": str(self.config_dir)}
            self._run(str(self.programs.configure_instance), "-", env=env)
        self._postfix("check")
        self._postfix("start")
        try:
            wait_until(
                lambda: self.check_alive() and smtp_greets(self.address.host, self.address.port),
                START_TIMEOUT,
                f"Postfix to greet on {self.address}",
            )
        except TimeoutError as error:
            raise BenchError(f"{error}: {self._tail()}") from None

    def master_pid(self) -> int | None:
        """The master's pid while it runs."""
        try:
            pid = int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def check_alive(self) -> bool:
        if self.master_pid() is None:
            raise BenchError(f"the Postfix master is not running: {self._tail()}")
        return True

    def drained(self) -> bool:
        """True when no message file is left in any of the instance's queues."""
        for queue in QUEUES:
            for _, _, files in os.walk(self.queue_dir / queue):
                if files:
                    return False
        return True

    def stop(self) -> None:
        """`postfix stop`, then SIGKILL whatever of the instance still runs."""
        if self.master_pid() is not None:
            with contextlib.suppress(BenchError, subprocess.TimeoutExpired):
                self._postfix("stop")
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: not _instance_pids(self.config_dir), STOP_TIMEOUT, "Postfix to exit")
        for pid in _instance_pids(self.config_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _instance_pids(self.config_dir), 10, "killed Postfix to exit")


def _owner_ids(user: str) -> tuple[int, int]:
    entry = pwd.getpwnam(user)
    return entry.pw_uid, entry.pw_gid


@contextmanager
def postfix_instance(
    programs: PostfixPrograms, root: Path, listen: HostPort, next_hop: HostPort
) -> Iterator[PostfixInstance]:
    """A started instance for the block; stopped, with every process of it, afterwards."""
    instance = PostfixInstance(programs, root, listen, next_hop)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
