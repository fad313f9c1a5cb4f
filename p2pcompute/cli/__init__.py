"""The ``p2pcompute`` command: argument parsing and printing only.

Files:
    main.py     entry point; builds the parser from the command modules below
    output.py   printing helpers: rich tables, ``--json``, user-facing errors
    daemon.py   ``join`` (run a peer in the foreground), ``config show``
    control.py  ``status``, ``peers``, ``ping`` (talk to a running daemon's control API)
    devnet.py   ``devnet`` (N real daemons on loopback) and ``demo``
    ops_cmd.py  ``run job.yaml --local``, ``ops list``, ``ops scene``
    storage_cmd.py  ``add``, ``cat``, ``get``, ``car export|import``, ``storage gc|pins|unpin``
    data_cmd.py     ``fetch URI`` (http, kubo RPC, gateway, ipfs://), ``data register|show|sign``
    dht_cmd.py      ``dht find-peer | providers | provide``
    simulate_cmd.py ``simulate churn`` (membership + DHT at scale, in virtual time)

Each command module has ``register(subparsers)``; ``main.COMMAND_MODULES``
lists them, so a new issue adds one module and one line.
"""
