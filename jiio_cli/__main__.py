"""``python -m jiio_cli``: the ``jiio`` command, as torchrun starts it on every rank."""

from jiio_cli.cli.app import main

# Guarded: worker processes started with "spawn" import this module under another name.
if __name__ == "__main__":
    main()
