"""A clone without ../shared/corpus: the corpus tests skip with one line, or fail under CI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _corpus_tests(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["HUBD_CORPUS"] = str(tmp_path / "no-such-corpus")
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         "tests/integration/test_corpus.py", "tests/unit/test_queueid.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip


class TestMissingCorpus:
    def test_skipped_outside_ci_with_one_line(self, tmp_path: Path) -> None:
        """Without CI=true the run passes (a unit test beside it stands for the rest of the
        suite); the corpus module is skipped with one line saying where the corpus comes from."""
        done = _corpus_tests(tmp_path, ci=None)
        assert done.returncode == 0, done.stdout
        reasons = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]
        assert len(reasons) == 1, done.stdout
        assert "../shared/corpus/messages" in reasons[0]
        assert "skipped outside CI" in reasons[0]

    def test_fails_under_ci(self, tmp_path: Path) -> None:
        """With CI=true, as .ci/run sets it, a missing corpus fails the run."""
        done = _corpus_tests(tmp_path, ci="true")
        assert done.returncode == 1, done.stdout
        assert "CI=true, so this fails" in done.stdout

    def test_ci_script_exports_ci(self) -> None:
        """.ci/run sets CI=true itself, so a run by hand is as strict as CI's."""
        lines = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        assert "export CI=true" in lines
