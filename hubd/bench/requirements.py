"""What `hubd bench --compare-postfix` needs, and a line for each thing that is missing.

Owns: finding Postfix's programs (postfix, postconf, smtp-source, smtp-sink) and Debian's
stock configuration files, checking that the run is root (only root starts a Postfix
instance), and that the queues' directory is on a real filesystem, not in memory, where
Postfix's unprivileged processes can reach it.
Public: PostfixPrograms, find_postfix(), check_root(), check_reachable(), filesystem_of(),
check_filesystem(), MEMORY_FILESYSTEMS.
Failures: none raised: each problem is returned as one line for the user.
See also: hubd/bench/postfix.py, scripts/install-test-deps (installs Postfix for tests).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# Debian's stock files (postfix's postinst copies them to /etc/postfix), then upstream's.
MASTER_CF_CANDIDATES = (
    Path("/usr/share/postfix/master.cf.dist"),
    Path("/etc/postfix/master.cf.proto"),
)
MAIN_CF_CANDIDATES = (Path("/usr/share/postfix/main.cf.debian"),)
CONFIGURE_INSTANCE = Path("/usr/lib/postfix/configure-instance.sh")  # Debian: sets up chroots
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs", "devtmpfs"})


@dataclass(frozen=True, slots=True)
class PostfixPrograms:
    """Where Postfix's programs and stock files are, and what it is."""

    postfix: Path
    postconf: Path
    smtp_source: Path
    smtp_sink: Path
    master_cf: Path  # the stock master.cf the instance starts from
    main_cf: Path | None  # Debian's main.cf defaults, when there are any
    configure_instance: Path | None
    version: str
    mail_owner: str  # the unprivileged user Postfix (and smtp-sink) runs as
    destination_concurrency: int  # its default limit of connections to one next hop


def _first(paths: Iterable[Path]) -> Path | None:
    return next((path for path in paths if path.is_file()), None)


def _which(name: str) -> Path | None:
    found = shutil.which(name, path=SEARCH_PATH)
    return Path(found) if found else None


def _postconf(postconf: Path, *names: str) -> list[str]:
    """Postfix's built-in defaults (-d), so that no main.cf is needed or read."""
    done = subprocess.run(
        [str(postconf), "-d", "-h", *names], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout.split()


def find_postfix() -> tuple[PostfixPrograms | None, list[str]]:
    """Postfix's programs, or None and one line for each that is missing."""
    postfix, postconf = _which("postfix"), _which("postconf")
    source, sink = _which("smtp-source"), _which("smtp-sink")
    master_cf = _first(MASTER_CF_CANDIDATES)
    problems = []
    if postfix is None or postconf is None:
        problems.append(
            "Postfix is not installed: no postfix or postconf in PATH or /usr/sbin"
            " (Debian: apt-get install postfix)"
        )
    elif master_cf is None:
        names = " or ".join(str(path) for path in MASTER_CF_CANDIDATES)
        problems.append(f"Postfix's stock master.cf is missing: neither {names} exists")
    for tool, path in (("smtp-source", source), ("smtp-sink", sink)):
        if path is None:
            problems.append(
                f"{tool} is not installed: it comes with Debian's postfix package, in /usr/sbin"
            )
    if problems or not (postfix and postconf and source and sink and master_cf):
        return None, problems
    try:
        version, owner, concurrency = _postconf(
            postconf, "mail_version", "mail_owner", "default_destination_concurrency_limit"
        )
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        return None, [f"postconf -d does not answer: {error}"]
    programs = PostfixPrograms(
        postfix=postfix,
        postconf=postconf,
        smtp_source=source,
        smtp_sink=sink,
        master_cf=master_cf,
        main_cf=_first(MAIN_CF_CANDIDATES),
        configure_instance=CONFIGURE_INSTANCE if CONFIGURE_INSTANCE.is_file() else None,
        version=version,
        mail_owner=owner,
        destination_concurrency=int(concurrency),
    )
    return programs, []


def check_root(euid: int) -> list[str]:
    """A line when the run is not root: `postfix start` of an instance needs root."""
    if euid == 0:
        return []
    return [
        "not root: a private Postfix instance is started with `postfix -c DIR start`, which"
        " needs root (Postfix drops privileges itself); run hubd bench --compare-postfix as root"
    ]


def filesystem_of(path: Path, mounts: str) -> str:
    """The type of the filesystem holding `path`, from the text of /proc/mounts."""
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        # /proc/mounts escapes spaces and the like in octal (\040).
        point = fields[1].encode().decode("unicode_escape")
        inside = resolved == point or resolved.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def check_reachable(path: Path) -> list[str]:
    """A line when Postfix's unprivileged processes could not reach a queue under `path`."""
    resolved = path.resolve()
    for folder in (resolved, *resolved.parents):
        if not folder.stat().st_mode & stat.S_IXOTH:
            return [
                f"{path}: {folder} is closed to other users (no x bit), so Postfix's"
                " unprivileged processes could not reach their queue; pass --dir elsewhere"
            ]
    return []


def check_filesystem(path: Path, kind: str) -> list[str]:
    """A line when `path` is on a filesystem in memory, where fsync costs nothing."""
    if kind not in MEMORY_FILESYSTEMS:
        return []
    return [
        f"{path} is on {kind}: the queues must be on a real filesystem, where fsync reaches a"
        " disk, or the comparison measures nothing durable; pass --dir on a disk"
    ]
