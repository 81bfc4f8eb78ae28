"""``plasticd bench ...``: one module per benchmark, each registering its own sub-command."""
