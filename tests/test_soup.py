"""Soup search: the simplex grid, threshold sweeps on cached heatmaps, and `copick-soup soup` end to end."""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

from copick_soup.cli import main
from copick_soup.data.coords import voxel_to_angstrom
from copick_soup.ensemble import Ensemble, Member, blend
from copick_soup.ensemble.evaluate import ValRun, sweep
from copick_soup.errors import SoupError
from copick_soup.model.manifest import MemberManifest
from copick_soup.objects import ParticleClass
from copick_soup.soup.search import MIN_OVERLAP_RUNS, search, simplex_grid

VS = 10.0
A = ParticleClass("a", 1, radius=60.0, score_weight=1.0)
B = ParticleClass("b", 2, radius=60.0, score_weight=2.0)


def blob(shape, center, height, sigma=1.5):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    return height * np.exp(-0.5 * sum((g - c) ** 2 for g, c in zip(grids, center)) / sigma**2)


def val_run(seed=0):
    """Member 0 marks the true particles at 0.6 and decoys at 0.3; member 1 marks only decoys, at 0.9."""
    rng = np.random.default_rng(seed)
    shape = (24, 48, 48)
    truth_zyx = rng.uniform(4, 20, size=(4, 3)) * [1, 2, 2]
    decoys = rng.uniform(4, 20, size=(4, 3)) * [1, 2, 2] + [0, 1, 1]
    good, bad = np.zeros((2, *shape), np.float32), np.zeros((2, *shape), np.float32)
    for c in range(2):
        for p in truth_zyx:
            good[c] += blob(shape, p, 0.6)
        for p in decoys:
            good[c] += blob(shape, p, 0.3)
            bad[c] += blob(shape, p, 0.9)
    truth = {"a": voxel_to_angstrom(truth_zyx, VS), "b": voxel_to_angstrom(truth_zyx, VS)}
    return ValRun(f"r{seed}", [good.astype(np.float16), bad.astype(np.float16)], truth)


def heatmap_soup(n_members: int) -> Ensemble:
    """An ensemble of classes A and B whose members' heatmaps the tests give as cached ValRuns."""
    members = [Member(None, MemberManifest(f"m{i}", "", {}, [A, B], VS, "wbp")) for i in range(n_members)]
    return Ensemble("test", members, [A, B], VS, {})


def test_simplex_grid():
    assert simplex_grid(2, 0.5) == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert len(simplex_grid(3, 0.25)) == 15
    assert all(abs(sum(w) - 1) < 1e-9 for w in simplex_grid(4, 0.25))
    for step in (0.3, 0, -0.5, 3):
        with pytest.raises(SoupError, match=f"--step {step:g}: must divide 1"):
            simplex_grid(2, step)


def test_thresholds_separate_particles_from_decoys():
    thresholds, score = sweep(heatmap_soup(2), [val_run(0), val_run(1)], (1.0, 0.0))
    assert 0.3 <= thresholds["a"] < 0.6 and [c.fbeta() for c in score.classes] == [1.0, 1.0]


def test_search_prefers_the_good_member_and_beats_the_bad_one():
    found = search(heatmap_soup(2), [val_run(0), val_run(1)], step=0.5, echo=lambda m: None)
    best = found["best"]
    assert best["score"] == 1.0 and best["weights"][0] >= 0.5
    singles = {tuple(r["weights"]): r["score"] for r in found["singles"]}
    assert singles[(1.0, 0.0)] == 1.0 and singles[(0.0, 1.0)] < 0.5


