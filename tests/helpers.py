"""Helpers shared by test modules (import as `from helpers import ...`: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

SMALL = (64, 128, 128)  # (z, y, x) of the runs of conftest's `project`
# For tests that pick with the test soup (`smaller_project`): its thresholds are 0, so every local maximum is a pick,
# and writing them as copick JSON is most of such a pick's time; an eighth of SMALL's voxels, an eighth of the picks.
SMALLER = (32, 64, 64)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_project(config: Path, folder: Path) -> Path:
    """A copy of a simulated project in `folder`; its copick.json (the only file that names the folder) points at
    the copy, so that picks written there do not reach the original."""
    shutil.copytree(config.parent, folder)
    copied = folder / config.name
    copied.write_text(config.read_text().replace(str(config.parent), str(folder)))
    return copied


def assert_same_picks(picks: dict, pinned: dict, thresholds: dict, position, score: float) -> None:
    """{run: {class: [[x, y, z, score], ...]}}: every run and class has the pinned (expected) picks, each within
    `position` Å ({class: Å} or one for all) and `score` of its own pinned pick (paired one to one by distance:
    near-equal scores may come in another order). A pick within `score` of its class threshold may be on one side
    only: the same small difference takes it across. For picks made on another CPU or by another path (test_pinned,
    test_ensemble), which round differently."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from scipy.spatial.distance import cdist

    assert sorted(picks) == sorted(pinned)
    for run, classes in pinned.items():
        for name, expected in classes.items():
            got = np.asarray(picks[run][name]).reshape(-1, 4)
            expected = np.asarray(expected).reshape(-1, 4)
            limit = position[name] if isinstance(position, dict) else position
            distance = cdist(got[:, :3], expected[:, :3])
            rows, cols = linear_sum_assignment(distance)
            paired = distance[rows, cols] <= limit
            rows, cols = rows[paired], cols[paired]
            for side, points, used in (("new", got, rows), ("pinned", expected, cols)):
                alone = np.delete(points[:, 3], used)
                assert np.all(alone < thresholds[name] + score), \
                    f"{run} {name}: {len(alone)} {side} pick(s) with no counterpart within {limit:g} Å, scores {alone}"
            np.testing.assert_allclose(got[rows, 3], expected[cols, 3], atol=score, err_msg=f"{run} {name} scores")


def make_test_soup(folder, tomo_types=("denoised",), weights=None, seed=9):
    """(member manifests, soup.json): unet3d_test members trained for 2 steps, thresholds 0 (so every local
    maximum is a pick and picking is deterministic but not empty)."""
    from copick_soup.data import open_project
    from copick_soup.model.manifest import SoupManifest, SoupMember
    from copick_soup.objects import VOXEL_SIZE, classes_from_root
    from copick_soup.simulate import simulate_project
    from copick_soup.train.config import TrainConfig
    from copick_soup.train.dataset import load_volumes
    from copick_soup.train.loop import train_member

    root = open_project(simulate_project(folder / "train", runs=1, shape=(32, 64, 64), crowding=10.0, seed=seed))
    classes = classes_from_root(root)
    paths = []
    for tomo_type in tomo_types:
        vols = load_volumes(root, root.runs, [tomo_type], classes, VOXEL_SIZE, "curation", "0")
        cfg = TrainConfig(variant="unet3d_test", patch=16, steps=2, val_every=2, val_threshold=0.0)
        paths.append(train_member(cfg, classes, vols, [], folder / tomo_type, VOXEL_SIZE, tomo_type))
    weights = weights or [1.0] * len(paths)
    soup = SoupManifest("test-soup", [SoupMember(p, w) for p, w in zip(paths, weights)], classes, VOXEL_SIZE,
                        {c.name: 0.0 for c in classes}).write(folder / "soup" / "soup.json")
    return paths, soup


def batch_norm_unet(seed: int, n_classes: int = 2, norm: str = "batch"):
    """unet3d_test with batch (or fixed) norms holding learnt-looking statistics (not the identity's 0 and 1), in
    eval mode."""
    import torch

    from copick_soup.model import create_model

    torch.manual_seed(seed)
    net = create_model("unet3d_test", n_classes=n_classes, norm=norm)
    for layer in net.modules():
        if isinstance(layer, torch.nn.BatchNorm3d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    return net.eval()


def cube_means(volume, points, r=1) -> list[float]:
    """Mean of the volume in (2r + 1)-voxel cubes around each point (z, y, x in voxels): where a phantom engine's
    truth says a particle is, its tests compare these against random points."""
    import numpy as np

    out = []
    for p in np.round(points).astype(int):
        lo, hi = np.maximum(p - r, 0), p + r + 1
        out.append(volume[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].mean())
    return out
