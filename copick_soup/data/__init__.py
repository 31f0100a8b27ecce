"""copick I/O: open projects, select runs, read tomograms lazily, read and write picks."""

from copick_soup.data.coords import angstrom_to_voxel, voxel_to_angstrom
from copick_soup.data.picks import read_picks, write_picks
from copick_soup.data.project import open_project, select_runs
from copick_soup.data.tomogram import open_tomogram

__all__ = [
    "angstrom_to_voxel",
    "voxel_to_angstrom",
    "read_picks",
    "write_picks",
    "open_project",
    "select_runs",
    "open_tomogram",
]