def test_search_switches_on_cross_class_suppression_where_it_helps():
    """Class b's channel also fires on a's particles, more strongly than on its own: no threshold separates
    those, but a's stronger peak at the same place does."""
    shape = (24, 48, 48)
    a_at, b_at = [(6, 10, 10), (16, 36, 12)], [(8, 30, 34), (17, 12, 38)]
    heat = np.zeros((2, *shape), np.float32)
    for p in a_at:
        heat[0] += blob(shape, p, 0.9)
        heat[1] += blob(shape, p, 0.6)
    for p in b_at:
        heat[1] += blob(shape, p, 0.5)
    truth = {"a": voxel_to_angstrom(np.array(a_at, float), VS), "b": voxel_to_angstrom(np.array(b_at, float), VS)}
    runs = [ValRun(f"r{i}", [heat.astype(np.float16)], truth) for i in range(MIN_OVERLAP_RUNS)]
    best = search(heatmap_soup(1), runs, step=1.0, echo=lambda m: None)["best"]
    assert best["overlap_scores"]["0"] < 0.99 and best["overlap"] == 0.5 and best["score"] == 1.0
    assert best["thresholds"]["b"] < 0.5
    # Fewer validation runs than that: too few particles to learn a rule that drops picks; it stays off.
    said = []
    few = search(heatmap_soup(1), runs[:MIN_OVERLAP_RUNS - 1], step=1.0, echo=said.append)["best"]
    assert few["overlap"] == 0.0 and few["score"] < 0.99 and list(few["overlap_scores"]) == ["0"]
    assert f"cross-class suppression: off (tried with {MIN_OVERLAP_RUNS} or more validation runs, 3 given)" in said


def test_blend_renormalises_over_members_that_ran():
    h = np.ones((1, 2, 2, 2), np.float16)
    np.testing.assert_allclose(blend([h, None], (0.25, 0.75)), 1.0)
    assert blend([None, None], (0.5, 0.5)) is None
    # as in pick: where no member with a weight ran, the members of weight 0 that did stand in, equally
    np.testing.assert_allclose(blend([None, 2 * h, 4 * h], (1.0, 0.0, 0.0)), 3.0)


@pytest.fixture(scope="module")
def trained_members(tmp_path_factory):
    from copick_soup.data import open_project
    from copick_soup.objects import VOXEL_SIZE, classes_from_root
    from copick_soup.simulate import simulate_project
    from copick_soup.train.config import TrainConfig
    from copick_soup.train.dataset import load_volumes
    from copick_soup.train.loop import train_member

    tmp = tmp_path_factory.mktemp("soupmembers")
    config = simulate_project(tmp / "proj", runs=2, shape=(32, 64, 64), crowding=10.0, seed=4)
    root = open_project(config)
    classes = classes_from_root(root)
    out = tmp / "members"
    for tomo_type in ("denoised", "wbp"):
        vols = load_volumes(root, root.runs[:1], [tomo_type], classes, VOXEL_SIZE, "curation", "0")
        best = train_member(TrainConfig(variant="unet3d_test", patch=16, steps=3, val_every=3), classes, vols, [],
                            tmp / tomo_type, VOXEL_SIZE, tomo_type)
        out.mkdir(exist_ok=True)
        for suffix in (".json", ".safetensors"):
            (out / f"test-{tomo_type}{suffix}").write_bytes(best.with_suffix(suffix).read_bytes())
        manifest = json.loads((out / f"test-{tomo_type}.json").read_text())
        manifest["weights"] = f"test-{tomo_type}.safetensors"
        (out / f"test-{tomo_type}.json").write_text(json.dumps(manifest))
    return config, out


def test_soup_command_writes_a_manifest_that_pick_uses(trained_members, tmp_path):
    config, members = trained_members
    runner = CliRunner()
    result = runner.invoke(main, ["soup", "-c", str(config), "--members", str(members), "--val-runs", "exp_001",
                                  "--step", "0.5", "--window", "32", "--out", str(tmp_path / "soup")])
    assert result.exit_code == 0, result.output
    soup = json.loads((tmp_path / "soup" / "soup.json").read_text())
    assert soup["format"] == "copick-soup-soup/1"
    assert len(soup["members"]) == 2 and abs(sum(m["weight"] for m in soup["members"]) - 1) < 1e-9
    assert set(soup["thresholds"]) == {c["name"] for c in soup["classes"]}
    assert soup["validation"]["runs"] == ["exp_001"] and set(soup["validation"]["members"]) == {
        "test-denoised", "test-wbp"}
    best_single = max(m["score"] for m in soup["validation"]["members"].values())
    assert soup["validation"]["score"] >= best_single - soup["validation"]["tolerance"]  # near-ties go to the even
    result = runner.invoke(main, ["pick", "-c", str(config), "--soup", str(tmp_path / "soup"), "-r", "exp_000",
                                  "--window", "32"])
    assert result.exit_code == 0, result.output


