"""Imaging and sample conditions, drawn per run from a profile.

Two profiles reproduce the gap between the competition's simulated pretraining data and its experimental
tomograms: `experimental` has lower SNR, stronger defocus and envelope, more clutter and less crowding than
`simulated`. Every value is a (low, high) range sampled per run, so no two runs look alike: a picker trained
here has to cope with a spread of conditions rather than one recipe.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PROFILES = {
    "simulated": dict(
        snr=(0.5, 1.5),  # signal/noise power in the reconstruction
        defocus_um=(3.0, 4.0),
        b_factor=(20.0, 80.0),  # Å^2, envelope exp(-B k^2 / 4)
        tilt_step=(2.0, 3.0),  # degrees, over a ±tilt_max range
        tilt_max=(60.0, 60.0),
        crowding=(1.2, 1.8),  # x the class's per-tomogram count
        distractors=(15.0, 30.0),  # unlabelled particles per 184x630x630 tomogram
        vesicles=(0.0, 2.0),
        fiducials=(0.0, 1.0),
        contrast=(0.9, 1.1),  # particle density spread
        shape_jitter=(0.05, 0.10),  # lobe position noise, fraction of the radius
        slab=(0.6, 0.8),  # fraction of Z that holds the sample
        ice=(0.0, 0.05),  # ice density relative to protein
        background=(0.0, 0.3),  # smooth background (gradients, uneven ice), x signal std
        denoise_cutoff=(30.0, 45.0),  # Å, low-pass of the "denoised" type
    ),
    "experimental": dict(
        snr=(0.12, 0.4),
        defocus_um=(3.0, 5.0),
        b_factor=(80.0, 220.0),
        tilt_step=(3.0, 3.0),
        tilt_max=(57.0, 63.0),
        crowding=(0.8, 1.3),
        distractors=(40.0, 90.0),
        vesicles=(1.0, 4.0),
        fiducials=(0.0, 4.0),
        contrast=(0.75, 1.25),
        shape_jitter=(0.08, 0.18),
        slab=(0.55, 0.85),
        ice=(0.05, 0.2),
        background=(0.2, 1.0),
        denoise_cutoff=(35.0, 55.0),
    ),
}


@dataclass(frozen=True)
class Conditions:
    """One run's sampled conditions; saved next to the project for provenance."""

    profile: str
    snr: float
    defocus_um: float
    b_factor: float
    tilt_step: float
    tilt_max: float
    crowding: float
    distractors: float
    vesicles: float
    fiducials: float
    contrast: float
    shape_jitter: float
    slab: float
    ice: float
    background: float
    denoise_cutoff: float

    def as_dict(self) -> dict:
        return asdict(self)


def sample_conditions(profile: str, rng: np.random.Generator, crowding: float = 1.0) -> Conditions:
    """Draw one run's conditions uniformly from the profile's ranges; `crowding` scales particle counts."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    values = {key: float(rng.uniform(lo, hi)) for key, (lo, hi) in PROFILES[profile].items()}
    values["crowding"] *= crowding
    return Conditions(profile=profile, **values)
