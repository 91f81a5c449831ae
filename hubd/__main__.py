"""python -m hubd: the hubd command."""

from hubd.cli import main

main()
