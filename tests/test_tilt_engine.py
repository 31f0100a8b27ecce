"""The `tilt` phantom engine: densities from atomic models with their provenance, a real-space tilt series and
weighted back-projection, written as a copick project like the `blobs` engine's."""

import json
import re
import shutil

import numpy as np
import pytest
from helpers import cube_means

from copick_soup.data import open_project, open_tomogram, read_picks
from copick_soup.data.coords import angstrom_to_voxel
from copick_soup.errors import SoupError
from copick_soup.objects import VOXEL_SIZE, czii_pickable_objects
from copick_soup.simulate import simulate_project
from copick_soup.simulate.templated import render_template
from copick_soup.simulate.templates import HERE, load_templates, template_for
from copick_soup.simulate.tiltseries import back_project, dose_symmetric, project


@pytest.fixture(scope="module")
def tilted(tmp_path_factory):
    return simulate_project(tmp_path_factory.mktemp("tilt") / "p", runs=1, shape=(64, 160, 160), seed=2,
                            crowding=6.0, engine="tilt")


def test_every_czii_target_has_a_template_with_its_provenance():
    templates = load_templates()
    for obj in czii_pickable_objects():
        t = template_for(obj, templates)
        assert t is not None and obj["pdb_id"] in t.provenance["stands_for"], obj["name"]
        assert t.provenance["licence"] and t.provenance["repository"].startswith("github:")
        assert len(t.provenance["sha256"]) == 64 and t.voxel_size == VOXEL_SIZE
        centre = np.array(t.density.shape) // 2  # the complex's centre is the box's centre
        assert t.density[tuple(centre)] >= 0 and t.density.min() >= 0 and t.density.max() > 1
    radius = {o["pdb_id"]: o["radius"] for o in czii_pickable_objects()}
    # a template's extent follows its particle's radius: the ribosome's box is wider than beta-amylase's
    assert templates["6qzp"].density.shape[0] > templates["1fa2"].density.shape[0]
    assert radius["6EK0"] > radius["1FA2"]


def test_a_project_from_the_tilt_engine_has_truth_for_every_class_at_dark_protein(tilted):
    root = open_project(tilted)
    run = root.runs[0]
    names = [o.name for o in root.pickable_objects]
    truth = read_picks(run, names, "curation", "0")
    assert all(len(truth[n]) > 0 for n in names), {n: len(truth[n]) for n in names}
    provenance = json.loads((tilted.parent / "simulation.json").read_text())
    assert provenance["engine"] == "tilt" and provenance["templates"]["ribosome"]["structure"] == "6QZP"
    for tomo_type in ("wbp", "denoised", "ctfdeconvolved"):
        volume = np.asarray(open_tomogram(run, VOXEL_SIZE, tomo_type)[:], dtype=np.float64)
        volume = (volume - volume.mean()) / volume.std()
        solid = np.concatenate([angstrom_to_voxel(truth[n], VOXEL_SIZE)  # not the hollow shells
                                for n in ("ribosome", "thyroglobulin", "beta-galactosidase")])
        elsewhere = np.random.default_rng(0).uniform(0, np.array(volume.shape) - 1, (200, 3))
        # protein is dark where the truth says it is (within a voxel or so: 3-voxel cubes around each centre)
        assert np.mean(cube_means(volume, solid)) < np.mean(cube_means(volume, elsewhere)) - 0.3, tomo_type


def test_a_template_lands_centred_on_its_fractional_position():
    g = np.indices((15, 15, 15)) - 7
    blob = np.exp(-0.5 * (g**2).sum(0) / 4.0).astype(np.float32)
    volume = np.zeros((40, 40, 40), np.float32)
    centre = np.array([17.3, 20.6, 22.45])
    render_template(volume, centre, blob, np.eye(3), 1.0)
    mass = np.array([(np.indices(volume.shape)[i] * volume).sum() / volume.sum() for i in range(3)])
    np.testing.assert_allclose(mass, centre, atol=0.05)


def test_projection_and_back_projection_keep_a_point_where_it_is():
    import torch

    volume = torch.zeros((21, 5, 41))
    volume[14, 2, 27] = 1.0  # off centre in z and x
    angles = np.deg2rad(np.arange(-60, 61, 3.0))
    recon = back_project([project(volume, a) for a in angles], angles, 21).numpy()
    assert np.unravel_index(recon.argmax(), recon.shape) == (14, 2, 27)
    assert project(volume, 0.0).sum() == pytest.approx(1.0)


def test_tilts_go_in_dose_symmetric_order():
    assert dose_symmetric(9, 3) == [0.0, 3, -3, -6, 6, 9, -9]


def test_a_class_without_a_template_is_refused_before_anything_is_written(tmp_path):
    objects = [dict(name="proteasome", is_particle=True, label=1, radius=100.0, pdb_id="5MPA")]
    with pytest.raises(SoupError, match="^--engine tilt: no density template for proteasome"):
        simulate_project(tmp_path / "p", objects=objects, engine="tilt")
    named = [dict(objects[0], metadata=dict(simulation=dict(template="6qzp")))]  # a stand-in, named
    assert not (tmp_path / "p").exists()
    assert simulate_project(tmp_path / "q", objects=named, engine="tilt", runs=1, shape=(48, 96, 96)).exists()


def test_a_shape_smaller_than_the_largest_particle_is_refused(tmp_path):
    with pytest.raises(SoupError, match="smaller than the largest particle's template"):
        simulate_project(tmp_path / "p", shape=(24, 96, 96), engine="tilt")
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("damage", ["truncate", "remove"])
def test_a_missing_or_corrupt_template_file_is_a_one_line_error(tmp_path, damage):
    folder = tmp_path / "templates"
    shutil.copytree(HERE, folder)
    npz = folder / "templates.npz"
    if damage == "truncate":
        npz.write_bytes(npz.read_bytes()[:1000])
    else:
        npz.unlink()
    with pytest.raises(SoupError, match=f"^{npz}: missing or corrupt density templates"):
        load_templates(folder)


def test_a_mixed_project_alternates_engines_run_by_run(tmp_path):
    config = simulate_project(tmp_path / "p", runs=3, shape=(48, 96, 96), engine="mixed")
    runs = json.loads((config.parent / "simulation.json").read_text())["runs"]
    assert [runs[name]["engine"] for name in sorted(runs)] == ["blobs", "tilt", "blobs"]
    config = simulate_project(tmp_path / "joined", runs=3, shape=(48, 96, 96), engine="tilt+blobs")
    runs = json.loads((config.parent / "simulation.json").read_text())["runs"]
    assert [runs[name]["engine"] for name in sorted(runs)] == ["tilt", "blobs", "tilt"]
    for bad in ("polnet", "blobs+polnet", "tilt+tilt"):
        error = (f"--engine: unknown or repeated engine in '{bad}'; choose one of blobs, tilt, sart, several joined "
                 f"by + (blobs+sart), or mixed (blobs+tilt)")
        with pytest.raises(SoupError, match="^" + re.escape(error)):
            simulate_project(tmp_path / "q", engine=bad)
    assert not (tmp_path / "q").exists()  # refused before anything is written
