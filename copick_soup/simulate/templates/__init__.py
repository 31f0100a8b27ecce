"""Protein density templates for the `tilt` phantom engine, shipped with the package.

`templates.npz` holds one density per template on the 10.012 Å grid (float16, one arbitrary unit proportional to
scattering mass); `templates.json` says where each came from (structure, source repository and commit, licence,
which CZII entries it stands for) and `make.py` rebuilds the file from those sources. A copick pickable object
finds its template by `metadata.simulation.template` (a template's name), else by its `pdb_id`.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copick_soup.errors import SoupError

HERE = Path(__file__).resolve().parent
FORMAT = "copick-soup-templates/1"


@dataclass(frozen=True)
class Template:
    name: str
    density: np.ndarray  # (Z, Y, X) float32, centred on the complex's centre
    provenance: dict  # the templates.json entry: structure, source, licence, what it stands for
    voxel_size: float


def load_templates(folder: Path = HERE) -> dict[str, Template]:
    """Every shipped template by name; a missing or corrupt file is a one-line error naming it."""
    table_path, arrays_path = Path(folder) / "templates.json", Path(folder) / "templates.npz"
    try:
        table = json.loads(table_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SoupError(f"{table_path}: missing or corrupt density template table ({err})") from err
    if table.get("format") != FORMAT:
        raise SoupError(f"{table_path}: not a density template table (format {table.get('format')!r})")
    try:
        with np.load(arrays_path) as arrays:
            densities = {name: arrays[name].astype(np.float32) for name in arrays.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise SoupError(f"{arrays_path}: missing or corrupt density templates ({err})") from err
    shipped = {n: e for n, e in table["templates"].items() if e["role"] != "scale"}
    missing = sorted(set(shipped) - set(densities))
    if missing:
        raise SoupError(f"{arrays_path}: no density for template(s) {', '.join(missing)}")
    return {n: Template(n, densities[n], e, float(table["voxel_size"])) for n, e in shipped.items()}


def template_for(obj: dict, templates: dict[str, Template]) -> Template | None:
    """The template of a pickable object (a config dict): named in its metadata, else matched by PDB ID."""
    named = ((obj.get("metadata") or {}).get("simulation") or {}).get("template")
    if named:
        return templates.get(named)
    pdb = str(obj.get("pdb_id") or "").upper()
    return next((t for t in templates.values() if pdb and pdb in t.provenance["stands_for"]), None)