def test_validation_runs_need_ground_truth(trained_members, tmp_path):
    config, members = trained_members
    result = CliRunner().invoke(main, ["soup", "-c", str(config), "--members", str(members), "--val-runs", "exp_001",
                                       "--truth-user", "nobody", "--out", str(tmp_path / "s")])
    assert result.exit_code != 0
    assert "run exp_001: no ground truth by user 'nobody' session '0'" in result.output


@pytest.mark.parametrize("option, error", [
    (["--step", "0"], "Error: --step 0: must divide 1 (e.g. 0.5, 0.25, 0.1)"),
    (["--tolerance", "-1"], "Error: --tolerance -1: must be >= 0 (an F4 difference)"),
    (["--window", "31"], "Error: --window 31: this soup's members (unet3d_test) need a multiple of 2; try 30 or 32"),
])
def test_bad_search_options_are_refused_before_any_heatmap(trained_members, tmp_path, option, error):
    config, members = trained_members
    result = CliRunner().invoke(main, ["soup", "-c", str(config), "--members", str(members), "--val-runs", "exp_001",
                                       "--out", str(tmp_path / "s"), *option])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [error]  # nothing computed before it
    assert not (tmp_path / "s").exists()


def test_members_at_different_voxel_sizes_are_refused(trained_members, tmp_path):
    config, members = trained_members
    manifest = json.loads((members / "test-wbp.json").read_text())
    manifest["voxel_size"] = 7.0
    other = tmp_path / "m"
    other.mkdir()
    (other / "test-wbp.json").write_text(json.dumps(manifest))
    (other / "test-wbp.safetensors").write_bytes((members / "test-wbp.safetensors").read_bytes())
    result = CliRunner().invoke(main, ["soup", "-c", str(config), "--members", str(members / "test-denoised.json"),
                                       "--members", str(other), "--val-runs", "exp_001", "--out", str(tmp_path / "s")])
    assert result.exit_code != 0 and "have different voxel sizes" in result.output


def test_thresholds_sit_in_a_broad_optimum_not_on_a_lone_spike():
    from copick_soup.ensemble.thresholds import smooth

    f = np.array([0.2, 0.9, 0.2, 0.2, 0.8, 0.85, 0.8, 0.2])  # a spike at 1, a plateau around 5
    assert int(np.argmax(f)) == 1 and int(np.argmax(smooth(f))) == 5


def test_near_ties_between_weightings_go_to_the_most_even_one():
    from copick_soup.soup.search import most_even

    results = [dict(weights=[1.0, 0.0], score=0.800), dict(weights=[0.5, 0.5], score=0.795),
               dict(weights=[0.75, 0.25], score=0.799), dict(weights=[0.0, 1.0], score=0.6)]
    assert most_even(results, 0.01)["weights"] == [0.5, 0.5]
    assert most_even(results, 0.0)["weights"] == [1.0, 0.0]  # no tolerance: the best score wins
    assert most_even(results, 0.003)["weights"] == [0.75, 0.25]


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("members"), "a soup manifest needs a non-empty 'members' list"),
    (lambda s: s.update(members=[]), "a soup manifest needs a non-empty 'members' list"),
    (lambda s: s["members"][1].pop("path"), "member 2 needs a 'path' to its member manifest"),
    (lambda s: s["members"][0].update(weight="heavy"), "member 1 .* needs a 'weight' >= 0, got 'heavy'"),
    (lambda s: s["members"][2].update(weight=-1), "member 3 .* needs a 'weight' >= 0, got -1"),
    (lambda s: s.pop("thresholds"), "a soup manifest needs 'thresholds'"),
])
def test_a_broken_soup_manifest_is_a_one_line_error(tmp_path, edit, message):
    import shutil

    from copick_soup.model.manifest import SHIPPED

    shutil.copytree(SHIPPED / "default", tmp_path / "soup")
    path = tmp_path / "soup" / "soup.json"
    soup = json.loads(path.read_text())
    edit(soup)
    path.write_text(json.dumps(soup))
    with pytest.raises(SoupError, match=f"^{re.escape(str(path))}: {message}"):
        Ensemble.load(path)
