"""Rebuild the shipped density templates (templates.npz) from their sources: `python -m
copick_soup.simulate.templates.make SOURCES`, where SOURCES holds the files `templates.json` names (each checked
against its SHA-256). Needs gemmi and mrcfile (`pip install gemmi mrcfile`); picking and simulating do not.

- An atomic model (mmCIF/PDB) is read with gemmi; each atom's scattering weight (its atomic number) is spread
  onto the 10.012 Å grid by trilinear splatting, then blurred to about 10 Å resolution (a Gaussian of
  sigma = 0.425 x 10 Å, the usual FWHM-to-sigma relation), and the map's total is matched to the density of the
  same complex computed by polnet, so every template shares one unit.
- A density map (MRC) is resampled from its voxel size to 10.012 Å.
Each template is cropped to the box of its values above 1% of its maximum (plus a margin) and stored in float16.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
VOXEL = 10.012  # Å, the CZII tomograms'
RESOLUTION = 10.0  # Å, of the maps computed from atomic models


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def from_model(path: Path) -> np.ndarray:
    """Density of an atomic model on the VOXEL grid, centred on the model's centre of mass."""
    import gemmi
    from scipy.ndimage import gaussian_filter

    structure = gemmi.read_structure(str(path))
    structure.setup_entities()
    atoms = [(cra.atom.pos, cra.atom.element.atomic_number) for cra in structure[0].all()
             if not cra.atom.is_hydrogen()]
    xyz = np.array([[p.x, p.y, p.z] for p, _ in atoms])
    weight = np.array([z for _, z in atoms], dtype=np.float64)
    zyx = (xyz - np.average(xyz, axis=0, weights=weight))[:, ::-1] / VOXEL
    half = int(np.ceil(np.abs(zyx).max() + 3 * RESOLUTION / VOXEL)) + 2
    grid = np.zeros((2 * half + 1,) * 3)
    base = np.floor(zyx).astype(int)
    frac = zyx - base
    for corner in np.ndindex(2, 2, 2):
        w = weight * np.prod(np.where(corner, frac, 1 - frac), axis=1)
        np.add.at(grid, tuple((base + corner + half).T), w)
    return gaussian_filter(grid, 0.425 * RESOLUTION / VOXEL)


def from_map(path: Path) -> np.ndarray:
    import mrcfile
    from scipy.ndimage import zoom

    with mrcfile.open(path, permissive=True) as mrc:
        data, voxel = np.asarray(mrc.data, dtype=np.float64), float(mrc.voxel_size.x)
    return zoom(data, voxel / VOXEL, order=1)


def crop(density: np.ndarray, margin: int = 2) -> np.ndarray:
    density = np.clip(density, 0, None)
    inside = np.argwhere(density > 0.01 * density.max())
    centre = np.array(density.shape) // 2  # keep the centre: positions are the complex's centre
    half = int(np.abs(inside - centre).max()) + margin
    lo, hi = np.maximum(centre - half, 0), centre + half + 1
    return density[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]


def build(sources: Path) -> None:
    table = json.loads((HERE / "templates.json").read_text())
    arrays = {}
    for name, entry in table["templates"].items():
        source = sources / entry["file"]
        if sha256(source) != entry["sha256"]:
            sys.exit(f"{source}: SHA-256 differs from templates.json; is it the file from {entry['repository']}?")
        if entry["role"] == "scale":
            continue
        if entry["kind"] == "model":
            density = from_model(source)
            reference = from_map(sources / table["templates"][entry["scale_like"]]["file"])
            density *= reference.sum() / density.sum()
        else:
            density = from_map(source)
        arrays[name] = crop(density).astype(np.float16)
        print(f"{name}: {arrays[name].shape} from {entry['file']}")
    np.savez_compressed(HERE / "templates.npz", **arrays)


if __name__ == "__main__":
    build(Path(sys.argv[1]))
