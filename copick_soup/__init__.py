"""copick-soup: a weighted soup of 3D U-Nets that picks particles in cryo-ET tomograms stored in copick projects.

Layers, each importing only from those below it (the import-linter contract in pyproject.toml):
  cli, ray_jobs            thin commands and schedulers
  demo                     the `make demo` job
  pick, soup, train        copick-level jobs: pick runs, search soups, train members
  ensemble, simulate       the one inference pipeline (settings, windows, peaks, thresholds, scoring); phantoms
  model, metric, viz       the U-Net, members and soups on disk; the CZII metric; pictures
  data                     copick I/O: projects, runs, tomograms (at any voxel size), picks
  device, objects, errors  devices and precision; particle classes; the one error type
Importing `copick_soup` itself is cheap; the command modules import the pipeline (and torch) when they run.
"""

import os

# Transparent huge pages for torch's CPU tensors of 2 MB and more. A 3D U-Net allocates about a GB of fresh
# activations per window batch, and without this the kernel faults them in 4 KB at a time on every call: about
# a quarter of a CPU forward pass (benchmarks/results/pick-thp.md). torch reads the variable once, when it first
# allocates, so it only takes effect when copick_soup is imported before torch (the CLI, the copick plugin and
# the Ray jobs do). THP_MEM_ALLOC_ENABLE=0 opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
