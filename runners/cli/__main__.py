"""`python -m runners.cli …` is the `seal` command."""

from runners.cli import main

main()
