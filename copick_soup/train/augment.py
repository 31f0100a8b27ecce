"""Training augmentation: the same random flips and in-plane rot90 on image and targets, intensity noise on
the image alone. In-plane only, because the missing wedge makes z different from x and y."""

from __future__ import annotations

import numpy as np


def augment(image: np.ndarray, target: np.ndarray, rng: np.random.Generator, intensity: float = 0.1):
    """image (D, H, W), target (C, D, H, W) -> augmented copies of both."""
    for axis in range(3):
        if rng.random() < 0.5:
            image, target = np.flip(image, axis), np.flip(target, axis + 1)
    k = int(rng.integers(4))
    image, target = np.rot90(image, k, axes=(1, 2)), np.rot90(target, k, axes=(2, 3))
    image = image * rng.uniform(1 - intensity, 1 + intensity) + rng.normal(0, intensity)
    image = image + rng.normal(0, rng.uniform(0, intensity), size=image.shape)
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(target)
