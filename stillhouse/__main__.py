"""`python -m stillhouse` runs the CLI."""

from .cli import main

main()
