"""``python -m patron``."""

from patron.cli import main

main()
