"""The `sart` engine's microscope and reconstruction: a tilt series recorded with Poisson electron counts,
reconstructed by SIRT (simultaneous iterative reconstruction) with a sparse system matrix.

Every choice differs from the `tilt` engine's (tiltseries.py), so that a picker trained on the other two engines
and scored here shows what it learnt of the particles rather than of a simulator:
- geometry: the tilt axis is y, so every y-slice is the same 2D Radon problem. One sparse matrix A (rays x (Z X)
  voxels, bilinear weights sampled along each ray) projects all slices at once, P = A V (`system_matrix`). The
  tilt series is simulated with rays sampled every half voxel and reconstructed with rays every voxel, so the
  reconstruction does not invert its own simulation exactly. (scikit-image's per-slice radon / iradon_sart was
  measured first: 80 s per SART iteration for a 96x256x256 volume on one core; this matrix does one in 0.3 s.)
- acquisition: a bidirectional scheme from a start angle near 0 to one end, then back to the other end, over a
  range drawn per run (+-50-65 degrees, asymmetric, 2-3 degree steps); radiation damage as a B-factor growing with
  the accumulated dose (instead of an exposure filter); each tilt's CTF with its own defocus (drift around the
  run's) and astigmatism (instead of a defocus gradient across the tilt axis); each tilt shifted by a residual
  alignment error of a fraction of a pixel to a pixel, which blurs the reconstruction as real alignments do;
- detection: Poisson counting of the electrons at a drawn dose, attenuated by the ice path (1 / cos tilt),
  with crystalline ice as an amplitude object that diffracts strongly at a few tilts, then the detector's MTF
  (pixel sinc times a roll-off): noise shaped as a counting detector's, not Gaussian noise added per image;
- reconstruction: SIRT from zero, a drawn number of iterations (iterative methods stop early, which regularises:
  fewer iterations, smoother volumes), tilts weighted by their dose (dose weighting); the `wbp` type is this
  reconstruction (the name is copick's tomogram type, not the method);
- `ctfdeconvolved`: a Wiener filter whose spectral SNR is measured from the volume's own radial power spectrum
  against its noise floor near Nyquist (not an assumed curve);
- `denoised`: non-local means (scikit-image, fast mode) of the reconstruction, its strength set by the volume's
  estimated noise: a real denoiser that keeps edges, not a low-pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp
from scipy import fft
from scipy.ndimage import gaussian_filter

from copick_soup.errors import SoupError
from copick_soup.simulate.imaging import FFT_WORKERS, ctf

PHASE_PER_UNIT = 0.016  # rad per voxel (10 Å) of path through protein: ~2.5 V over ice, 0.00065 rad/V/Å at 300 kV
ICE_MEAN_FREE_PATH = 3500.0  # Å, inelastic: electrons lost from the zero-loss image with the ice path
DAMAGE_B_PER_DOSE = 4.0  # Å^2 of B-factor per e/Å^2 of accumulated dose
SKIMAGE_MISSING = ("--engine sart needs scikit-image (its non-local means makes the 'denoised' tomograms): "
                   "pip install 'copick-soup[sim]'")

# The engine's own conditions, drawn per run after the shared ones (profiles.py, of which it uses crowding,
# distractors and slab), so that the other engines' draws stay as they were.
RANGES = {
    "simulated": dict(dose=(100.0, 160.0), defocus_um=(2.5, 4.0), astigmatism_um=(0.0, 0.2), tilt_step=(2.0, 3.0),
                      tilt_min=(55.0, 65.0), tilt_max=(55.0, 65.0), start=(-10.0, 10.0), b_factor=(1500.0, 3000.0),
                      contrast=(0.9, 1.2), ice_field=(0.02, 0.06), ice_crystals=(0.0, 1.0), carbon=(0.0, 0.2),
                      mtf_half=(0.25, 0.4), iterations=(10.0, 16.0), misalignment=(0.2, 0.6)),
    "experimental": dict(dose=(60.0, 120.0), defocus_um=(3.0, 5.0), astigmatism_um=(0.0, 0.4),
                         tilt_step=(2.0, 3.0), tilt_min=(50.0, 62.0), tilt_max=(50.0, 62.0), start=(-20.0, 20.0),
                         b_factor=(2000.0, 4500.0), contrast=(0.6, 1.0), ice_field=(0.04, 0.12),
                         ice_crystals=(0.0, 4.0), carbon=(0.0, 0.5), mtf_half=(0.2, 0.35),
                         iterations=(6.0, 14.0), misalignment=(0.4, 1.2)),
}


@dataclass(frozen=True)
class SartConditions:
    """One run's draws of the `sart` engine (saved with the run's shared conditions in simulation.json)."""

    dose: float  # e/Å^2 over the whole series
    defocus_um: float
    astigmatism_um: float
    tilt_step: float
    tilt_min: float  # degrees below 0 (the range needn't be symmetric)
    tilt_max: float
    start: float  # degrees, where the bidirectional scheme starts
    b_factor: float  # Å^2: the pseudo-atoms' blur (thermal motion, and the drift and beam-induced motion that
    # limit a tomogram to ~30 Å: exp(-B k^2 / 4) halves the signal at 1/30 Å^-1 for B ~ 2500 Å^2)
    contrast: float  # x the phase per density unit
    ice_field: float  # std of the amorphous ice's density fluctuations
    ice_crystals: float  # mean crystals per run
    carbon_edge: bool
    mtf_half: float  # detector MTF's roll-off, cycles per pixel
    iterations: int  # SIRT
    misalignment: float  # pixels, std of each tilt's residual alignment error (a random shift)

    def as_dict(self) -> dict:
        return {f"sart_{k}": v for k, v in asdict(self).items()}


def sample_sart_conditions(profile: str, rng: np.random.Generator) -> SartConditions:
    r = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in RANGES[profile].items()}
    return SartConditions(r["dose"], r["defocus_um"], r["astigmatism_um"], round(r["tilt_step"]), r["tilt_min"],
                          r["tilt_max"], r["start"], r["b_factor"], r["contrast"], r["ice_field"], r["ice_crystals"],
                          bool(rng.random() < r["carbon"]), r["mtf_half"], int(round(r["iterations"])),
                          r["misalignment"])


def require_skimage() -> None:
    """A one-line error naming the package and its extra when scikit-image is missing (checked before writing)."""
    try:
        import skimage.restoration  # noqa: F401
    except ImportError as err:
        raise SoupError(SKIMAGE_MISSING) from err


def bidirectional(tilt_min: float, tilt_max: float, step: float, start: float) -> list[float]:
    """Tilt angles (degrees) in acquisition order: from `start` up to +tilt_max, then from below `start` down to
    -tilt_min."""
    angles = np.arange(-np.floor(tilt_min / step), np.floor(tilt_max / step) + 1) * step
    first = angles[np.argmin(np.abs(angles - start))]
    return [float(a) for a in angles[angles >= first]] + [float(a) for a in angles[angles < first][::-1]]


def system_matrix(nz: int, nx: int, angles, step: float = 1.0) -> sp.csr_matrix:
    """(len(angles) * nx, nz * nx): the line integrals of a (Z, X) slice along rays tilted about y.

    Ray u of tilt t meets the detector at u (centred like x) and runs along (-sin t, cos t) in (x, z); it is
    sampled every `step` voxels over the slab's depth, each sample shared bilinearly among its 4 voxels."""
    rows, cols, vals = [], [], []
    u = np.arange(nx) - (nx - 1) / 2
    for i, angle in enumerate(np.deg2rad(angles)):
        c, s = np.cos(angle), np.sin(angle)
        along = np.arange(int(np.ceil(nz / (c * step))) + 2) * step
        t = (-(nz - 1) / 2 - 0.5 * step - u * s) / c + along[:, None]  # (samples, rays)
        x, z = u * c - t * s + (nx - 1) / 2, u * s + t * c + (nz - 1) / 2
        x0, z0 = np.floor(x), np.floor(z)
        fx, fz = x - x0, z - z0
        ray = np.broadcast_to(i * nx + np.arange(nx), x.shape)
        for dz, dx in ((0, 0), (0, 1), (1, 0), (1, 1)):
            w = (fz if dz else 1 - fz) * (fx if dx else 1 - fx) * step
            zi, xi = (z0 + dz).astype(np.int64), (x0 + dx).astype(np.int64)
            ok = (zi >= 0) & (zi < nz) & (xi >= 0) & (xi < nx) & (w > 0)
            rows.append(ray[ok])
            cols.append(zi[ok] * nx + xi[ok])
            vals.append(w[ok])
    matrix = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(len(angles) * nx, nz * nx))
    matrix.sum_duplicates()
    return matrix


