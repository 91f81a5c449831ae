"""The one error of `hubd bench`: the benchmark could not run or could not finish.

Public: BenchError.
See also: hubd/errors.py (HubdError), hubd/cli.py (exit code 1).
"""

from __future__ import annotations

from hubd.errors import HubdError


class BenchError(HubdError):
    """The benchmark could not run or finish: a child did not start, delivery timed out."""
