"""The phantom simulator: determinism, project layout, geometry and physics that a picker relies on."""

import json

import numpy as np
import pytest
from helpers import SMALLER

from copick_soup.data import open_project, open_tomogram, read_picks
from copick_soup.errors import SoupError
from copick_soup.objects import CZII_OBJECTS, FULL_SHAPE, VOXEL_SIZE, classes_from_objects, czii_pickable_objects
from copick_soup.simulate import PROFILES, sample_conditions, simulate_project, simulate_run
from copick_soup.simulate.imaging import ctf

CLASSES = classes_from_objects(czii_pickable_objects())
NAMES = [c.name for c in CLASSES]


def arrays(config):
    root = open_project(config)
    out = {}
    for run in root.runs:
        for tomo_type in ("wbp", "denoised", "ctfdeconvolved"):
            out[(run.name, tomo_type)] = open_tomogram(run, VOXEL_SIZE, tomo_type)[:]
        for name, pos in read_picks(run, NAMES, "curation", "0").items():
            out[(run.name, name)] = pos
    return out


def test_same_seed_same_project_and_other_seed_differs(make_project):
    a = arrays(make_project("a", seed=7, shape=SMALLER))
    b = arrays(make_project("b", seed=7, shape=SMALLER))
    c = arrays(make_project("c", seed=8, shape=SMALLER))
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a[("exp_000", "wbp")], c[("exp_000", "wbp")])


def test_project_layout(project):
    root = open_project(project)
    assert [r.name for r in root.runs] == ["exp_000", "exp_001"]
    run = root.runs[0]
    assert [vs.voxel_size for vs in run.voxel_spacings] == [VOXEL_SIZE]
    assert sorted(t.tomo_type for t in run.voxel_spacings[0].tomograms) == ["ctfdeconvolved", "denoised", "wbp"]
    assert open_tomogram(run, VOXEL_SIZE, "wbp").shape == (64, 128, 128)
    assert {p.pickable_object_name for p in run.get_picks(user_id="curation", session_id="0")} == set(NAMES)
    provenance = json.loads((project.parent / "simulation.json").read_text())
    assert set(provenance["runs"]) == {"exp_000", "exp_001"} and provenance["seed"] == 0


def test_tomograms_use_slash_chunk_keys_like_the_portal(project):
    """Portal stores use '/' chunk keys; a '.'-keyed store would read back as zeros without an error."""
    run = open_project(project).runs[0]
    tomogram = run.voxel_spacings[0].get_tomograms("wbp")[0]
    meta = json.loads(tomogram.zarr()["0/.zarray"])
    assert meta["dimension_separator"] == "/"
    assert "0/0/0/0" in tomogram.zarr()  # the first chunk of scale 0, nested
    assert float(np.abs(open_tomogram(run, VOXEL_SIZE, "wbp")[:]).max()) > 0


def test_particles_are_inside_the_volume_and_do_not_overlap(make_project):
    root = open_project(make_project(crowding=8.0, runs=1))
    run = root.runs[0]
    picks = read_picks(run, NAMES, "curation", "0")
    extent = np.array([128, 128, 64]) * VOXEL_SIZE
    centers, radii = [], []
    for cls in CLASSES:
        pos = picks[cls.name]
        assert np.all(pos >= 0) and np.all(pos <= extent)
        centers += list(pos)
        radii += [cls.radius] * len(pos)
    centers, radii = np.array(centers), np.array(radii)
    assert len(centers) >= 10
    d = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    allowed = 0.95 * (radii[:, None] + radii[None]) - 1e-6
    np.fill_diagonal(d, np.inf)
    assert np.all(d >= allowed)


def test_protein_is_dark_in_every_tomogram_type():
    """Particle centres (lobed classes) are darker than the background, as in real cryo-ET."""
    rng = np.random.default_rng(3)
    sim = simulate_run((64, 160, 160), CLASSES, "simulated", rng, crowding=6.0)
    lobed = [c.name for c in CLASSES if c.simulation["shape"] == "lobes"]
    zyx = np.concatenate([sim.picks[n] for n in lobed])[:, ::-1] / VOXEL_SIZE
    assert len(zyx) >= 5
    for tomo_type, volume in sim.tomograms.items():
        at_particles = np.mean([volume[tuple(np.round(p).astype(int))] for p in zyx])
        z = (at_particles - volume.mean()) / volume.std()
        assert z < -0.5, tomo_type


def test_missing_wedge_empties_the_spectrum_around_kz():
    rng = np.random.default_rng(0)
    sim = simulate_run((96, 96, 96), CLASSES, "experimental", rng, crowding=6.0)
    power = np.abs(np.fft.fftn(sim.tomograms["wbp"])) ** 2
    k = np.fft.fftfreq(96)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    band = (np.sqrt(kz**2 + kx**2) > 0.15) & (np.sqrt(kz**2 + kx**2) < 0.4)
    angle = np.degrees(np.arctan2(np.abs(kz), np.abs(kx)))  # 0 = in the untilted plane, 90 = along the beam
    inside_wedge = band & (angle > 70)
    sampled = band & (angle < 50)
    assert power[inside_wedge].mean() < 0.05 * power[sampled].mean()


