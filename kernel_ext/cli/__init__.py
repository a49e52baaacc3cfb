"""The `durable` command line: one module per group of commands."""
