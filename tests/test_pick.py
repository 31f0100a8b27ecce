"""`pick` on real copick projects: picks written once, partial soups, resampling, heatmaps, export, errors."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import SMALLER, assert_same_picks, make_test_soup

from copick_soup.cli import main
from copick_soup.data import open_project, read_picks
from copick_soup.data.tomogram import ResampledArray
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.errors import SoupError
from copick_soup.model import model_config
from copick_soup.model.manifest import MemberManifest, SoupManifest, SoupMember
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.pick import PickOptions, pick_run, pick_runs, summary_table

W32 = InferenceSettings(window=32)


def write_soup(path, members, classes, voxel_size, thresholds):
    return SoupManifest(path.parent.name, [SoupMember(p, w) for p, w in members], classes, voxel_size,
                        thresholds).write(path)

BIN = Path(sys.executable).parent


@pytest.fixture
def project(smaller_project):
    """Here the test soup picks 2 runs of SMALLER, not conftest's 64x128x128 `project`."""
    return smaller_project


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two quickly trained unet3d_test members (denoised, wbp) and a soup of both."""
    return make_test_soup(tmp_path_factory.mktemp("members"), ("denoised", "wbp"), [2.0, 1.0])


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_pick_writes_every_class_once_and_refuses_to_overwrite(members, project):
    _, soup_path = members
    soup = Ensemble.load(soup_path)
    root = open_project(project)
    run = root.runs[0]
    stats = pick_run(run, soup, W32, PickOptions(user_id="soupy", session_id="3"), echo=lambda m: None)
    assert stats["processed"] and stats["members"] == 2
    picks = read_picks(run, [c.name for c in soup.classes], "soupy", "3", with_scores=True)
    assert {n: len(p[0]) for n, p in picks.items()} == stats["picks"]
    assert sum(stats["picks"].values()) > 0  # threshold 0: an untrained net still has local maxima
    extent = np.array(SMALLER[::-1]) * VOXEL_SIZE
    for pos, scores in picks.values():
        assert np.all(pos >= -0.5 * VOXEL_SIZE) and np.all(pos <= extent)
        assert np.all(np.diff(scores) <= 0)  # strongest first
    before = {n: p[0].copy() for n, p in picks.items()}
    with pytest.raises(SoupError, match="run exp_000: picks by user 'soupy' session '3' already exist"):
        pick_run(run, soup, W32, PickOptions(user_id="soupy", session_id="3"))
    after = read_picks(run, list(before), "soupy", "3")
    assert all(np.array_equal(before[n], after[n]) for n in before)
    pick_run(run, soup, W32, PickOptions(user_id="soupy", session_id="3", overwrite=True), echo=print)


def test_members_whose_type_a_run_lacks_are_left_out_and_weights_renormalised(members, project):
    _, soup_path = members
    root = open_project(project)
    root.runs[0].voxel_spacings[0].delete_tomograms("wbp")
    root = open_project(project)
    messages = []
    results = pick_runs(root, Ensemble.load(soup_path), None, W32, echo=messages.append)
    assert [r["members"] for r in results] == [1, 2]
    assert "run exp_000: using 1 of 2 members (no wbp here); their weights are renormalised" in messages


def test_a_run_with_no_usable_tomogram_is_skipped_and_the_rest_go_on(members, project):
    member, _ = members
    root = open_project(project)
    for vs in root.runs[1].voxel_spacings:
        vs.delete_tomograms("denoised")
    root = open_project(project)
    messages = []
    results = pick_runs(root, Ensemble.load(member[0]), None, W32, echo=messages.append)
    assert [r["processed"] for r in results] == [True, False]
    assert "run exp_001: none of the soup's tomogram types (denoised) is here; it has ctfdeconvolved, wbp" in \
        results[1]["error"]


def test_cli_pick_summary_and_a_failed_run_is_an_error(members, project):
    member, soup = members
    result = invoke("pick", "-c", project, "--soup", soup, "--window", 32, "-r", "exp_001")
    assert result.exit_code == 0, result.output
    assert "1 of 1 run(s) picked" in result.output and "exp_001" in result.output
    result = invoke("pick", "-c", project, "--soup", member[0], "--tomo-type", "isonetcorrected", "--window", 32)
    assert result.exit_code != 0
    assert "failed: run exp_000: none of the soup's tomogram types (isonetcorrected)" in result.output
    assert "runs: 100%" in result.output and "2/2 [" in result.output  # the bar over runs, failed ones counted
    assert result.output.strip().splitlines()[-1] == "Error: 1 of 2 run(s) failed: exp_000"  # exp_001: done before


def truncate_a_chunk(run, tomo_type):
    """Cut the largest chunk of a run's tomogram in half, as an interrupted copy leaves it."""
    store = Path(run.voxel_spacings[0].get_tomograms(tomo_type)[0].zarr().dir_path())
    chunk = max((f for f in (store / "0").rglob("*") if f.is_file() and not f.name.startswith(".")
                 and f.name != "zarr.json"), key=lambda f: f.stat().st_size)
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])


