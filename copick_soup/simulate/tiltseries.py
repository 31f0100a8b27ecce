"""The `tilt` engine's microscope: a tilt series projected in real space, then weighted back-projection.

Physically different from the `blobs` engine's Fourier-space shortcut (imaging.py), on purpose:
- each tilt is a real-space line integral through the sample (tilt axis = y), the path through the ice growing
  as 1 / cos(tilt), which attenuates the signal (inelastic scattering);
- tilts are acquired in a dose-symmetric order (0, +s, -s, -2s, +2s, ...): each image is exposure-filtered by
  the dose the sample took before it (Grant & Grigorieff's critical exposure), so late, high tilts carry less
  high-resolution signal;
- the CTF of each tilt varies across it: a point at distance x from the tilt axis sits x sin(tilt) above or below
  the focal plane (the defocus gradient), applied in strips along x;
- noise is added per image (equal dose per tilt, so equal noise, while the signal fades);
- the reconstruction is a real-space weighted back-projection (ramp filter along x);
- `ctfdeconvolved` is the reconstruction Wiener-filtered with the mean defocus and a spectral SNR that falls with
  frequency (as IsoNet's and Warp's deconvolutions do), and `denoised` is that volume
  smoothed anisotropically (more along z, where the missing wedge smears) with small values shrunk to zero, as a
  learned denoiser flattens the background.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import fft
from scipy.ndimage import gaussian_filter

from copick_soup.simulate.imaging import FFT_WORKERS, ctf
from copick_soup.simulate.profiles import Conditions

DOSE_PER_TILT = 3.0  # e/Å^2
ICE_MEAN_FREE_PATH = 3500.0  # Å, inelastic
STRIPS = 5  # CTF strips across the tilt axis


def dose_symmetric(tilt_max: float, step: float) -> list[float]:
    """Tilt angles (degrees) in acquisition order: 0, then pairs alternating sides (Hagen et al., 2017)."""
    n = int(np.floor(tilt_max / step + 1e-6))
    order, side = [0.0], 1
    for k in range(1, n + 1):
        order += [side * k * step, -side * k * step]
        side = -side
    return order


def critical_exposure(k: np.ndarray) -> np.ndarray:
    """e/Å^2 at which the signal at spatial frequency k (1/Å) falls to 1/e (Grant & Grigorieff, 2015)."""
    return 0.245 * np.maximum(k, 1e-4) ** -1.665 + 2.81


def project(volume: torch.Tensor, angle: float) -> torch.Tensor:
    """(Y, X) line integrals of a (Z, Y, X) volume along the beam tilted by `angle` (radians) about y.

    Detector column u (centred like x) collects the ray x cos + z sin = u; each z plane is resampled along x."""
    nz, ny, nx = volume.shape
    c, s = np.cos(angle), np.sin(angle)
    u = torch.arange(nx, dtype=torch.float32) - (nx - 1) / 2
    out = torch.zeros((ny, nx), dtype=torch.float32)
    for z in range(nz):
        x = (u - (z - (nz - 1) / 2) * s) / c + (nx - 1) / 2
        out += sample_along_x(volume[z], x)
    return out / c


def back_project(projections: list[torch.Tensor], angles, nz: int) -> torch.Tensor:
    """(Z, Y, X): every filtered projection smeared back along its rays, averaged over the tilts."""
    ny, nx = projections[0].shape
    volume = torch.zeros((nz, ny, nx), dtype=torch.float32)
    x = torch.arange(nx, dtype=torch.float32) - (nx - 1) / 2
    for p, angle in zip(projections, angles):
        c, s = np.cos(angle), np.sin(angle)
        for z in range(nz):
            volume[z] += sample_along_x(p, x * c + (z - (nz - 1) / 2) * s + (nx - 1) / 2)
    return volume / len(projections)


def sample_along_x(plane: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """plane (Y, X) linearly interpolated at fractional columns x; 0 outside."""
    nx = plane.shape[1]
    i0 = torch.floor(x)
    w = (x - i0)[None, :]
    i0 = i0.long()
    inside0 = ((i0 >= 0) & (i0 < nx)).float()[None, :]
    inside1 = ((i0 + 1 >= 0) & (i0 + 1 < nx)).float()[None, :]
    a = plane[:, i0.clamp(0, nx - 1)] * inside0
    b = plane[:, (i0 + 1).clamp(0, nx - 1)] * inside1
    return a * (1 - w) + b * w


def ramp(nx: int) -> torch.Tensor:
    """WBP's weighting along x: |k|, rolled off towards Nyquist with a cosine (a Hann-windowed ramp)."""
    k = np.abs(np.fft.rfftfreq(nx))
    return torch.from_numpy((k * np.cos(np.pi * k)).astype(np.float32) * 2)


