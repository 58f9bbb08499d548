"""`python -m attnbench`: the same CLI as the `attnbench` command."""

from attnbench.suite.cli import main

main()
