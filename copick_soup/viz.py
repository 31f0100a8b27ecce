"""Pictures for people: tomogram slices with the picks drawn on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copick_soup.data.coords import angstrom_to_voxel
from copick_soup.errors import SoupError


def slice_indices(depth: int, count: int) -> list[int]:
    """`count` z indices spread over the middle 60% of the volume, where the sample usually is."""
    return [int(round(z)) for z in np.linspace(0.2 * (depth - 1), 0.8 * (depth - 1), count)]


def save_slices_png(volume, path, voxel_size: float, classes, truth: dict | None = None,
                    picks: dict | None = None, colors: dict | None = None, z_indices=None, title: str = "",
                    thickness: int = 2) -> Path:
    """Write a PNG with one panel per z slice of `volume` (Z, Y, X), averaged over ±`thickness` slices.

    Ground truth (`truth`, {class: (N, 3) Å}) is drawn as circles of the particle's cross-section at that
    slice; predictions (`picks`) as crosses. Colours come from the copick objects (`colors`, {class: RGBA}).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SoupError(f"{path}: cannot write the picture ({err})") from err
    z_indices = z_indices if z_indices is not None else slice_indices(volume.shape[0], 3)
    colors = {name: np.asarray(rgba[:3]) / 255.0 for name, rgba in (colors or {}).items()}
    fig, axes = plt.subplots(1, len(z_indices), figsize=(5 * len(z_indices), 5.4), squeeze=False)
    for ax, z in zip(axes[0], z_indices):
        lo, hi = max(z - thickness, 0), min(z + thickness + 1, volume.shape[0])
        image = np.asarray(volume[lo:hi], dtype=np.float32).mean(axis=0)
        vmin, vmax = np.percentile(image, [1, 99])
        ax.imshow(image, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        for cls in classes:
            color = colors.get(cls.name, (1.0, 0.3, 0.3))
            r = cls.radius / voxel_size
            for zyx in angstrom_to_voxel((truth or {}).get(cls.name, np.zeros((0, 3))), voxel_size):
                dz = abs(zyx[0] - z)
                if dz < r:
                    ax.add_patch(Circle((zyx[2], zyx[1]), np.sqrt(r**2 - dz**2), fill=False, lw=1.2, ec=color))
            for zyx in angstrom_to_voxel((picks or {}).get(cls.name, np.zeros((0, 3))), voxel_size):
                if abs(zyx[0] - z) < 0.5 * r:
                    ax.plot(zyx[2], zyx[1], marker="+", ms=9, mew=1.8, color=color)
        ax.set_xlim(-0.5, image.shape[1] - 0.5)  # circles at the border must not widen the panel
        ax.set_ylim(image.shape[0] - 0.5, -0.5)
        ax.set_title(f"z = {z}")
        ax.set_axis_off()
    handles = [Line2D([], [], color=colors.get(c.name, (1.0, 0.3, 0.3)), lw=2, label=c.name) for c in classes]
    handles += [Line2D([], [], color="k", marker="o", mfc="none", ls="", label="truth"),
                Line2D([], [], color="k", marker="+", ls="", label="picks")]
    ncol = min(len(handles), 4 * len(z_indices))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    try:
        fig.savefig(path, dpi=90)
    except OSError as err:
        raise SoupError(f"{path}: cannot write the picture ({err})") from err
    finally:
        plt.close(fig)
    return path