def image(projection: np.ndarray, angle: float, accumulated: float, cond: Conditions, voxel_size: float
          ) -> np.ndarray:
    """One recorded tilt image: CTF with the defocus gradient, envelope, exposure filter."""
    ny, nx = projection.shape
    ky = np.fft.fftfreq(ny, d=voxel_size)[:, None]
    kx = np.fft.rfftfreq(nx, d=voxel_size)[None, :]
    k2 = ky**2 + kx**2
    spectrum = np.fft.rfft2(projection)
    envelope = np.exp(-cond.b_factor * k2 / 4) * np.exp(-accumulated / (2 * critical_exposure(np.sqrt(k2))))
    x = (np.arange(nx) - (nx - 1) / 2) * voxel_size  # Å from the tilt axis
    centres = np.linspace(x[0], x[-1], STRIPS)
    out = np.zeros_like(projection)
    for xc in centres:  # linear blending between strip centres
        defocus = cond.defocus_um + xc * np.sin(angle) * 1e-4
        strip = np.fft.irfft2(spectrum * ctf(k2, defocus) * envelope, s=projection.shape)
        weight = np.clip(1 - np.abs(x - xc) / (centres[1] - centres[0]), 0, 1)
        out += strip * weight[None, :]
    return out


def tilt_series_reconstruction(density: np.ndarray, cond: Conditions, voxel_size: float,
                               rng: np.random.Generator) -> np.ndarray:
    """The WBP reconstruction (Z, Y, X) float32 of a clean density; protein dark, as in real tomograms."""
    volume = torch.from_numpy(np.ascontiguousarray(density, dtype=np.float32))
    nz = density.shape[0]
    thickness = cond.slab * nz * voxel_size
    angles = dose_symmetric(cond.tilt_max, cond.tilt_step)
    images = []
    for index, degrees in enumerate(angles):
        angle = np.deg2rad(degrees)
        clean = project(volume, angle).numpy()
        clean *= np.exp(-thickness / (ICE_MEAN_FREE_PATH * np.cos(angle)))
        images.append(image(clean, angle, (index + 0.5) * DOSE_PER_TILT, cond, voxel_size))
    signal = float(np.mean([im.std() for im in images[:3]])) + 1e-12
    # Equal dose per tilt, so equal noise on every image, at a level that leaves the reconstruction (an average of
    # len(angles) images) near the drawn SNR; the ramp filter lifts high-frequency noise, hence the half.
    noise = 0.5 * signal * np.sqrt(len(angles) / cond.snr)
    weight = ramp(density.shape[2])
    filtered = []
    for im in images:
        recorded = im + rng.normal(0, noise, im.shape).astype(np.float32)
        recorded += smooth_background(im.shape, cond, signal, rng)
        filtered.append(torch.fft.irfft(torch.fft.rfft(torch.from_numpy(recorded.astype(np.float32)), dim=1)
                                        * weight, n=im.shape[1], dim=1))
    order = np.argsort(angles)
    return back_project([filtered[i] for i in order], np.deg2rad(np.asarray(angles)[order]), nz).numpy()


def smooth_background(shape, cond: Conditions, signal: float, rng: np.random.Generator) -> np.ndarray:
    """Uneven illumination and ice: a few hundred Å smooth field, different on every image."""
    field = gaussian_filter(rng.standard_normal(shape), 25.0)
    return (field / (field.std() + 1e-12) * cond.background * signal).astype(np.float32)


def derived_types(wbp: np.ndarray, cond: Conditions, voxel_size: float, tomo_types) -> dict:
    """{tomo type: volume}: the reconstruction, its Wiener deconvolution, and a denoised deconvolution."""
    out = {}
    if "wbp" in tomo_types:
        out["wbp"] = wbp
    if {"ctfdeconvolved", "denoised"} & set(tomo_types):
        kz = fft.fftfreq(wbp.shape[0], d=voxel_size)[:, None, None]
        ky = fft.fftfreq(wbp.shape[1], d=voxel_size)[None, :, None]
        kx = fft.rfftfreq(wbp.shape[2], d=voxel_size)[None, None, :]
        k2 = kz**2 + ky**2 + kx**2
        c = ctf(k2, cond.defocus_um).astype(np.float32)
        # Wiener filter with a spectral SNR falling with frequency, as IsoNet's and Warp's deconvolutions assume;
        # the sign of the gain keeps protein dark, as those tools do.
        ssnr = 10.0 * np.exp(-100.0 * np.sqrt(k2))
        gain = (-c / (c**2 + 1 / ssnr)).astype(np.float32)
        deconvolved = fft.irfftn(fft.rfftn(wbp, workers=FFT_WORKERS) * gain, s=wbp.shape, workers=FFT_WORKERS)
        deconvolved = deconvolved.astype(np.float32)
        if "ctfdeconvolved" in tomo_types:
            out["ctfdeconvolved"] = deconvolved
        if "denoised" in tomo_types:
            sigma = cond.denoise_cutoff / voxel_size / 4
            smooth = gaussian_filter(deconvolved, (1.5 * sigma, sigma, sigma))
            shrink = 0.3 * smooth.std()
            out["denoised"] = (np.sign(smooth) * np.maximum(np.abs(smooth) - shrink, 0)).astype(np.float32)
    return out
