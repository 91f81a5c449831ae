"""python -m hubd (and the `hubd` script): the hubd command.

Ctrl-C while the command is still being imported ends the process quietly with status 130
once the import is done, instead of printing a KeyboardInterrupt traceback from the middle
of an import; nothing has been started by then. The command itself runs with Python's
usual handling (and `cluster up` with its own).
"""

import signal
import sys


def main() -> None:
    """Import the command line with SIGINT noted, not raised, then run it."""
    # A callable handler, not SIG_DFL: a SIGINT that arrived a moment ago and is still
    # pending is handed to whatever handler is set when Python gets to it, and one that
    # finds SIG_DFL there is dropped, so the command would start as if never interrupted.
    interrupted: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, _frame: interrupted.append(signum))
    from hubd.cli import main as run

    if interrupted:
        sys.exit(130)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    run()


if __name__ == "__main__":
    main()
