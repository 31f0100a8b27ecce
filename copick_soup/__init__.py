"""copick-soup: a weighted soup of 3D U-Nets that picks particles in cryo-ET tomograms stored in copick projects.

The package reads like the pipeline: `simulate` (phantom tomograms), `data` (copick I/O), `metric` (CZII
F-beta), and the click commands in `cli`. Importing it is cheap: heavy libraries load inside functions.
"""

__version__ = "0.1.0"
