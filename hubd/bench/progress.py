"""Progress bars for `hubd bench` on stderr, drawn by rich when stderr is a terminal.

Owns: one bar per stage of a run (sending, relaying), updated from any thread, and nothing
at all when the output is not a terminal, so that logs and `--json` stay clean.
Public: Bars, Bar.
Limits: rich redraws at most 10 times a second in its own thread; an update is a counter
change under a lock, cheap next to an SMTP transaction.
See also: hubd/bench/run.py, hubd/bench/compare.py.
"""

from __future__ import annotations

import sys
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)


class Bar:
    """One bar: advance it by a number of messages, or set how many are done."""

    def __init__(self, progress: Progress | None, task: TaskID | None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, steps: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, steps)

    def set(self, completed: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=completed)

    def close(self) -> None:
        """Take the bar off the screen (the report says what it showed)."""
        if self._progress is not None and self._task is not None:
            self._progress.remove_task(self._task)


class Bars:
    """A set of bars on stderr for the duration of a `with` block; silent when not shown."""

    def __init__(self, shown: bool | None = None) -> None:
        self.shown = sys.stderr.isatty() if shown is None else shown
        self._progress: Progress | None = None

    def __enter__(self) -> Bars:
        if self.shown:
            self._progress = Progress(
                TextColumn("{task.description:<34}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self._progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def bar(self, label: str, total: int) -> Bar:
        """A new bar of `total` steps (a silent one when bars are not shown)."""
        if self._progress is None:
            return Bar(None, None)
        return Bar(self._progress, self._progress.add_task(label, total=total))
