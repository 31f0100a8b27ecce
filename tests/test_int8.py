"""INT8 members (`--amp int8`): quantised by NNCF, cached on disk, and picking the particles float32 picks."""

import sys

import numpy as np
import pytest
from scipy.spatial import cKDTree

from copick_soup.data import open_project
from copick_soup.data.picks import read_picks
from copick_soup.data.tomogram import normalisation_stats, run_volume
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.ensemble.int8 import cache_folder
from copick_soup.errors import SoupError
from copick_soup.pick import PickOptions, pick_run

pytest.importorskip("openvino")
pytest.importorskip("nncf")

# A float32 pick whose score clears its threshold by this much is a particle INT8 must find too (scores move by a
# few hundredths under quantisation; the soup's thresholds are searched in steps of 0.025).
CLEAR = 0.1
NEAR = 0.2  # within this fraction of the class radius (benchmarks/results/precision.md: float32's picks found)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COPICK_SOUP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def tiny_soup() -> Ensemble:
    """The default soup's tiny denoised member alone, at the soup's thresholds: the fastest member to quantise."""
    soup = Ensemble.load("default")
    member = next(m for m in soup.members if m.manifest.name == "unet3d_tiny-denoised")
    member.weight = 1.0
    return Ensemble("tiny", [member], soup.classes, soup.voxel_size, soup.thresholds, soup.nms_scale)


def own_windows(run):
    """Calibration windows from a run of the test project (the package's come from simulate/calibration.py)."""

    def windows(tomo_type, normalisation):
        volume = run_volume(run, 10.012, tomo_type, lambda line: None)
        centre, scale = normalisation_stats(volume, normalisation)
        array = (np.asarray(volume[:], dtype=np.float32) - centre) / scale
        return [np.ascontiguousarray(array[None, None, z:z + 32, y:y + 64, x:x + 64])
                for z in (0, 32) for y in (0, 64) for x in (0, 64)]

    return windows


def picks_of(soup, run, amp: str) -> dict:
    """{class: (positions, scores)} of the run picked with OpenVINO in this precision (none: float32)."""
    settings = InferenceSettings(device="cpu", runtime="openvino", amp=amp)
    opts = PickOptions(user_id=f"p-{amp}", overwrite=True, keep_candidates=False)
    pick_run(run, soup, settings, opts, echo=lambda line: None)
    return read_picks(run, soup.class_names, opts.user_id, opts.session_id, with_scores=True)


@pytest.mark.slow
def test_int8_members_find_the_particles_float32_finds_at_the_same_places(project, cache):
    root = open_project(project)
    calibrate, picked = root.runs[0], root.runs[1]
    soup = tiny_soup()
    soup.calibration = own_windows(calibrate)
    full = picks_of(soup, picked, "none")
    int8 = picks_of(soup, picked, "int8")
    radius = {c.name: c.radius for c in soup.classes}
    clear = 0
    for name, (positions, scores) in full.items():
        sure = positions[scores >= soup.thresholds[name] + CLEAR]
        clear += len(sure)
        if len(sure):
            assert len(int8[name][0]), name
            distance, _ = cKDTree(int8[name][0]).query(sure)
            assert (distance <= NEAR * radius[name]).all(), (name, distance / radius[name])
    assert clear > 0  # the check checked something
    assert list((cache / "int8").glob("*.xml")) and list((cache / "int8").glob("*.bin"))  # kept for later processes
    again = tiny_soup()  # no calibration: only the cached network can serve
    assert picks_of(again, picked, "int8").keys() == int8.keys()


def test_int8_runs_on_openvino_on_a_cpu_only():
    with pytest.raises(SoupError, match="--amp int8 runs INT8 members on OpenVINO"):
        InferenceSettings(device="cpu", runtime="torch", amp="int8")


def test_without_nncf_int8_is_a_one_line_error_naming_the_extra(monkeypatch, cache):
    from copick_soup.ensemble.int8 import quantise

    monkeypatch.setitem(sys.modules, "nncf", None)
    with pytest.raises(SoupError, match=r"pip install 'copick-soup\[int8\]'"):
        quantise(None, [])
    assert cache_folder() == cache / "int8"