def as_columns(volume: np.ndarray) -> np.ndarray:
    """(Z, Y, X) -> (Z X, Y): one column per y-slice, the layout A works on."""
    nz, ny, nx = volume.shape
    return np.ascontiguousarray(volume.transpose(0, 2, 1)).reshape(nz * nx, ny)


def from_columns(columns: np.ndarray, shape) -> np.ndarray:
    nz, ny, nx = shape
    return np.ascontiguousarray(columns.reshape(nz, nx, ny).transpose(0, 2, 1))


def record(phase: np.ndarray, crystal: np.ndarray, angle: float, accumulated: float, dose_per_tilt: float,
           defocus: tuple, thickness: float, sc: SartConditions, voxel_size: float,
           rng: np.random.Generator) -> np.ndarray:
    """One tilt image (Y, X) as relative contrast (counts / mean - 1): protein dark.

    `phase` and `crystal` are this tilt's projections (rad, and crystal path in voxels); `defocus` is
    (mean µm, astigmatism µm, astigmatism angle)."""
    ny, nx = phase.shape
    ky = np.fft.fftfreq(ny, d=voxel_size)[:, None]
    kx = np.fft.rfftfreq(nx, d=voxel_size)[None, :]
    k2 = ky**2 + kx**2
    mean, astig, azimuth = defocus
    local_defocus = mean + astig * np.cos(2 * (np.arctan2(ky, kx) - azimuth))
    # ctf() is negative at low frequency: the weak-phase image of protein comes out dark.
    damage = np.exp(-DAMAGE_B_PER_DOSE * accumulated * k2 / 4)
    dy, dx = rng.normal(0, sc.misalignment * voxel_size, 2)  # the tilt's residual alignment error, Å
    shift = np.exp(-2j * np.pi * (ky * dy + kx * dx))
    contrast = 2 * np.fft.irfft2(np.fft.rfft2(phase) * ctf(k2, local_defocus) * damage * shift, s=phase.shape)
    crystal = np.fft.irfft2(np.fft.rfft2(crystal) * shift, s=crystal.shape)
    bragg = rng.uniform(0.04, 0.1) * (4.0 if rng.random() < 0.15 else 1.0)  # strong at the tilts where it diffracts
    electrons = dose_per_tilt * voxel_size**2 * np.exp(-thickness / (ICE_MEAN_FREE_PATH * np.cos(angle)))
    expected = electrons * np.exp(-bragg * crystal) * np.clip(1 + contrast, 0, None)
    counts = rng.poisson(expected).astype(np.float64)
    f = np.sqrt(k2) * voxel_size  # cycles per pixel
    mtf = np.sinc(f) / (1 + (f / sc.mtf_half) ** 2)
    counts = np.fft.irfft2(np.fft.rfft2(counts) * mtf, s=counts.shape)
    return (counts / electrons - 1).astype(np.float32)


