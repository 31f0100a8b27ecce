"""The ensemble pipeline is written once: what the soup search scores is what `pick` writes; manifests are typed
and keep their file formats; one settings object checks itself."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_same_picks

from copick_soup.data import open_project, read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings, run_weights
from copick_soup.ensemble.evaluate import load_val_runs, val_picks
from copick_soup.errors import SoupError
from copick_soup.model.manifest import SHIPPED, MemberManifest, SoupManifest
from copick_soup.pick import PickOptions, pick_run
from copick_soup.train.recipe import load_recipe, recipe_members

RECIPES = Path(__file__).parent.parent / "configs" / "recipes"


def test_the_soup_search_scores_the_picks_that_pick_writes(crowded_project):
    """Two paths to one run's picks: the search's (each member's whole heatmap cached, blended, cut) and pick's
    (members streamed together in z). They differ only in the streamed buffers' float16 rounding."""
    root = open_project(crowded_project)
    run = root.runs[0]
    ensemble = Ensemble.load("default")  # trained: clear peaks, no float ties at the thresholds
    settings = InferenceSettings(amp="none")
    val = load_val_runs(root, [run], ensemble, settings, "curation", "0", echo=lambda m: None)
    searched = val_picks(ensemble, val[0], [m.weight for m in ensemble.members])
    pick_run(run, ensemble, settings, PickOptions(user_id="same", session_id="0"), echo=lambda m: None)
    picked = read_picks(run, ensemble.class_names, "same", "0", with_scores=True)
    assert sum(len(p) for p, _ in searched.values()) > 5

    def rows(found):  # {run: {class: [[x, y, z, score], ...]}}
        return {run.name: {n: np.column_stack([*found[n]]).reshape(-1, 4) for n in ensemble.class_names}}

    # The same picks, each within a tenth of a voxel and ten float16 steps (at scores of 0.5-1) of its own; a pick
    # within that score step of its class threshold may be on one side only, as the rounding can take it across.
    assert_same_picks(rows(picked), rows(searched), ensemble.thresholds, position=0.1 * ensemble.voxel_size,
                      score=5e-3)


def test_run_weights_renormalise_over_the_members_that_can_run():
    assert run_weights([0.5, 0.25, 0.25], [True, False, True]) == [2 / 3, 0.0, 1 / 3]
    assert run_weights([1.0, 0.0, 0.0], [False, True, True]) == [0.0, 0.5, 0.5]  # weight-0 members stand in
    assert run_weights([1.0, 0.0], [False, False]) is None


def test_the_shipped_soup_loads_and_its_manifests_round_trip(tmp_path):
    soup = SoupManifest.read("default")
    assert abs(sum(m.weight for m in soup.members) - 1) < 1e-9
    made = {(MemberManifest.read(m.path).variant, MemberManifest.read(m.path).tomo_type) for m in soup.members}
    assert made == set(recipe_members(load_recipe(RECIPES / "cpu-default.yaml")))  # `make default-soup` makes it
    tiny = next(m.path for m in soup.members if m.path.stem.startswith("unet3d_tiny-"))
    member = MemberManifest.read(tiny)
    assert member.variant == "unet3d_tiny" and member.unet["channels"] == [16, 48, 160] and member.patch == 48
    on_disk = json.loads(tiny.read_text())
    assert member.to_json() == on_disk  # the file format is unchanged
    shutil.copytree(SHIPPED / "default", tmp_path / "soup")
    data = json.loads((tmp_path / "soup" / "soup.json").read_text())
    data["from_a_newer_version"] = {"kept": True}
    (tmp_path / "soup" / "soup.json").write_text(json.dumps(data))
    copy = SoupManifest.read(tmp_path / "soup").write(tmp_path / "soup" / "soup.json")
    assert json.loads(copy.read_text()) == data  # relative member paths and unknown keys survive


def test_the_fast_soup_is_the_default_soups_tiny_denoised_member_at_the_thresholds_its_search_chose(crowded_project):
    """`fast` ships no weights of its own: the default soup's tiny members (docs/results.md, the soup against its
    members), the denoised one alone at the thresholds the default soup's search chose for it alone, the wbp one
    standing in at weight 0. `pick --soup fast` picks what that member alone picks at those thresholds."""
    fast, default = SoupManifest.read("fast"), SoupManifest.read("default")
    shipped = {m.path.stem: m.path for m in default.members}
    assert [(m.path, m.weight) for m in fast.members] == [(shipped["unet3d_tiny-denoised"], 1.0),
                                                          (shipped["unet3d_tiny-wbp"], 0.0)]
    assert fast.thresholds == default.validation["members"]["unet3d_tiny-denoised"]["thresholds"]
    assert fast.classes == default.classes and fast.voxel_size == default.voxel_size
    root = open_project(crowded_project)
    run = root.runs[0]
    ensemble = Ensemble.load("fast")
    alone = Ensemble.load(shipped["unet3d_tiny-denoised"])
    alone = Ensemble(alone.name, alone.members, alone.classes, alone.voxel_size, fast.thresholds, fast.nms_scale)
    picked = {}
    for user, soup in (("fast", ensemble), ("alone", alone)):
        pick_run(run, soup, InferenceSettings(amp="none"), PickOptions(user_id=user), echo=lambda m: None)
        found = read_picks(run, ensemble.class_names, user, "0", with_scores=True)
        picked[user] = {run.name: {n: np.column_stack([p, s]).tolist() for n, (p, s) in found.items()}}
    assert sum(len(v) for v in picked["fast"][run.name].values()) >= 10
    assert_same_picks(picked["fast"], picked["alone"], fast.thresholds, position=0.01, score=1e-6)
    assert not ensemble.members[1].loaded  # the wbp member only stands in where a run has no denoised tomogram


def test_settings_check_themselves():
    for bad, error in ((dict(tta=9), "--tta: choose 1 to 8 views, got 9"),
                       (dict(overlap=1.0), "--overlap 1: must be at least 0 and below 1"),
                       (dict(batch_size=0), "--batch-size 0: must be at least 1"),
                       (dict(amp="fp8"), "amp: choose one of auto, none, bf16, fp16, got 'fp8'")):
        with pytest.raises(SoupError, match=f"^{error}"):
            InferenceSettings(**bad)
    assert InferenceSettings(device="cpu").batch == 1 and InferenceSettings(device="cuda:1").batch == 4
    with pytest.raises(AttributeError):
        InferenceSettings().window = 32  # frozen: one object can be shared by every run and actor
