"""Phantom tomograms with ground truth, from three physically different engines (project.ENGINES):
`blobs` (sample: phantom.py, shapes.py; microscope: imaging.py), `tilt` (sample: templated.py with densities
from atomic models in templates/; microscope: tiltseries.py) and `sart` (sample: pseudoatomic.py with complexes
assembled from their architecture in assemblies.py; microscope: sirt.py), written as a copick project (project.py)."""

from copick_soup.simulate.profiles import PROFILES, Conditions, sample_conditions
from copick_soup.simulate.project import ENGINES, MIXED, MIXED_ENGINES, SimulatedRun, simulate_project, simulate_run

__all__ = ["ENGINES", "MIXED", "MIXED_ENGINES", "PROFILES", "Conditions", "sample_conditions", "SimulatedRun",
           "simulate_project", "simulate_run"]