def sirt(data: np.ndarray, matrix: sp.csr_matrix, weights: np.ndarray, iterations: int, n_voxels: int) -> np.ndarray:
    """x <- x + C A^T W R (b - A x) from zero: R the inverse ray lengths, C the inverse weighted ray counts of
    each voxel, W the per-ray weights (dose weighting). `data` is (rays, Y), the result (Z X, Y)."""
    ones = np.ones(n_voxels, dtype=np.float32)
    ray_length = np.asarray(matrix @ ones).ravel()
    row = np.where(ray_length > 1e-3, weights / np.maximum(ray_length, 1e-3), 0).astype(np.float32)[:, None]
    coverage = np.asarray(matrix.T @ weights.astype(np.float32)).ravel()
    col = np.where(coverage > 1e-3, 1 / np.maximum(coverage, 1e-3), 0).astype(np.float32)[:, None]
    transposed = matrix.T.tocsr()
    volume = np.zeros((n_voxels, data.shape[1]), dtype=np.float32)
    for _ in range(iterations):
        volume += col * (transposed @ (row * (data - matrix @ volume)))
    return volume


def tilt_series_sirt(density: np.ndarray, crystals: np.ndarray, slab, sc: SartConditions, voxel_size: float,
                     rng: np.random.Generator) -> np.ndarray:
    """The SIRT reconstruction (Z, Y, X) float32 of a sample: protein dark, as in real tomograms."""
    shape = density.shape
    nz, ny, nx = shape
    angles = bidirectional(sc.tilt_min, sc.tilt_max, sc.tilt_step, sc.start)
    by_angle = sorted(angles)  # the rows of A go by angle, the images come in acquisition order
    fine = system_matrix(nz, nx, by_angle, step=0.5)  # simulation: rays sampled twice as finely
    phases = fine @ (as_columns(density) * np.float32(PHASE_PER_UNIT * sc.contrast))
    paths = fine @ as_columns(crystals)
    del fine
    thickness = (slab[1] - slab[0]) * voxel_size
    dose_per_tilt = sc.dose / len(angles)
    data = np.empty((len(angles) * nx, ny), dtype=np.float32)
    weights = np.empty(len(angles) * nx, dtype=np.float32)
    azimuth = rng.uniform(0, np.pi)
    for order, angle in enumerate(angles):
        i = by_angle.index(angle)
        rows = slice(i * nx, (i + 1) * nx)
        defocus = (sc.defocus_um + rng.normal(0, 0.15), sc.astigmatism_um, azimuth + rng.normal(0, 0.05))
        image = record(phases[rows].T, paths[rows].T, np.deg2rad(angle), order * dose_per_tilt, dose_per_tilt,
                       defocus, thickness, sc, voxel_size, rng)
        data[rows] = image.T
        weights[rows] = np.exp(-order * dose_per_tilt / 80.0)  # dose weighting: late tilts count less
    del phases, paths
    matrix = system_matrix(nz, nx, by_angle)
    return from_columns(sirt(data, matrix, weights, sc.iterations, nz * nx), shape)