def test_a_batch_goes_on_past_a_corrupt_run_and_a_finished_batch_exits_0(members, project, tmp_path):
    member, _ = members
    truncate_a_chunk(open_project(project).runs[0], "denoised")
    log = tmp_path / "errors.log"
    results = pick_runs(open_project(project), Ensemble.load(member[0]), None, W32, PickOptions(user_id="batch"),
                        echo=lambda m: None, error_log=log)
    assert [r["status"] for r in results] == ["failed", "picked"]
    assert re.fullmatch(r"run exp_000: tomogram 'denoised': chunk 0/[0-9/.]+ is corrupt or truncated \(\d+ bytes where "
                        r"its header says \d+\); copy the tomogram again", results[0]["error"]), results[0]
    result = invoke("pick", "-c", project, "--soup", member[0], "--window", 32, "--user-id", "batch")
    assert result.exit_code != 0  # exp_000 still fails; exp_001 is done before
    assert "done before (picks exist; --overwrite to pick again)" in result.output
    assert result.output.strip().splitlines()[-1] == "Error: 1 of 2 run(s) failed: exp_000"
    done = invoke("pick", "-c", project, "--soup", member[0], "--window", 32, "--user-id", "batch", "-r", "exp_001")
    assert done.exit_code == 0, done.output
    assert "nothing to do: every run already has picks by user 'batch' session '0'" in done.output


def test_summary_table_names_whole_classes_and_totals_picked_runs():
    classes = [SimpleNamespace(name="virus-like-particle"), SimpleNamespace(name="apo")]
    results = [dict(run="TS_5_4", processed=True, picks={"virus-like-particle": 12, "apo": 3}, seconds=1.5),
               dict(run="TS_6_6", processed=False, error="run TS_6_6: no denoised tomogram"),
               dict(run="TS_99_9", processed=True, picks={"virus-like-particle": 1, "apo": 40}, seconds=2.0)]
    lines = summary_table(results, classes).splitlines()
    assert lines[0].split() == ["run", "virus-like-particle", "apo", "seconds"]
    assert lines[2].split() == ["TS_5_4", "12", "3", "1.5"]
    assert "failed: run TS_6_6: no denoised tomogram" in lines[3]
    assert lines[-2].split() == ["total", "13", "43"]
    assert lines[-1] == "2 of 3 run(s) picked"
    header_end = lines[0].index("virus-like-particle") + len("virus-like-particle")
    assert lines[2][header_end - 2:header_end] == "12"  # counts right-aligned under their class


def test_a_window_some_member_cannot_run_is_refused_and_one_below_the_training_patch_is_warned_of():
    def manifest(variant, patch=None):
        return MemberManifest(variant, variant, model_config(variant).as_dict(), [], VOXEL_SIZE, "wbp",
                              training=dict(config=dict(patch=patch)) if patch else {})

    def check_window(manifests, window):
        return InferenceSettings(window=window).check_members(manifests)

    soup = [manifest("unet3d_tiny", 48), manifest("unet3d_large", 64)]  # levels halve the window 2 and 4 times
    assert check_window(soup, 64) is None and check_window(soup, 96) is None
    with pytest.raises(SoupError, match=r"^--window 40: this soup's members \(unet3d_large, unet3d_tiny\) need a "
                                        r"multiple of 16; try 32 or 48$"):
        check_window(soup, 40)
    with pytest.raises(SoupError, match="try 16 or 32"):
        check_window(soup, 0)
    assert "--window 32 is smaller than the 64-voxel patches" in check_window(soup, 32)
    assert check_window([manifest("unet3d_tiny")], 32) is None  # no training record: no warning


def test_cli_refuses_a_bad_window_before_any_run_is_picked(members, project):
    _, soup = members
    result = invoke("pick", "-c", project, "--soup", soup, "--window", 31, "--session-id", "31")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: --window 31: this soup's members (unet3d_test) need a multiple of 2; try 30 or 32")
    assert not any(p.session_id == "31" for r in open_project(project).runs for p in r.picks)


