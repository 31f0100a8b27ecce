"""Test-time augmentation over the group of axis flips and in-plane rot90 (the symmetries that keep the
missing wedge along z). Views are applied to (B, C, D, H, W) arrays and undone on the predictions."""

from __future__ import annotations

import numpy as np

# (flip z, flip y, flip x, in-plane rot90 k). The first 8 cover the dihedral group of the y-x plane with and
# without a z flip in the order that helps most when fewer are asked for.
VIEWS = [
    (False, False, False, 0), (True, False, False, 0), (False, False, False, 1), (False, True, False, 0),
    (False, False, True, 0), (False, False, False, 2), (False, False, False, 3), (True, False, False, 2),
]


def tta_views(n: int) -> list[tuple]:
    if not 1 <= n <= len(VIEWS):
        from copick_soup.errors import SoupError

        raise SoupError(f"--tta: choose 1 to {len(VIEWS)} views, got {n}")
    return VIEWS[:n]


def apply_view(x, view):
    """x (B, C, D, H, W), numpy or torch."""
    fz, fy, fx, k = view
    dims = [d for d, f in zip((2, 3, 4), (fz, fy, fx)) if f]
    if hasattr(x, "flip"):  # torch
        x = x.flip(dims) if dims else x
        return x.rot90(k, dims=(3, 4)) if k else x
    x = np.flip(x, dims) if dims else x
    return np.rot90(x, k, axes=(3, 4)) if k else x


def undo_view(x, view):
    fz, fy, fx, k = view
    if hasattr(x, "flip"):
        x = x.rot90(-k, dims=(3, 4)) if k else x
    else:
        x = np.rot90(x, -k, axes=(3, 4)) if k else x
    return apply_view(x, (fz, fy, fx, 0))