def radial_power(volume: np.ndarray, voxel_size: float, bins: int = 40):
    """(|k| (1/Å) of each voxel's frequency, shell index, mean power per shell) of the volume's spectrum."""
    spectrum = fft.rfftn(volume, workers=FFT_WORKERS)
    k = np.sqrt(fft.fftfreq(volume.shape[0], d=voxel_size)[:, None, None] ** 2
                + fft.fftfreq(volume.shape[1], d=voxel_size)[None, :, None] ** 2
                + fft.rfftfreq(volume.shape[2], d=voxel_size)[None, None, :] ** 2)
    shell = np.minimum((k * voxel_size / 0.5 * bins).astype(np.int64), bins - 1)
    power = np.bincount(shell.ravel(), (np.abs(spectrum) ** 2).ravel(), bins) / np.maximum(
        np.bincount(shell.ravel(), minlength=bins), 1)
    return spectrum, k, shell, power


def wiener_measured(volume: np.ndarray, defocus_um: float, voxel_size: float) -> np.ndarray:
    """Wiener deconvolution with the spectral SNR measured on the volume: per shell, power over the noise floor
    (the mean of the outer fifth of the shells, where the CTF and envelope leave next to no signal)."""
    spectrum, k, shell, power = radial_power(volume, voxel_size)
    floor = float(np.mean(power[-len(power) // 5:])) + 1e-30
    ssnr = gaussian_filter(np.maximum(power / floor - 1, 0), 1.0)[shell]
    c = ctf(k**2, defocus_um)
    gain = np.where(ssnr > 0, -c * ssnr / (c**2 * ssnr + 1), 0).astype(np.float32)  # sign: protein stays dark
    return fft.irfftn(spectrum * gain, s=volume.shape, workers=FFT_WORKERS).astype(np.float32)


def non_local_means(volume: np.ndarray) -> np.ndarray:
    """scikit-image's non-local means (fast mode, 3x3x3 patches, 5x5x5 search) at the volume's noise level:
    the robust spread (median absolute deviation) of the whole volume, which at cryo-ET's SNR is mostly noise."""
    from skimage.restoration import denoise_nl_means

    sigma = 1.4826 * float(np.median(np.abs(volume - np.median(volume))))
    return denoise_nl_means(volume, patch_size=3, patch_distance=2, h=0.7 * sigma, sigma=0.5 * sigma,
                            fast_mode=True).astype(np.float32)


def derived_sart_types(recon: np.ndarray, sc: SartConditions, voxel_size: float, tomo_types) -> dict:
    out = {}
    if "wbp" in tomo_types:
        out["wbp"] = recon
    if "ctfdeconvolved" in tomo_types:
        out["ctfdeconvolved"] = wiener_measured(recon, sc.defocus_um, voxel_size)
    if "denoised" in tomo_types:
        out["denoised"] = non_local_means(recon)
    return out
