"""How an ensemble runs over a tomogram: one frozen settings object for `pick`, the soup search, validation during
training and the Ray jobs, checked when it is made so that a bad value fails before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, replace

from copick_soup.device import AMP_CHOICES, amp_dtype, default_batch_size, is_cpu, resolve_device
from copick_soup.ensemble.tiling import MARGIN, SLOWER_WITH_SIZE, Tiling, choose_tiling
from copick_soup.ensemble.tta import tta_views
from copick_soup.errors import SoupError
from copick_soup.model.registry import model_config

RUNTIMES = ("auto", "torch", "openvino")
RUNTIME_NAMES = {"torch": "torch", "openvino": "OpenVINO"}


@dataclass(frozen=True)
class InferenceSettings:
    # None (--window auto, the default): windows chosen from the tomogram and max_memory, margins cropped
    # (ensemble/tiling.py: 1.6x faster than cubes on a CPU; the default soup's fixed norms make its heatmaps
    # independent of the window, so it scores as in cubes); N: N³ cubes, Gaussian-blended with neighbours that
    # share `overlap` of them (the classic sliding window, for members with instance norms)
    window: int | None = None
    overlap: float = 0.25
    margin: int = MARGIN  # crop tiling: voxels dropped at each window's inner borders
    max_memory: float = 1.0  # GB the streamed inference of one run may hold (the windows' activations, the slabs)
    tta: int = 1  # test-time augmentation views, 1-8
    batch_size: int | None = None  # windows per network call; None: the device's default
    device: str = "cpu"  # cpu, cuda, cuda:N, or auto (resolved by `resolved()`)
    amp: str = "auto"  # autocast: auto (bf16 where the device has it natively), none, bf16, fp16
    runtime: str = "auto"  # what runs the networks: torch, openvino (CPU only), or auto: OpenVINO on a CPU where
    # it is installed (2-2.5x torch's speed per window here, benchmarks/results/runtimes.md), else torch
    tomo_type: str | None = None  # read this tomogram type with every member instead of each member's own
    tomo_map: tuple = ()  # ((member type, tomogram name), ...): --tomo-map, overriding the match by kind
    voxel_size: float | None = None  # read the tomograms at this spacing (Å; resampled to the soup's if not within
    # 0.5% of it); None: the run's spacing closest to the soup's

    def __post_init__(self):
        tta_views(self.tta)
        if not 0 <= self.overlap < 1:
            raise SoupError(f"--overlap {self.overlap:g}: must be at least 0 and below 1")
        if self.margin < 0:
            raise SoupError(f"--margin {self.margin}: must be 0 or more voxels")
        if not self.max_memory > 0:
            raise SoupError(f"--max-memory {self.max_memory:g}: must be a positive size in GB")
        if self.batch_size is not None and self.batch_size < 1:
            raise SoupError(f"--batch-size {self.batch_size}: must be at least 1")
        if self.voxel_size is not None and not self.voxel_size > 0:
            raise SoupError(f"--voxel-size {self.voxel_size:g}: must be a positive size in Å")
        if self.runtime not in RUNTIMES:
            raise SoupError(f"--runtime: choose one of {', '.join(RUNTIMES)}, got '{self.runtime}'")
        if self.device != "auto":
            self.check_runtime()
        if self.amp not in AMP_CHOICES:
            raise SoupError(f"amp: choose one of {', '.join(AMP_CHOICES)}, got '{self.amp}'")

    def resolved(self) -> InferenceSettings:
        """The settings on a concrete device ('auto' chosen), with the precision checked against it."""
        settings = replace(self, device=resolve_device(self.device))
        amp_dtype(settings.amp, settings.device)  # fp16 on a CPU without native float16 fails here
        if settings.runtime == "openvino":
            settings.check_runtime()
            if not openvino_installed():
                raise SoupError("--runtime openvino: OpenVINO is not installed (pip install openvino)")
        return settings

    def check_runtime(self) -> None:
        if self.runtime == "openvino" and not self.on_cpu:
            raise SoupError(f"--runtime openvino runs on the CPU; --device {self.device} needs --runtime torch")

    @property
    def engine(self) -> str:
        """The runtime that runs the networks: `runtime`, with auto decided (OpenVINO on a CPU where installed)."""
        if self.runtime == "auto":
            return "openvino" if self.on_cpu and openvino_installed() else "torch"
        return self.runtime

    @property
    def tomo_mapping(self) -> dict:
        return dict(self.tomo_map)

    @property
    def views(self) -> list:
        return tta_views(self.tta)

    @property
    def amp_dtype(self):
        return amp_dtype(self.amp, self.device)

    @property
    def batch(self) -> int:
        return self.batch_size or default_batch_size(self.device)

    @property
    def on_cpu(self) -> bool:
        return is_cpu(self.device)

    def tiling(self, shape, unets, n_members: int = 1) -> Tiling:
        """How a volume of `shape` is cut into windows for these U-Nets (UNetConfigs): `--window` cubes, or
        (`--window auto`) the crop tiling that should take least time within `--max-memory` (choose_tiling)."""
        if self.window is not None:  # streamed in z, as before crop tiles: the same sums in the same order
            return Tiling.cube(self.window, self.overlap)
        turned = any(k % 2 for _, k in self.views)  # a turn swaps y and x: square windows keep one network shape
        return choose_tiling(shape, unets, self.max_memory, n_members, self.amp_dtype is not None, self.batch,
                             self.margin, SLOWER_WITH_SIZE["cpu" if self.on_cpu else "cuda"], square=turned)

    def check_members(self, manifests) -> str | None:
        """Refuse a window some member cannot run (each U-Net level halves it); return a warning for one smaller
        than the patches the members were trained on, where particles lose the context the network learnt from.
        `manifests`: MemberManifest objects."""
        if self.window is None:
            return None  # windows are chosen to fit each tomogram
        unets = {m.variant: model_config(m.variant, **m.unet) for m in manifests}
        deepest = max(unets.values(), key=lambda u: u.divisor)  # divisors are powers of 2: the largest fits all
        if self.window < deepest.divisor or self.window % deepest.divisor:
            raise SoupError(f"--window {self.window}: this soup's members ({', '.join(sorted(unets))}) need a "
                            f"multiple of {deepest.divisor}; {deepest.sizes_near(self.window)}")
        patch = max((m.patch for m in manifests), default=0)
        if self.window < patch:
            return (f"warning: --window {self.window} is smaller than the {patch}-voxel patches the members were "
                    f"trained on; particles near window borders lose context and picks suffer")
        return None


def openvino_installed() -> bool:
    from importlib.util import find_spec

    return find_spec("openvino") is not None
