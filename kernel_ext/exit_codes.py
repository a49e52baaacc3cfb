"""Exit codes of the `durable` command, fixed by the design: scripts and CI rely on them."""

EXIT_COMPLETED, EXIT_FAILED, EXIT_USAGE, EXIT_SUSPENDED = 0, 1, 2, 3
