"""Re-thresholding without the networks, --threshold and --objects on pick."""

import numpy as np
import pytest
from click.testing import CliRunner

from copick_soup.cli import main
from copick_soup.data import open_project, read_picks
from copick_soup.objects import classes_from_root


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def picked(tmp_path_factory):
    """A small run picked by the default soup (a trained soup: clear peaks, no ties at the thresholds)."""
    from copick_soup.simulate import simulate_project

    config = simulate_project(tmp_path_factory.mktemp("thr"), runs=1, shape=(48, 96, 96), crowding=4.0, seed=21)
    result = invoke("pick", "-c", config, "--device", "cpu", "--amp", "none")
    assert result.exit_code == 0, result.output
    return config


def points(config, session):
    root = open_project(config)
    names = [c.name for c in classes_from_root(root)]
    return read_picks(root.runs[0], names, "copick-soup", session, with_scores=True)


def same_points(a, b):
    for name in a:
        order_a, order_b = np.lexsort(a[name][0].T), np.lexsort(b[name][0].T)
        np.testing.assert_allclose(a[name][0][order_a], b[name][0][order_b])
        np.testing.assert_allclose(a[name][1][order_a], b[name][1][order_b])


def test_a_rethreshold_equals_a_fresh_pick_at_the_new_thresholds(picked):
    before = points(picked, "0")
    new = ["ribosome=0.95,apo-ferritin=0.06", "beta-galactosidase=0.06,beta-amylase=0.06", "thyroglobulin=0.5"]
    result = invoke("threshold", "-c", picked, *[a for v in new for a in ("--set", v)])
    assert result.exit_code == 0, result.output
    fresh = invoke("pick", "-c", picked, "--session-id", "fresh", "--device", "cpu", "--amp", "none",
                   *[a for v in new for a in ("--threshold", v)])
    assert fresh.exit_code == 0, fresh.output
    after = points(picked, "0")
    same_points(after, points(picked, "fresh"))
    assert len(after["ribosome"][0]) <= len(before["ribosome"][0])  # 0.95: above any soup threshold
    lowered = ("apo-ferritin", "beta-galactosidase", "beta-amylase")  # lower than the soup's: more picks
    assert sum(len(after[n][0]) for n in lowered) > sum(len(before[n][0]) for n in lowered)
    assert invoke("threshold", "-c", picked).exit_code == 0  # the soup's own thresholds give the first picks back
    same_points(points(picked, "0"), before)


@pytest.mark.parametrize("args, error", [
    (["pick", "--threshold", "nope=0.3"], "--threshold nope=0.3: the soup has no class 'nope'; its classes are "
                                          "apo-ferritin, beta-amylase"),
    (["pick", "--threshold", "ribosome=1.5"], "--threshold ribosome=1.5: expected CLASS=VALUE with VALUE in [0, 1]"),
    (["pick", "--objects", "nope"], "--objects: the soup has no class 'nope'; its classes are apo-ferritin"),
    (["threshold", "--set", "ribosome=0.01"], "--set ribosome=0.01: below 0.05, the score pick keeps candidates "
                                              "from; pick again with --threshold ribosome=0.01"),
    (["threshold", "--user-id", "nobody"], "1 of 1 run(s) failed: exp_000"),
])
def test_bad_thresholds_and_classes_are_one_line_errors(picked, args, error):
    result = invoke(*args[:1], "-c", picked, "--session-id", "bad", *args[1:])
    assert result.exit_code != 0
    assert result.output.strip().splitlines()[-1].startswith(f"Error: {error}"), result.output


def not_blank(path):
    import matplotlib.image

    image = matplotlib.image.imread(path)[..., :3]
    return path.stat().st_size > 20_000 and image.std() > 0.05 and len(np.unique(image.reshape(-1, 3), axis=0)) > 50


def test_objects_picks_a_subset_of_the_classes_and_pick_draws_a_qc_picture_and_score_plots_f4(picked, tmp_path):
    result = invoke("pick", "-c", picked, "--session-id", "sub", "--objects", "ribosome", "--objects",
                    "apo-ferritin", "--qc", tmp_path / "qc", "--device", "cpu")
    assert result.exit_code == 0, result.output
    run = open_project(picked).runs[0]
    assert sorted(p.pickable_object_name for p in run.get_picks(user_id="copick-soup", session_id="sub")) == \
        ["apo-ferritin", "ribosome"]
    assert not_blank(tmp_path / "qc" / "exp_000.png")  # every class's candidates, whatever --objects writes
    plot = tmp_path / "score.png"
    result = invoke("score", "-c", picked, "--candidate-user", "copick-soup-candidates", "--candidate-session", "0",
                    "--plot", plot)
    assert result.exit_code == 0, result.output
    assert f"plot: {plot}" in result.output and not_blank(plot)


def test_calibrated_one_class_picks_are_the_same_from_pick_and_from_threshold(picked):
    """`pick --calibrate valley --one-class` and `threshold` over its candidates give the same points; every pair
    of picks of different classes is further apart than the smaller radius; valley-pooled over one run is valley."""
    calibrated = ["--calibrate", "valley", "--one-class"]
    result = invoke("pick", "-c", picked, "--session-id", "cal", "--device", "cpu", "--amp", "none", *calibrated)
    assert result.exit_code == 0, result.output
    assert "run exp_000: valley thresholds: apo-ferritin " in result.output
    first = points(picked, "cal")
    classes = classes_from_root(open_project(picked))
    for a in classes:
        for b in classes:
            if a.name < b.name and len(first[a.name][0]) and len(first[b.name][0]):
                gaps = np.linalg.norm(first[a.name][0][:, None] - first[b.name][0][None], axis=2)
                assert gaps.min() >= min(a.radius, b.radius)
    for calibration in ("valley", "valley-pooled"):
        result = invoke("threshold", "-c", picked, "--session-id", "cal", "--calibrate", calibration, "--one-class")
        assert result.exit_code == 0, result.output
        same_points(points(picked, "cal"), first)
    assert "1 runs pooled: valley thresholds:" in result.output


def test_threshold_calibrates_from_the_candidates_score_humps_without_labels(picked):
    """Candidates whose particles peak at 0.3, far under the soup's apo-ferritin threshold (0.4 or so): the valley
    finds them, the soup's threshold would miss them all, and a class without a second hump keeps the soup's."""
    from copick_soup.data import write_picks

    rng = np.random.default_rng(5)
    run = open_project(picked).runs[0]
    names = [c.name for c in classes_from_root(open_project(picked))]
    background = 0.05 + rng.exponential(0.02, 200)
    particles = rng.normal(0.3, 0.02, 12)
    scores = {n: np.zeros(0) for n in names}
    scores["apo-ferritin"] = np.concatenate([background, particles])
    scores["ribosome"] = background[:100]
    # far apart (1000 Å), so that no suppression takes part
    candidates = {n: (rng.uniform(0, 1, (len(s), 3)) * 1e5, s) for n, s in scores.items()}
    write_picks(run, candidates, "synthetic-candidates", "s")
    result = invoke("threshold", "-c", picked, "--user-id", "synthetic", "--session-id", "s", "--calibrate", "valley")
    assert result.exit_code == 0, result.output
    assert "ribosome 0.55 (soup's: one hump" in result.output, result.output
    picked_apo = read_picks(open_project(picked).runs[0], names, "synthetic", "s", with_scores=True)["apo-ferritin"]
    assert len(picked_apo[0]) == 12 and picked_apo[1].min() > 0.2
    assert len(read_picks(open_project(picked).runs[0], names, "synthetic", "s")["ribosome"]) == 0