def test_other_voxel_sizes_are_resampled(members, tmp_path):
    from copick_soup.simulate import simulate_project

    member, _ = members
    root = open_project(simulate_project(tmp_path / "p", runs=1, shape=(32, 64, 64), voxel_size=7.0, crowding=5.0))
    messages = []
    stats = pick_run(root.runs[0], Ensemble.load(member[0]), W32, echo=messages.append)
    assert stats["processed"]
    assert messages == ["run exp_000: resampling 'denoised' from 7 Å to 10.012 Å (anti-aliased, slab by slab)",
                        "run exp_000: 4 windows of 32x32x32 (overlap 0.25, Gaussian-blended), 2.94x the voxels"]


def test_resampling_keeps_positions_in_angstrom():
    volume = np.zeros((40, 40, 40), np.float32)
    volume[20, 10, 30] = 1.0  # at (x, y, z) = (210, 70, 140) Å on a 7 Å grid
    out = ResampledArray(volume, 10.0, 7.0)[:]  # from a 7 Å grid to 10 Å
    assert out.shape == (28, 28, 28)
    zyx = np.array(np.unravel_index(out.argmax(), out.shape))
    np.testing.assert_allclose(zyx * 10.0, [140, 70, 210], atol=5.0)


def test_heatmaps_are_saved_as_tomograms_that_read_back_through_copick(members, project):
    _, soup = members
    result = invoke("pick", "-c", project, "--soup", soup, "--window", 32, "-r", "exp_000", "--save-heatmaps",
                    "--user-id", "heat", "--amp", "none")
    assert result.exit_code == 0, result.output
    run = open_project(project).runs[0]
    names = [c.name for c in Ensemble.load(soup).classes]
    picks = read_picks(run, names, "heat", "0", with_scores=True)
    import zarr

    for name in names:
        [tomogram] = run.voxel_spacings[0].get_tomograms(f"heatmap-{name}-heat-0")
        heat = np.asarray(zarr.open(tomogram.zarr(), mode="r")["0"])
        assert heat.dtype == np.float32 and heat.shape == SMALLER and 0 <= heat.min() <= heat.max() <= 1
        for xyz, score in zip(*picks[name]):  # a pick's score is the heatmap at its peak (to a byte's step)
            z, y, x = np.round(xyz[::-1] / VOXEL_SIZE).astype(int)
            near = heat[max(z - 1, 0):z + 2, max(y - 1, 0):y + 2, max(x - 1, 0):x + 2]
            assert abs(near.max() - min(score, 1.0)) <= 2 / 255  # stored clipped to 0-1
    again = invoke("pick", "-c", project, "--soup", soup, "--window", 32, "-r", "exp_000", "--save-heatmaps",
                   "--user-id", "heat", "--session-id", "1")
    assert again.exit_code == 0, again.output
    assert open_project(project).runs[0].voxel_spacings[0].get_tomograms("heatmap-ribosome-heat-1")


def test_corrupt_checkpoint_is_a_one_line_error(members, project, tmp_path):
    member, _ = members
    bad = tmp_path / "bad"
    bad.mkdir()
    for suffix in (".json", ".safetensors"):
        (bad / f"m{suffix}").write_bytes(member[0].with_suffix(suffix).read_bytes())
    manifest = json.loads((bad / "m.json").read_text())
    manifest["weights"] = "m.safetensors"
    (bad / "m.json").write_text(json.dumps(manifest))
    (bad / "m.safetensors").write_bytes((bad / "m.safetensors").read_bytes()[:-100])
    result = invoke("pick", "-c", project, "--soup", bad / "m.json")
    assert result.exit_code != 0 and "m.safetensors: corrupt checkpoint" in result.output


def test_members_for_different_classes_do_not_make_a_soup(members, tmp_path):
    member, _ = members
    other = tmp_path / "other.json"
    manifest = json.loads(member[1].read_text())
    manifest["classes"] = manifest["classes"][:3]
    other.write_text(json.dumps(manifest))
    (tmp_path / manifest["weights"]).write_bytes(member[1].with_suffix(".safetensors").read_bytes())
    soup = write_soup(tmp_path / "soup.json", [(member[0], 1.0), (other, 1.0)], [], VOXEL_SIZE, {})
    with pytest.raises(SoupError, match="were trained for different classes"):
        Ensemble.load(soup)


