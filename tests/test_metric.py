"""The CZII metric on cases small enough to count by hand."""

import numpy as np
import pytest

from copick_soup.metric import Score, count_matches, score_picks
from copick_soup.metric.czii import confusion
from copick_soup.objects import ParticleClass

A = ParticleClass("a", 1, radius=100.0, score_weight=1.0)  # match threshold 50 Å
B = ParticleClass("b", 2, radius=60.0, score_weight=2.0)  # match threshold 30 Å
Z = ParticleClass("z", 3, radius=60.0, score_weight=0.0)


def pts(*rows):
    return np.array(rows, dtype=float).reshape(-1, 3)


def test_perfect_picks():
    truth = pts([0, 0, 0], [500, 500, 500])
    assert count_matches(truth, truth + 10, 50) == (2, 0, 0)


def test_no_truth_makes_every_pick_false():
    assert count_matches(pts(), pts([0, 0, 0], [1, 1, 1]), 50) == (0, 2, 0)


def test_no_picks_misses_every_particle():
    assert count_matches(pts([0, 0, 0], [1000, 0, 0]), pts(), 50) == (0, 0, 2)


def test_two_picks_on_one_particle_count_once():
    assert count_matches(pts([0, 0, 0]), pts([10, 0, 0], [0, 10, 0]), 50) == (1, 1, 0)


def test_one_pick_near_two_particles_matches_both_as_in_the_competition():
    # Kaggle's code counts distinct matched particles, so FP = picks - TP = 1 - 2 = -1.
    assert count_matches(pts([0, 0, 0], [60, 0, 0]), pts([30, 0, 0]), 50) == (2, -1, 0)


def test_threshold_is_inclusive():
    truth = pts([0, 0, 0])
    assert count_matches(truth, pts([50, 0, 0]), 50) == (1, 0, 0)
    assert count_matches(truth, pts([50.001, 0, 0]), 50) == (0, 1, 1)


def test_distance_is_euclidean_in_three_axes():
    # 30, 30, 30 Å away: 51.96 Å > 50 Å.
    assert count_matches(pts([0, 0, 0]), pts([30, 30, 30]), 50) == (0, 1, 1)


def test_counts_are_summed_over_runs_before_f_beta():
    run1 = ({"a": pts([0, 0, 0])}, {"a": pts([0, 0, 0])})  # TP 1
    run2 = ({"a": pts([0, 0, 0], [500, 0, 0])}, {"a": pts([900, 0, 0])})  # FP 1, FN 2
    score = score_picks([run1, run2], [A])
    c = score.classes[0]
    assert (c.tp, c.fp, c.fn) == (1, 1, 2)
    p, r = 1 / 2, 1 / 3
    assert c.fbeta() == pytest.approx(17 * p * r / (16 * p + r))
    # Averaging per-run F4 instead would give (1 + 0) / 2 = 0.5.
    assert score.weighted == pytest.approx(17 * p * r / (16 * p + r))


def test_pooled_scores_equal_scoring_all_their_runs_at_once():
    run1 = ({"a": pts([0, 0, 0]), "b": pts([9, 9, 9])}, {"a": pts([0, 0, 0])})
    run2 = ({"a": pts([0, 0, 0], [500, 0, 0])}, {"a": pts([900, 0, 0]), "b": pts([1, 1, 1])})
    pooled = Score.pooled([score_picks([run1], [A, B]), score_picks([run2], [A, B])])
    together = score_picks([run1, run2], [A, B])
    assert pooled.as_dict() == together.as_dict()


def test_weighted_mean_uses_every_class_weight_and_beta_4():
    truth = {"a": pts([0, 0, 0], [200, 0, 0]), "b": pts([0, 0, 0]), "z": pts([0, 0, 0])}
    picks = {"a": pts([0, 0, 0]), "b": pts([0, 0, 0], [300, 0, 0])}  # "z" missing: no picks
    score = score_picks([(truth, picks)], [A, B, Z])
    fa = 17 * (1.0 * 0.5) / (16 * 1.0 + 0.5)  # P 1, R 1/2
    fb = 17 * (0.5 * 1.0) / (16 * 0.5 + 1.0)  # P 1/2, R 1
    assert score.classes[0].fbeta() == pytest.approx(fa)
    assert score.classes[1].fbeta() == pytest.approx(fb)
    assert score.classes[2].fbeta() == 0.0
    assert score.weighted == pytest.approx((1 * fa + 2 * fb + 0 * 0) / 3)


