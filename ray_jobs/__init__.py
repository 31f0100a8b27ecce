"""Ray jobs: scheduling only. The work itself is done by the same copick-level functions as the CLI."""

# Imported first in every Ray worker that unpickles a job's actor or task, so that copick_soup's torch
# settings (huge pages for CPU tensors) are in place before torch loads there.
import copick_soup  # noqa: F401
