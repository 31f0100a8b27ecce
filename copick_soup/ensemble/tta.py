"""Test-time augmentation over the in-plane symmetries of a tomogram: rot90 in the y-x plane, with and
without a flip of x (the dihedral group D4, 8 views). The missing wedge lies along z, so z is left alone.

Views are ordered so that the first 1, 2, 4 and 8 form groups themselves (identity; + rot180; all rotations;
all eight), which makes the averaged prediction exactly equivariant for those counts.
"""

from __future__ import annotations

import numpy as np

from copick_soup.errors import SoupError

# (flip x first?, then rot90 k times in the y-x plane)
VIEWS = [(False, 0), (False, 2), (False, 1), (False, 3), (True, 0), (True, 1), (True, 2), (True, 3)]


def tta_views(n: int) -> list[tuple]:
    if not 1 <= n <= len(VIEWS):
        raise SoupError(f"--tta: choose 1 to {len(VIEWS)} views, got {n}")
    return VIEWS[:n]


def apply_view(x, view):
    """x (B, C, D, H, W), numpy or torch: flip x (optional), then rotate by k x 90° in the (H, W) plane."""
    flip, k = view
    if hasattr(x, "flip"):  # torch
        x = x.flip([4]) if flip else x
        return x.rot90(k, dims=(3, 4)) if k else x
    x = np.flip(x, 4) if flip else x
    return np.rot90(x, k, axes=(3, 4)) if k else x


def undo_view(x, view):
    """The inverse of `apply_view`: rotate back, then flip back."""
    flip, k = view
    if hasattr(x, "flip"):
        x = x.rot90(-k, dims=(3, 4)) if k else x
        return x.flip([4]) if flip else x
    x = np.rot90(x, -k, axes=(3, 4)) if k else x
    return np.flip(x, 4) if flip else x
