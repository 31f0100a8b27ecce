"""The microscope and the reconstruction, applied in Fourier space.

By the central-slice theorem, a tilt series reconstructed by weighted back-projection samples the sample's 3D
spectrum on one central plane per tilt (each as thick as 1 / sample thickness). So instead of projecting and
back-projecting, the spectrum is multiplied by:
- the CTF at 300 kV (defocus 3-5 µm, Cs 2.7 mm, 7% amplitude contrast) and a B-factor envelope;
- the tilt sampling: one plane per tilt over ±tilt_max, which leaves the missing wedge around kz and, at high
  frequency, gaps between planes (the streaks of a real WBP);
and noise is added with the same sampling (noise enters with the projections, so it is back-projected too),
plus a smooth background for uneven ice. One forward FFT serves all three tomogram types:
- `wbp`: the reconstruction as it is;
- `ctfdeconvolved`: a Wiener filter on the CTF (as Warp or IsoNet's deconvolution does);
- `denoised`: the deconvolved volume low-pass filtered, standing in for a learned denoiser.
Each type then gets its own random intensity scale and offset, since real tomograms have arbitrary units.
"""

from __future__ import annotations

import numpy as np

from copick_soup.simulate.profiles import Conditions

WAVELENGTH = 0.019687  # Å, electrons at 300 kV
CS = 2.7e7  # Å (2.7 mm)
AMPLITUDE_CONTRAST = 0.07


def ctf(k2: np.ndarray, defocus_um: float) -> np.ndarray:
    """Phase-contrast transfer at squared spatial frequency k2 (1/Å^2); negative at low frequency."""
    chi = np.pi * WAVELENGTH * defocus_um * 1e4 * k2 - 0.5 * np.pi * CS * WAVELENGTH**3 * k2**2
    return -(np.sqrt(1 - AMPLITUDE_CONTRAST**2) * np.sin(chi) + AMPLITUDE_CONTRAST * np.cos(chi))


def tilt_sampling(kz: np.ndarray, kx: np.ndarray, tilt_max: float, tilt_step: float, thickness: float):
    """(len(kz), len(kx)) fraction of each (kz, kx) frequency that the tilt series measures (tilt axis = y)."""
    kzz, kxx = kz[:, None], kx[None, :]
    rho = np.hypot(kzz, kxx)
    theta = np.arctan2(kzz, kxx)
    cover = np.zeros(rho.shape, dtype=np.float64)
    for alpha in np.deg2rad(np.arange(-tilt_max, tilt_max + 1e-6, tilt_step)):
        distance = rho * np.abs(np.sin(theta - alpha))  # from the central plane of this tilt
        cover += np.exp(-np.pi * (distance * thickness) ** 2)
    return np.clip(cover, 0.0, 1.0).astype(np.float32)


def _frequencies(shape, voxel_size):
    from scipy import fft

    nz, ny, nx = shape
    kz = fft.fftfreq(nz, d=voxel_size).astype(np.float32)
    ky = fft.fftfreq(ny, d=voxel_size).astype(np.float32)
    kx = fft.rfftfreq(nx, d=voxel_size).astype(np.float32)
    return kz, ky, kx


def _complex_noise(rng: np.random.Generator, shape) -> np.ndarray:
    noise = np.empty(shape, dtype=np.complex64)
    noise.real = rng.standard_normal(shape, dtype=np.float32)
    noise.imag = rng.standard_normal(shape, dtype=np.float32)
    return noise


# One FFT thread: scipy's pocketfft shuts its thread pool down while any thread of the process forks (its atfork
# handler), and a transform submitted meanwhile fails with "Work item submitted after shutdown" (seen twice in CI,
# simulating a test project while another thread started a subprocess). The engines' FFTs are a small part of a run.
FFT_WORKERS = 1


