"""`python -m attnbench`: the same CLI as the `attnbench` command."""

from .suite.cli import main

main()
