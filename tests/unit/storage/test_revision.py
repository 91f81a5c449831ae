"""The newest schema revision, as storage knows it without Alembic and as Alembic sees it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from storage import prepare_queue
from storage.migrate import head_revision
from storage.schema import HEAD_REVISION


def test_the_constant_is_alembics_head() -> None:
    """HEAD_REVISION names the newest migration in storage/migrations/versions/."""
    assert head_revision() == HEAD_REVISION


def test_a_current_file_opens_without_alembic(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queue already at the newest revision is prepared again with Alembic never loaded
    (and its incarnation kept)."""
    path = tmp_path / "queue.db"
    first = prepare_queue(path)
    for name in [m for m in sys.modules if m == "alembic" or m.startswith("alembic.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "alembic", None)  # importing it now would fail
    monkeypatch.delitem(sys.modules, "storage.migrate", raising=False)
    assert prepare_queue(path) == first
