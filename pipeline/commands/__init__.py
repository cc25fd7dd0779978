"""Sub-commands of ``hubcat``: one module per command, each with ``register(subparsers)``."""