def test_ctf_at_300kv_flips_sign_at_its_first_zero():
    defocus = 4.0  # µm
    first_zero = np.sqrt(1 / (0.019687 * defocus * 1e4))  # 1/Å, ignoring Cs
    k = np.array([0.0, 0.5 * first_zero, 1.2 * first_zero])
    values = ctf(k**2, defocus)
    assert values[0] == pytest.approx(-0.07)
    assert values[1] < -0.5 and values[2] > 0


def test_profiles_differ_in_noise_ctf_contrast_and_crowding():
    rng = np.random.default_rng(0)
    sims = [sample_conditions("simulated", rng) for _ in range(50)]
    exps = [sample_conditions("experimental", rng) for _ in range(50)]
    assert max(c.snr for c in exps) < min(c.snr for c in sims)
    assert np.mean([c.b_factor for c in exps]) > np.mean([c.b_factor for c in sims])
    assert np.mean([c.crowding for c in exps]) < np.mean([c.crowding for c in sims])
    assert np.mean([c.distractors for c in exps]) > np.mean([c.distractors for c in sims])
    for profile in PROFILES.values():
        assert 3.0 <= profile["defocus_um"][0] and profile["defocus_um"][1] <= 5.0


def test_simulates_a_lab_s_own_classes(make_project):
    objects = [
        dict(name="proteasome", is_particle=True, label=1, radius=100.0, metadata={}),
        dict(name="nucleosome", is_particle=True, label=2, radius=55.0,
             metadata=dict(simulation=dict(per_tomogram=200))),
        dict(name="membrane", is_particle=False, label=3),
    ]
    root = open_project(make_project(objects=objects, crowding=6.0))
    picks = read_picks(root.runs[0], ["proteasome", "nucleosome"], "curation", "0")
    assert len(picks["nucleosome"]) > 0
    assert not root.runs[0].get_picks(object_name="membrane")


def test_full_size_run():
    sim = simulate_run(FULL_SHAPE, CLASSES, "experimental", np.random.default_rng(1))
    assert all(v.shape == FULL_SHAPE and v.dtype == np.float32 for v in sim.tomograms.values())
    assert sum(len(p) for p in sim.picks.values()) > 60  # about 150 expected at realistic crowding


@pytest.mark.parametrize("kwargs, message", [
    (dict(profile="cartoon"), "--profile"),
    (dict(shape=(8, 128, 128)), "--shape"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(SoupError, match=message):
        simulate_project(tmp_path / "p", **kwargs)


def test_refuses_to_write_into_an_existing_project(project):
    with pytest.raises(SoupError, match="already exists"):
        simulate_project(project.parent)


def test_config_templates_list_the_czii_objects():
    from pathlib import Path

    configs = Path(__file__).parent.parent / "configs"
    for name in ("czii_copick.json", "czii_portal.json"):
        objects = json.loads((configs / name).read_text())["pickable_objects"]
        assert objects == json.loads(json.dumps(czii_pickable_objects())), name
    weights = {o["name"]: o["metadata"]["score_weight"] for o in CZII_OBJECTS}
    assert weights == {"apo-ferritin": 1, "beta-amylase": 0, "beta-galactosidase": 2, "ribosome": 1,
                       "thyroglobulin": 2, "virus-like-particle": 1}
    assert [c.radius for c in CLASSES] == [60, 65, 90, 150, 130, 135]


def test_balance_raises_rare_classes_to_the_median_and_keeps_the_config(make_project):
    from copick_soup.simulate.project import balanced

    counts = {c.name: c.simulation["per_tomogram"] for c in balanced(CLASSES)}
    natural = {c.name: c.simulation["per_tomogram"] for c in CLASSES}
    median = float(np.median(list(natural.values())))
    assert counts == {n: max(v, median) for n, v in natural.items()}
    assert counts["beta-galactosidase"] > natural["beta-galactosidase"] and counts["apo-ferritin"] == 46

    # A lab's common and rare class, small enough that placement never runs out of room.
    objects = [dict(name=n, is_particle=True, label=i + 1, radius=30.0,
                    metadata=dict(simulation=dict(per_tomogram=count)))
               for i, (n, count) in enumerate([("common", 20000), ("rare", 1000)])]
    config = make_project("balanced", objects=objects, balance=True, crowding=1.0, tomo_types=("wbp",))
    plain = make_project("plain", objects=objects, crowding=1.0, tomo_types=("wbp",))
    written = {o["name"]: o["metadata"]["simulation"]["per_tomogram"]
               for o in json.loads(config.read_text())["pickable_objects"]}
    assert written == {"common": 20000, "rare": 1000}  # the project's classes keep their real counts

    def count(path, name):
        runs = json.loads((path.parent / "simulation.json").read_text())["runs"].values()
        return sum(r["counts"][name] for r in runs)

    assert count(config, "rare") > 4 * max(count(plain, "rare"), 1)
    assert 0.5 < count(config, "common") / count(plain, "common") < 2