def test_picks_export_with_copick_export(members, project, tmp_path):
    _, soup = members
    assert invoke("pick", "-c", project, "--soup", soup, "--window", 32, "-r", "exp_000").exit_code == 0
    root = open_project(project)
    mine = read_picks(root.runs[0], ["ribosome"], "copick-soup", "0")["ribosome"]
    out = subprocess.run([BIN / "copick", "export", "picks", "-c", project, "--picks-uri", "ribosome:copick-soup/0",
                          "--output-dir", tmp_path / "csv", "--output-format", "csv"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    files = list((tmp_path / "csv").rglob("*.csv"))
    assert files
    rows = [r for f in files for r in csv.DictReader(f.open())]
    assert len(rows) == len(mine)
    xyz = np.array([[float(r["x"]), float(r["y"]), float(r["z"])] for r in rows])
    np.testing.assert_allclose(np.sort(xyz, axis=0), np.sort(mine, axis=0), atol=1e-3)
    star = subprocess.run([BIN / "copick", "export", "picks", "-c", project, "--picks-uri", "ribosome:copick-soup/0",
                           "--output-file", tmp_path / "p.star", "--output-format", "star", "--voxel-size",
                           str(VOXEL_SIZE)], capture_output=True, text=True, timeout=300)
    assert star.returncode == 0, star.stderr
    import starfile

    table = starfile.read(tmp_path / "p.star")
    particles = table["particles"] if isinstance(table, dict) else table
    assert len(particles) == len(mine)


def test_copick_discovers_the_inference_plugin():
    out = subprocess.run([BIN / "copick", "inference", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "soup-pick" in out.stdout


def test_members_with_zero_weight_stand_in_only_when_nothing_else_can_run(members, project, tmp_path):
    paths, _ = members
    root = open_project(project)
    classes = classes_from_root(root)
    soup = write_soup(tmp_path / "s" / "soup.json", [(paths[0], 1.0), (paths[1], 0.0)], classes, VOXEL_SIZE,
                      {c.name: 0.0 for c in classes})
    root.runs[1].voxel_spacings[0].delete_tomograms("denoised")
    messages = []
    results = pick_runs(open_project(project), Ensemble.load(soup), None, W32, echo=messages.append)
    assert [r["members"] for r in results] == [1, 1] and all(r["processed"] for r in results)
    about_runs = [m for m in messages if m.startswith("run exp_001: ") and "windows of" not in m]  # nor tiles
    assert about_runs == ["run exp_001: no member with a soup weight can run here; using the others with equal "
                          "weights"]


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_pick_on_a_gpu_finds_the_cpu_s_picks(crowded_project):
    run = open_project(crowded_project).runs[0]
    found = {}
    for session, device in enumerate(("cpu", "cuda")):
        soup = Ensemble.load("default", device=device)  # trained: its picks are clear peaks, not float ties
        settings = InferenceSettings(device=device, amp="none")
        stats = pick_run(run, soup, settings, PickOptions(user_id="gpu", session_id=str(session)), echo=lambda m: None)
        picks = read_picks(run, list(stats["picks"]), "gpu", str(session), with_scores=True)
        found[session] = {run.name: {n: np.column_stack([*p]).reshape(-1, 4) for n, p in picks.items()}}
    assert sum(len(rows) for rows in found[0][run.name].values()) > 0
    # other kernels: the same picks within a tenth of a voxel and 0.005 in score, in any order; one within that of
    # its class threshold may be on one side only
    assert_same_picks(found[1], found[0], soup.thresholds, position=0.1 * VOXEL_SIZE, score=5e-3)


def test_cross_class_suppression_keeps_a_subset_and_leaves_no_overlap(crowded_project):
    import dataclasses

    from scipy.spatial.distance import cdist

    run = open_project(crowded_project).runs[0]
    soup = Ensemble.load("default")
    found = {}
    for session, overlap in enumerate((0.0, 1.0)):
        opts = PickOptions(user_id="overlap", session_id=str(session))
        pick_run(run, dataclasses.replace(soup, overlap=overlap), InferenceSettings(), opts, echo=lambda m: None)
        found[overlap] = read_picks(run, [c.name for c in soup.classes], "overlap", str(session))
    radius = {c.name: c.radius for c in soup.classes}
    assert sum(len(p) for p in found[1.0].values()) < sum(len(p) for p in found[0.0].values())
    for name, pos in found[1.0].items():
        assert {tuple(p) for p in np.round(pos, 3)} <= {tuple(p) for p in np.round(found[0.0][name], 3)}
        for other, pos2 in found[1.0].items():
            if other != name and len(pos) and len(pos2):
                assert cdist(pos, pos2).min() >= min(radius[name], radius[other])