def test_class_missing_from_a_run_counts_as_empty():
    runs = [({"a": pts([0, 0, 0])}, {}), ({}, {"a": pts([0, 0, 0])})]
    c = score_picks(runs, [A]).classes[0]
    assert (c.tp, c.fp, c.fn) == (0, 1, 1)


def test_nothing_at_all_scores_zero_without_dividing_by_zero():
    score = score_picks([({}, {})], [A, B])
    assert score.weighted == 0.0
    assert score.classes[0].precision == 0.0 and score.classes[0].recall == 0.0


def test_table_and_json_report_the_same_numbers():
    score = score_picks([({"a": pts([0, 0, 0])}, {"a": pts([1, 0, 0])})], [A, B])
    as_dict = score.as_dict()
    assert as_dict["classes"]["a"]["tp"] == 1 and as_dict["score"] == pytest.approx(1 / 3)
    assert score.table().splitlines()[-1].endswith("0.333")


def test_table_says_why_a_class_without_ground_truth_scores_zero():
    score = score_picks([({"a": pts([0, 0, 0])}, {"a": pts([1, 0, 0]), "b": pts([500, 0, 0])})], [A, B])
    lines = score.table().splitlines()
    assert score.classes[1].fbeta() == 0.0 and lines[-1].endswith("0.333")
    assert "(no ground truth for b in these runs: the CZII metric scores it 0 whatever is picked)" in lines
    assert not any("no ground truth" in line for line in score_picks([({"a": pts([0, 0, 0])}, {})], [A]).table()
                   .splitlines())


def test_confusion_tells_misnamed_from_missed_and_stray_picks():
    truth = {"a": pts([0, 0, 0], [1000, 0, 0], [2000, 0, 0]), "b": pts([0, 500, 0])}
    picks = {"a": pts([10, 0, 0], [0, 520, 0]),  # right; and on the b particle, within half b's radius (30 Å)
             "b": pts([1040, 0, 0], [0, 0, 900])}  # on the second a (within half a's radius, 50 Å); and on nothing
    mixed = confusion([(truth, picks)], [A, B])
    assert mixed.particles.tolist() == [3, 1]
    assert mixed.counts.tolist() == [[1, 1], [1, 0]]  # a picked as a once, as b once; b picked as a
    assert mixed.missed.tolist() == [1, 0]  # the third a has no pick of any class in range
    assert mixed.stray.tolist() == [0, 1]
    rows = mixed.as_dict()["truth"]
    assert rows["a"] == dict(particles=3, picked_as=dict(a=1, b=1), missed=1)
    lines = mixed.table().splitlines()
    assert lines[2].split() == ["a", "3", "1", "1", "1"] and lines[-1].split()[-2:] == ["0", "1"]


def test_confusion_diagonal_is_the_metric_tp_and_ranges_use_the_particle_radius():
    truth = {"a": pts([0, 0, 0]), "b": pts([0, 500, 0])}
    picks = {"a": pts([0, 545, 0]), "b": pts([45, 0, 0])}  # 45 Å: in a's range (50), not in b's (30)
    mixed = confusion([(truth, picks), (truth, {})], [A, B])
    score = score_picks([(truth, picks), (truth, {})], [A, B])
    assert mixed.counts.diagonal().tolist() == [c.tp for c in score.classes] == [0, 0]
    assert mixed.counts.tolist() == [[0, 1], [0, 0]] and mixed.missed.tolist() == [1, 2]
    assert mixed.stray.tolist() == [1, 0] and mixed.particles.tolist() == [2, 2]
