"""The node's operator log: stderr, text or JSON lines, at a chosen level, quiet libraries.

Owns: the logging set-up every process of a node shares (a child's lines carry its name),
in one of two formats: text, or one JSON object per line.
Public: configure(), current_format(), LogLevel, LogFormat, JsonFormatter.
Limits: one handler on the root logger; aiosmtpd's per-command log ("mail.log") and alembic
are kept at WARNING unless the level is DEBUG.
See also: hubd/cli.py (--log-level, --log-format), hubd/worker.py, hubd/tracking.py (the
tracking log, a separate thing).
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO


class LogLevel(enum.StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def number(self) -> int:
        """The stdlib logging level."""
        return logging.getLevelNamesMapping()[self.value.upper()]


class LogFormat(enum.StrEnum):
    TEXT = "text"
    JSON = "json"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (RFC 3339, UTC), level, [process,] logger, message,
    and error (the traceback) when there is one."""

    def __init__(self, process: str = "") -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, UTC)
        line = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            **({"process": self._process} if self._process else {}),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["error"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


_current = LogFormat.TEXT


def current_format() -> LogFormat:
    """The format configure() last set (a supervisor hands it to its children)."""
    return _current


def configure(
    level: int = logging.INFO,
    process: str = "",
    log_format: LogFormat = LogFormat.TEXT,
    stream: IO[str] | None = None,
) -> None:
    """Log at `level` to stderr in `log_format`; `process` names a node's child process."""
    global _current  # noqa: PLW0603 (the one setting of a process-wide facility)
    _current = log_format
    name = f"{process} " if process else ""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(process)
        if log_format is LogFormat.JSON
        else logging.Formatter(f"%(asctime)s %(levelname)s {name}%(name)s: %(message)s")
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet = logging.DEBUG if level <= logging.DEBUG else logging.WARNING
    # aiosmtpd logs every command at INFO, alembic every step of a migration check: debugging
    # aids, not an operator's log (and aiosmtpd's costs a node a fifth of its CPU).
    for library in ("mail.log", "alembic"):
        logging.getLogger(library).setLevel(quiet)
