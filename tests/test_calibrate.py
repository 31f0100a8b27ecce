"""Label-free valley thresholds and the one-particle-one-class decision (issue 46's travelling habits)."""

import numpy as np
import pytest

from copick_soup.ensemble.calibrate import calibrate, valley
from copick_soup.ensemble.overlap import cut_picks, one_class
from copick_soup.objects import ParticleClass


def scores(particles_at: float, n_particles: int = 20, n_background: int = 300, seed: int = 0) -> np.ndarray:
    """Candidate peak scores as a heatmap gives them: background peaks piling up just above the floor, particles
    in a hump of their own."""
    rng = np.random.default_rng(seed)
    background = 0.05 + rng.exponential(0.04, n_background)
    particles = rng.normal(particles_at, 0.04, n_particles)
    return np.concatenate([background, particles])


@pytest.mark.parametrize("particles_at", [0.8, 0.6, 0.45])
def test_the_valley_lies_between_the_background_and_the_particles_wherever_the_particles_peak(particles_at):
    found = valley(scores(particles_at), fallback=0.6)
    assert found.found, found.reason
    # below every particle but a straggler, above nearly all of the background
    assert 0.12 < found.threshold < particles_at - 0.04, found
    assert valley(scores(particles_at), fallback=0.6) == found  # deterministic


def test_no_second_hump_keeps_the_fallback_and_says_why():
    rng = np.random.default_rng(1)
    alone = valley(0.05 + rng.exponential(0.04, 300), fallback=0.4)  # a class absent from the run
    assert (alone.threshold, alone.found) == (0.4, False) and "no valley" in alone.reason
    few = valley(np.array([0.1, 0.5]), fallback=0.4)
    assert (few.threshold, few.found) == (0.4, False) and "too few" in few.reason


def test_calibrate_moves_only_the_classes_not_given_by_hand_and_names_each_fallback():
    candidates = {"a": (None, scores(0.4)), "b": (None, scores(0.4, n_particles=0)), "c": (None, scores(0.4))}
    thresholds, line = calibrate(candidates, {"a": 0.6, "b": 0.5, "c": 0.7}, keep={"c": 0.7}, where="run r: ")
    assert thresholds["a"] < 0.36 and thresholds["b"] == 0.5 and thresholds["c"] == 0.7
    assert line.startswith("run r: valley thresholds: a ") and "b 0.5 (soup's: one hump" in line


def classes():
    return [ParticleClass("apo", 1, 60.0, 1.0), ParticleClass("thyro", 2, 130.0, 2.0)]


def test_one_class_keeps_the_pick_furthest_above_its_own_threshold():
    # thyroglobulin's channel runs high on an apo-ferritin (raw 0.6 > 0.5) but only 1.2x its threshold, apo 2.5x
    picks = {"apo": (np.array([[100.0, 100, 100]]), np.array([0.5])),
             "thyro": (np.array([[110.0, 100, 100], [800, 800, 800]]), np.array([0.6, 0.9]))}
    thresholds = {"apo": 0.2, "thyro": 0.5}
    kept = one_class(picks, classes(), thresholds)
    assert len(kept["apo"][0]) == 1 and kept["thyro"][0].tolist() == [[800, 800, 800]]
    raw = cut_picks(picks, classes(), {"apo": 0.1, "thyro": 0.1}, overlap=1.0)  # by raw score: the wrong one wins
    assert len(raw["apo"][0]) == 0 and len(raw["thyro"][0]) == 2
    # two picks further apart than the smaller radius are two particles, whatever their classes
    apart = {"apo": (np.array([[100.0, 100, 100]]), np.array([0.5])),
             "thyro": (np.array([[170.0, 100, 100]]), np.array([0.6]))}
    assert [len(v[0]) for v in one_class(apart, classes(), thresholds).values()] == [1, 1]
    assert cut_picks(picks, classes(), thresholds, 0.0, one=True)["thyro"][0].tolist() == [[800, 800, 800]]


def test_a_channel_that_fires_on_every_particle_is_cut_above_the_others_hump_even_past_1():
    """Its own particles overshoot to 1.5, the other classes' particles it fires on make a hump at 0.9: the valley
    between them, above 1, keeps its own (scores are not capped at 1: a regression head overshoots)."""
    rng = np.random.default_rng(3)
    fired = np.concatenate([rng.normal(0.9, 0.05, 60), rng.normal(1.5, 0.04, 10)])
    found = valley(fired, fallback=0.5)
    assert found.found and 1.1 < found.threshold < 1.4, found
