"""Pictures for people: tomogram slices with the picks drawn on them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from copick_soup.data.coords import angstrom_to_voxel
from copick_soup.errors import SoupError


def slice_indices(depth: int, count: int) -> list[int]:
    """`count` z indices spread over the middle 60% of the volume, where the sample usually is."""
    return [int(round(z)) for z in np.linspace(0.2 * (depth - 1), 0.8 * (depth - 1), count)]


def draw_slice(ax, volume, z: int, thickness: int, voxel_size: float, classes, colors: dict, truth=None, picks=None,
               pick_circles: bool = False) -> None:
    """One panel: slice z of `volume`, averaged over ±thickness, with truth circles (the particle's cross-section
    at this slice) and picks (crosses, or with `pick_circles` circles at the class radius)."""
    from matplotlib.patches import Circle

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
                if pick_circles:
                    ax.add_patch(Circle((zyx[2], zyx[1]), r, fill=False, lw=1.4, ec=color))
                else:
                    ax.plot(zyx[2], zyx[1], marker="+", ms=9, mew=1.8, color=color)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)  # circles at the border must not widen the panel
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_title(f"z = {z}")
    ax.set_axis_off()


def class_colors(classes) -> dict:
    """A distinct colour per class (matplotlib's tab10), for pictures of projects without object colours."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {c.name: cmap(i % 10)[:3] for i, c in enumerate(classes)}


def save_qc_png(volume, path, voxel_size: float, classes, picks: dict, candidates: dict, thresholds: dict,
                title: str = "", thickness: int = 2) -> Path:
    """`pick --qc`: slices with the picks (circles at the class radius, per-class colours), and per class the
    histogram of candidate peak scores with the threshold marked (what `copick-soup threshold` would move)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    path = writable(path)
    colors = class_colors(classes)
    zs = slice_indices(volume.shape[0], 3)
    fig = plt.figure(figsize=(15, 9.5))
    grid = fig.add_gridspec(2, max(len(classes), 3), height_ratios=(2.2, 1))
    span = max(len(classes), 3) // 3
    for i, z in enumerate(zs):
        ax = fig.add_subplot(grid[0, i * span:(i + 1) * span])
        draw_slice(ax, volume, z, thickness, voxel_size, classes, colors, picks=picks, pick_circles=True)
    for i, cls in enumerate(classes):
        ax = fig.add_subplot(grid[1, i])
        scores = np.asarray(candidates.get(cls.name, (None, np.zeros(0)))[1])
        ax.hist(scores, bins=np.linspace(0, 1, 41), color=colors[cls.name], log=len(scores) > 0)
        ax.axvline(thresholds[cls.name], color="k", ls="--", lw=1.2)
        kept = int((scores > thresholds[cls.name]).sum())
        ax.set_title(f"{cls.name}\n{kept} picks > {thresholds[cls.name]:.2f}", fontsize=9)
        ax.set_xlabel("peak score", fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [Line2D([], [], color=colors[c.name], lw=2, label=c.name) for c in classes]
    fig.legend(handles=handles, loc="upper center", ncol=len(handles), fontsize=9, frameon=False,
               bbox_to_anchor=(0.5, 0.965))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return save(fig, path)


def save_score_plot(score, curves: dict, thresholds, path, title: str = "") -> Path:
    """`score --plot`: per class precision, recall and F4 (bars), and F4 against threshold (`curves`: {class:
    [F4 per threshold]}, from the scored picks' own scores)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = writable(path)
    names = [c.name for c in score.classes]
    fig, (bars, lines) = plt.subplots(1, 2, figsize=(14, 5))
    x = np.arange(len(names))
    for k, (label, values) in enumerate((("precision", [c.precision for c in score.classes]),
                                         ("recall", [c.recall for c in score.classes]),
                                         ("F4", [c.fbeta(score.beta) for c in score.classes]))):
        bars.bar(x + (k - 1) * 0.27, values, width=0.27, label=label)
    bars.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
    bars.set_ylim(0, 1.05)
    bars.set_title(f"weighted F{score.beta:g} {score.weighted:.3f}")
    bars.legend(fontsize=8)
    colors = class_colors(score.classes)
    for name, f4 in curves.items():
        lines.plot(thresholds, f4, color=colors[name], label=name)
    lines.set_xlabel("threshold on the picks' scores")
    lines.set_ylabel(f"F{score.beta:g}")
    lines.set_ylim(0, 1.05)
    lines.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save(fig, path)


def writable(path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SoupError(f"{path}: cannot write the picture ({err})") from err
    return path


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=90)
    except OSError as err:
        raise SoupError(f"{path}: cannot write the picture ({err})") from err
    finally:
        plt.close(fig)
    return path


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

    path = writable(path)
    z_indices = z_indices if z_indices is not None else slice_indices(volume.shape[0], 3)
    colors = {name: np.asarray(rgba[:3]) / 255.0 for name, rgba in (colors or {}).items()}
    fig, axes = plt.subplots(1, len(z_indices), figsize=(5 * len(z_indices), 5.4), squeeze=False)
    for ax, z in zip(axes[0], z_indices):
        draw_slice(ax, volume, z, thickness, voxel_size, classes, colors, truth, picks)
    handles = [Line2D([], [], color=colors.get(c.name, (1.0, 0.3, 0.3)), lw=2, label=c.name) for c in classes]
    handles += [Line2D([], [], color="k", marker="o", mfc="none", ls="", label="truth"),
                Line2D([], [], color="k", marker="+", ls="", label="picks")]
    ncol = min(len(handles), 4 * len(z_indices))
    fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.1, 1, 0.95))
    return save(fig, path)
