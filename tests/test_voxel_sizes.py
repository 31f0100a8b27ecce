"""Voxel sizes as portal and Kaggle layouts store them: within 0.5% read as they are (picks placed with the run's own
spacing), other sizes resampled with an anti-aliasing filter, slab by slab."""

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import make_test_soup
from scipy.ndimage import affine_transform, gaussian_filter

from copick_soup.cli import main
from copick_soup.data import open_project, read_picks
from copick_soup.data.tomogram import ResampledArray, available_tomo_types, open_tomogram, run_volume
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.objects import VOXEL_SIZE
from copick_soup.pick import PickOptions, pick_run
from copick_soup.simulate import simulate_project

W32 = InferenceSettings(window=32, amp="none")


@pytest.fixture(scope="module")
def soup(tmp_path_factory):
    return make_test_soup(tmp_path_factory.mktemp("soup"), ("denoised",))[1]


@pytest.fixture(scope="module")
def at_10(tmp_path_factory):
    """A project stored at 10.000 Å, as the portal's and Kaggle's layouts store the CZII tomograms."""
    folder = tmp_path_factory.mktemp("at10")
    return simulate_project(folder, runs=1, shape=(32, 64, 64), voxel_size=10.0, crowding=5.0, seed=3)


class Grid(np.ndarray):
    """A numpy array with a voxel size, as open_tomogram's arrays have."""


def with_size(array, voxel_size):
    out = np.asarray(array, dtype=np.float32).view(Grid)
    out.voxel_size = voxel_size
    return out


@pytest.mark.parametrize("source_size", [7.0, 13.48])
def test_resampled_slabs_equal_the_whole_volume_resampled_at_once(source_size):
    rng = np.random.default_rng(0)
    volume = with_size(rng.normal(size=(40, 36, 44)), source_size)
    lazy = ResampledArray(volume, VOXEL_SIZE)
    scale = VOXEL_SIZE / source_size
    sigma = max(0.0, (scale - 1) / 2)
    smooth = gaussian_filter(np.asarray(volume), sigma) if sigma else np.asarray(volume)
    whole = affine_transform(smooth, np.full(3, scale), output_shape=lazy.shape, order=1)
    slabs = np.concatenate([lazy[z:z + 5] for z in range(0, lazy.shape[0], 5)])
    np.testing.assert_allclose(slabs, whole, atol=1e-5)
    np.testing.assert_allclose(lazy[3:9, 4:20, 7:30], whole[3:9, 4:20, 7:30], atol=1e-5)


def test_a_coarser_grid_is_filtered_against_aliasing():
    z, y, x = np.indices((32, 32, 32))
    stripes = with_size(np.where(x % 2 == 0, 1.0, -1.0) * np.ones_like(z + y), 5.006)  # the finest pattern there is
    coarse = ResampledArray(stripes, VOXEL_SIZE * 1.3)[:]  # 2.6x coarser: unfiltered, it would alias to stripes
    unfiltered = affine_transform(np.asarray(stripes), np.full(3, 2.6), output_shape=coarse.shape, order=1)
    inner = (slice(None), slice(None), slice(1, -1))  # the border reflects the pattern: it does not cancel there
    assert np.abs(unfiltered[inner]).max() > 0.5 and np.abs(coarse[inner]).max() < 0.1


def test_a_run_within_half_a_percent_is_read_as_it_is_and_picks_use_its_own_spacing(soup, at_10):
    run = open_project(at_10).runs[0]
    assert available_tomo_types(run, VOXEL_SIZE) == ["ctfdeconvolved", "denoised", "wbp"]
    messages = []
    volume = run_volume(run, VOXEL_SIZE, "denoised", messages.append)
    assert volume.voxel_size == 10.0 and volume.shape == (32, 64, 64)  # no resampling
    assert messages == ["run exp_000: reading 'denoised' at 10 Å for 10.012 Å (0.12% apart: no resampling; picks "
                        "are placed at 10 Å)"]
    ensemble = Ensemble.load(soup)
    stats = pick_run(run, ensemble, W32, PickOptions(user_id="at10"), echo=lambda m: None)
    assert stats["processed"] and sum(stats["picks"].values()) > 0
    written = read_picks(run, ensemble.class_names, "at10", "0", with_scores=True)
    heat = ensemble.heatmap(open_tomogram(run, 10.0, "denoised"), W32)
    placed_at_soup_size = ensemble.picks(heat)  # voxel index x 10.012
    got = np.concatenate([written[name][0] for name in ensemble.class_names])
    expected = np.concatenate([placed_at_soup_size[name][0] for name in ensemble.class_names])
    # the same peaks, moved to 10 Å (a threshold-0 soup picks every local maximum, so the float noise of two
    # inference paths may add or drop one)
    assert abs(len(got) - len(expected)) <= 0.02 * len(expected)
    moved = np.linalg.norm(got[:, None] - expected[None] * 10.0 / VOXEL_SIZE, axis=-1).min(axis=1)
    kept = np.linalg.norm(got[:, None] - expected[None], axis=-1).min(axis=1)
    assert np.mean(moved < 0.5) > 0.97 and np.mean(kept < 0.5) < 0.5  # in the soup's frame, far ones are off


def test_voxel_size_option_chooses_the_spacing_to_read(soup, tmp_path):
    config = simulate_project(tmp_path / "p7", runs=1, shape=(32, 64, 64), voxel_size=7.0, crowding=5.0, seed=4)
    result = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", str(soup), "--window", "32",
                                       "--voxel-size", "7", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "--voxel-size 7: soup 'test-soup' was trained at 10.012 Å; tomograms at 7 Å are resampled" in result.output
    assert "resampling 'denoised' from 7 Å to 10.012 Å (anti-aliased, slab by slab)" in result.output
    refused = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", str(soup), "--voxel-size", "12",
                                        "--session-id", "12"])
    assert refused.exit_code != 0 and "exp_000: no voxel size 12 Å; it has 7" in refused.output, refused.output
    negative = CliRunner().invoke(main, ["pick", "-c", str(config), "--soup", str(soup), "--voxel-size", "-1"])
    assert negative.exit_code != 0 and "--voxel-size -1: must be a positive size in Å" in negative.output
