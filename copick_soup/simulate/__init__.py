"""Phantom tomograms with ground truth: sample (phantom), microscope (imaging), copick project (project)."""

from copick_soup.simulate.profiles import PROFILES, Conditions, sample_conditions
from copick_soup.simulate.project import SimulatedRun, simulate_project, simulate_run

__all__ = ["PROFILES", "Conditions", "sample_conditions", "SimulatedRun", "simulate_project", "simulate_run"]
