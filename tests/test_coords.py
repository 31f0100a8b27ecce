"""Coordinate conventions: copick Å (x, y, z) against array voxels (z, y, x), with no half-voxel offset."""

import numpy as np

from copick_soup.data.coords import angstrom_to_voxel, voxel_to_angstrom

VS = 10.012


def test_voxel_centre_i_is_at_i_times_voxel_size_with_axes_reversed():
    zyx = np.array([[3, 5, 7]])
    np.testing.assert_allclose(voxel_to_angstrom(zyx, VS), [[7 * VS, 5 * VS, 3 * VS]])
    np.testing.assert_allclose(angstrom_to_voxel([[7 * VS, 5 * VS, 3 * VS]], VS), [[3, 5, 7]])


def test_round_trip_is_exact_for_fractional_positions():
    rng = np.random.default_rng(0)
    zyx = rng.uniform(0, 600, size=(50, 3))
    assert np.allclose(angstrom_to_voxel(voxel_to_angstrom(zyx, VS), VS), zyx)


def test_matches_copick_utils_segmentation_to_picks():
    """copick-utils turns a labelled voxel blob into a pick; our inverse must land on the same voxel."""
    from copick_utils.converters.picks_from_segmentation import _extract_centroids_from_segmentation_array

    seg = np.zeros((40, 50, 60), dtype=np.uint8)
    seg[9:14, 19:24, 29:34] = 1  # a 5^3 cube centred on voxel (11, 21, 31)
    positions = _extract_centroids_from_segmentation_array(seg, 1, 3, 1, 1000, VS)
    np.testing.assert_allclose(angstrom_to_voxel(positions, VS), [[11, 21, 31]], atol=1e-9)


def test_simulated_particle_centre_lands_on_its_pick():
    """The simulator renders a particle at a fractional voxel position; its density centroid is that position."""
    from copick_soup.simulate.phantom import render_blobs
    from copick_soup.simulate.shapes import Blobs

    center = np.array([20.3, 17.6, 25.2])
    volume = np.zeros((48, 40, 50), dtype=np.float32)
    render_blobs(volume, center, Blobs(np.zeros((1, 3)), np.array([2.0]), np.ones(1)), amplitude=1.0)
    grids = np.meshgrid(*[np.arange(n) for n in volume.shape], indexing="ij")
    centroid = np.array([(g * volume).sum() / volume.sum() for g in grids])
    np.testing.assert_allclose(centroid, center, atol=0.01)  # a half-voxel slip would be 0.5
    pick = voxel_to_angstrom(center, VS)  # what the simulator writes to copick
    np.testing.assert_allclose(pick, [[25.2 * VS, 17.6 * VS, 20.3 * VS]])