def reconstruct(density: np.ndarray, cond: Conditions, voxel_size: float, rng: np.random.Generator,
                tomo_types) -> dict:
    """{tomo type: (Z, Y, X) float32} from a clean density. Protein ends up dark, as in real tomograms."""
    from scipy import fft

    shape = density.shape
    kz, ky, kx = _frequencies(shape, voxel_size)
    thickness = cond.slab * shape[0] * voxel_size
    cover = tilt_sampling(kz, kx, cond.tilt_max, cond.tilt_step, thickness)  # (nz, nkx)
    nyquist = 0.5 / voxel_size
    spectrum = fft.rfftn(density, workers=FFT_WORKERS)  # (nz, ny, nkx) complex64
    signal_std = float(density.std()) + 1e-12

    # Pass 1: the microscope's transfer on the signal, and its power.
    signal_power = 0.0
    noise_shape = np.empty(spectrum.shape, dtype=np.float32)
    for iz in range(shape[0]):
        k2 = kz[iz] ** 2 + ky[:, None] ** 2 + kx[None, :] ** 2
        envelope = np.exp(-cond.b_factor * k2 / 4)
        spectrum[iz] *= (ctf(k2, cond.defocus_um) * envelope * cover[iz][None, :]).astype(np.float32)
        signal_power += float(np.sum(np.abs(spectrum[iz]) ** 2))
        rho_xz = np.sqrt(kz[iz] ** 2 + kx[None, :] ** 2) / nyquist  # WBP's ramp weighting
        noise_shape[iz] = cover[iz][None, :] * np.sqrt(0.3 + 0.7 * np.minimum(rho_xz, 1.0))
    noise_power = float(np.sum(noise_shape**2))

    # Pass 2: noise at the drawn SNR, and a smooth background of a few hundred Å.
    noise_scale = np.sqrt(signal_power / (cond.snr * noise_power))
    background_scale = cond.background * signal_std * np.sqrt(np.prod(shape)) / 6.0
    for iz in range(shape[0]):
        k2 = kz[iz] ** 2 + ky[:, None] ** 2 + kx[None, :] ** 2
        smooth = np.exp(-k2 * (300.0**2) / 2).astype(np.float32)
        noise = _complex_noise(rng, noise_shape[iz].shape)
        spectrum[iz] += noise * (noise_shape[iz] * noise_scale + smooth * background_scale)
    del noise_shape

    out = {}
    for tomo_type in tomo_types:
        volume = fft.irfftn(_filtered(spectrum, tomo_type, cond, kz, ky, kx), s=shape, workers=FFT_WORKERS,
                            overwrite_x=True)
        out[tomo_type] = arbitrary_units(volume.astype(np.float32, copy=False), rng)
    return out


def arbitrary_units(volume: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The volume at a random scale and offset (in place), as real tomograms come in arbitrary units."""
    scale, offset = 10 ** rng.uniform(-1, 1), rng.normal(0, 2)
    volume -= volume.mean()
    volume *= np.float32(scale / (volume.std() + 1e-12))
    volume += np.float32(offset)
    return volume


def _filtered(spectrum: np.ndarray, tomo_type: str, cond: Conditions, kz, ky, kx) -> np.ndarray:
    """A copy of the spectrum with the filter of one tomogram type."""
    if tomo_type == "wbp":
        return spectrum.copy()
    if tomo_type not in ("ctfdeconvolved", "denoised"):
        raise ValueError(f"the simulator makes wbp, ctfdeconvolved and denoised tomograms, not '{tomo_type}'")
    out = np.empty_like(spectrum)
    cutoff = 1.0 / cond.denoise_cutoff
    for iz in range(spectrum.shape[0]):
        k2 = kz[iz] ** 2 + ky[:, None] ** 2 + kx[None, :] ** 2
        c = ctf(k2, cond.defocus_um)
        gain = -c / (c**2 + 0.3)  # Wiener filter; the sign keeps protein dark, as deconvolution tools do
        if tomo_type == "denoised":
            gain = gain * np.exp(-((k2 / cutoff**2) ** 2))  # steep, like a learned denoiser's
        out[iz] = spectrum[iz] * gain.astype(np.float32)
    return out
