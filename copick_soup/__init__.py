"""copick-soup: a weighted soup of 3D U-Nets that picks particles in cryo-ET tomograms stored in copick projects.

The package reads like the pipeline: `simulate` (phantom tomograms), `data` (copick I/O), `metric` (CZII
F-beta), and the click commands in `cli`. Importing it is cheap: heavy libraries load inside functions.
"""

import os

# Transparent huge pages for torch's CPU tensors of 2 MB and more. A 3D U-Net allocates about a GB of fresh
# activations per window batch, and without this the kernel faults them in 4 KB at a time on every call: about
# a quarter of a CPU forward pass (benchmarks/results/pick-thp.md). torch reads the variable once, when it first
# allocates, so it only takes effect when copick_soup is imported before torch (the CLI, the copick plugin and
# the Ray jobs do). THP_MEM_ALLOC_ENABLE=0 opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"
