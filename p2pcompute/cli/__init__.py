"""The ``p2pcompute`` command: argument parsing and printing only.

Files:
    main.py     entry point; builds the parser from the command modules below
    output.py   printing helpers: rich tables, ``--json``, user-facing errors
    daemon.py   ``join`` (run a peer in the foreground), ``config show``
    control.py  ``status``, ``peers``, ``ping`` (talk to a running daemon's control API)
    devnet.py   ``devnet`` (N real daemons on loopback) and ``demo``

Each command module has ``register(subparsers)``; ``main.COMMAND_MODULES``
lists them, so a new issue adds one module and one line.
"""
