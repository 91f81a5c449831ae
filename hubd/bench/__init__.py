"""`hubd bench`: measure a node with hubd's own load, or side by side with Postfix.

One module per job: settings (what a run is asked), load (hubd's load generator), report
(one run's figures), run (a single run: node, server or sink), sink (the storage-free
sink), child (hubd subprocesses), node (the node's config and queue state), usage (CPU and
memory from /proc), counter, smtp_source and smtp_sink (Postfix's test programs), postfix
(a private Postfix instance), requirements (what a comparison needs), comparison (its
figures) and compare (its runs), progress (bars on a terminal).
Public: the names below; see each module for the rest.
See also: README.md (Benchmark), hubd/cli.py.
"""

from hubd.bench.errors import BenchError
from hubd.bench.load import LoadResult, build_message, dot_stuff, drive_load
from hubd.bench.report import BenchReport, format_report, percentile, summarise
from hubd.bench.run import run_bench
from hubd.bench.settings import MIN_SIZE, BenchMode, BenchSettings, CompareSettings
from hubd.bench.sink import serve_sink

__all__ = [
    "MIN_SIZE",
    "BenchError",
    "BenchMode",
    "BenchReport",
    "BenchSettings",
    "CompareSettings",
    "LoadResult",
    "build_message",
    "dot_stuff",
    "drive_load",
    "format_report",
    "percentile",
    "run_bench",
    "serve_sink",
    "summarise",
]
