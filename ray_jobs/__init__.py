"""Ray jobs: scheduling only. The work itself is done by the same copick-level functions as the CLI."""
