"""python -m hubd (and the `hubd` script): the hubd command.

Ctrl-C while the command is still being imported ends the process quietly, as a plain
SIGINT, instead of printing a KeyboardInterrupt traceback from the middle of an import;
nothing has been started by then. The command itself runs with Python's usual handling.
"""

import signal


def main() -> None:
    """Import the command line with SIGINT at its default action, then run it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    from hubd.cli import main as run

    signal.signal(signal.SIGINT, signal.default_int_handler)
    run()


if __name__ == "__main__":
    main()
