"""``python -m aotwarm`` runs the CLI."""

from .cli import main

main()
