"""The `brainformer` command: one subcommand per module in this package."""
