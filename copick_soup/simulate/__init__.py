"""Phantom tomograms with ground truth, from two physically different engines (project.ENGINES):
`blobs` (sample: phantom.py, shapes.py; microscope: imaging.py) and `tilt` (sample: templated.py with densities
from atomic models in templates/; microscope: tiltseries.py), written as a copick project (project.py)."""

from copick_soup.simulate.profiles import PROFILES, Conditions, sample_conditions
from copick_soup.simulate.project import ENGINES, MIXED, SimulatedRun, simulate_project, simulate_run

__all__ = ["ENGINES", "MIXED", "PROFILES", "Conditions", "sample_conditions", "SimulatedRun", "simulate_project",
           "simulate_run"]
