"""The one place where array indices meet copick coordinates.

copick stores points in Å, ordered (x, y, z). Arrays are indexed (z, y, x). The centre of voxel `i` sits at
`i * voxel_size` Å (copick-utils and the CZII ground truth use the same convention), so there is no half-voxel
offset in either direction. Every conversion in the package goes through these two functions.
"""

import numpy as np


def voxel_to_angstrom(zyx: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) voxel indices (z, y, x), possibly fractional -> (N, 3) copick positions (x, y, z) in Å."""
    zyx = np.asarray(zyx, dtype=np.float64).reshape(-1, 3)
    return zyx[:, ::-1] * voxel_size


def angstrom_to_voxel(xyz: np.ndarray, voxel_size: float) -> np.ndarray:
    """(N, 3) copick positions (x, y, z) in Å -> (N, 3) fractional voxel indices (z, y, x)."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
    return xyz[:, ::-1] / voxel_size
