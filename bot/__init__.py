"""Adapters: the Bolt app, the terminal console, Block Kit rendering, the scheduler, the CLI."""
