"""``python -m turbo_vaed`` runs the CLI."""

from turbo_vaed.cli import main

main()
