"""Adaptation without labels: pseudo-labels from the soup's own picks, every member fine-tuned on them."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from copick_soup.cli import main
from copick_soup.data import open_project, read_picks
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.model.manifest import MemberManifest, SoupManifest
from copick_soup.train.adapt import candidates, cut_level, split_picks


def near_truth(points, truth, radius):
    """How many of `points` lie within `radius` of a point of `truth` (both (N, 3) Å)."""
    if not len(points) or not len(truth):
        return 0
    distance = np.linalg.norm(points[:, None, :] - truth[None, :, :], axis=-1)
    return int((distance.min(axis=1) <= radius).sum())


def test_confident_pseudo_labels_are_real_particles_and_the_rest_is_unsure(make_project):
    root = open_project(make_project(runs=1, shape=(64, 128, 128), seed=41))
    run = root.runs[0]
    ensemble = Ensemble.load("default")
    settings = InferenceSettings(device="cpu").resolved()
    picks = candidates(ensemble, run, settings, echo=lambda m: None)
    sure, loose = (split_picks(picks, ensemble, confidence, run.name) for confidence in (0.5, 0.0))
    truth = read_picks(run, ensemble.class_names, "curation", "0")
    hits = total = 0
    for c, name in enumerate(ensemble.class_names):
        assert len(sure.confident[c]) + len(sure.unsure[c]) == len(loose.confident[c]) + len(loose.unsure[c])
        assert len(sure.confident[c]) <= len(loose.confident[c])  # a higher bar, fewer pseudo-labels
        hits += near_truth(sure.confident[c], truth[name], 0.5 * ensemble.classes[c].radius)
        total += len(sure.confident[c])
    assert total > 0 and hits / total >= 0.8, (hits, total)
    assert cut_level(0.2, 0.5) == pytest.approx(0.6) and cut_level(0.2, 0.0) == 0.2


def test_adapt_fine_tunes_the_members_that_can_run_and_keeps_weights_and_thresholds(make_project, tmp_path):
    config = make_project(runs=1, shape=(64, 128, 128), seed=41, tomo_types=("denoised", "wbp"))
    out = tmp_path / "adapted"
    result = CliRunner().invoke(main, ["adapt", "-c", str(config), "-r", "exp_000", "--out", str(out),
                                       "--steps", "2", "--confidence", "0.3", "--set", "patch=32",
                                       "--set", "batch_size=1", "--device", "cpu"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "run exp_000: pseudo-labels" in result.output
    original, adapted = SoupManifest.read("default"), SoupManifest.read(out / "soup.json")
    assert adapted.thresholds == original.thresholds
    assert [m.weight for m in adapted.members] == [m.weight for m in original.members]
    for before, after in zip(original.members, adapted.members):
        assert after.path.parent == out  # one self-contained folder
        old, new = MemberManifest.read(before.path), MemberManifest.read(after.path)
        if old.tomo_type in ("denoised", "wbp"):
            assert new.sha256 != old.sha256 and new.training["recipe"] == "adapt"
            assert sum(new.training["pseudo_labels"]["exp_000"]) > 0
        else:  # no such tomograms on the runs: kept as it was
            assert new.sha256 == old.sha256
            assert f"{old.name}: no run has its '{old.tomo_type}' tomograms; kept as it was" in result.output
    assert json.loads((out / "soup.json").read_text())["validation"]["adapted"]["runs"] == ["exp_000"]
    Ensemble.load(out / "soup.json")  # loads: weights match their manifests


def test_bad_adapt_options_are_one_line_errors(project, tmp_path):
    for args, error in ((["--confidence", "1"], "--confidence 1: must be in [0, 1)"),
                        (["--steps", "0"], "--steps 0: must be at least 1"),
                        (["-r", "nope"], "unknown run(s) nope")):
        result = CliRunner().invoke(main, ["adapt", "-c", str(project), "--out", str(tmp_path / "x"), *args])
        assert result.exit_code != 0 and result.output.strip().splitlines()[-1].startswith(f"Error: {error}"), \
            result.output
        assert not (tmp_path / "x").exists()
