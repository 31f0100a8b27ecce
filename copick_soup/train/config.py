"""Training configuration: one plain dataclass, overridable from YAML recipes and `--set key=value`."""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, fields, replace

from copick_soup.data.tomogram import NORMALISATIONS
from copick_soup.errors import SoupError
from copick_soup.model.registry import model_config
from copick_soup.model.unet import TRAIN_LAYERS
from copick_soup.train.augment import Randomisation

# Settings removed because they made members worse (docs/decisions.md), which members trained before still record
# (at their defaults, `own` and 0, in the default soup's manifests): a fine-tune of such a member leaves them out.
# Given in a recipe or with --set, they are unknown settings like any other.
RETIRED = ("fg_scope", "patch_max")


@dataclass(frozen=True)
class TrainConfig:
    variant: str = "unet3d_tiny"
    patch: int = 64  # cube side in voxels; 128 on a GPU
    batch_size: int = 2
    steps: int = 300
    lr: float = 2e-3
    weight_decay: float = 1e-4
    train_layers: str = "all"  # all, decoder or head (model/unet.py's TRAIN_LAYERS): what a fine-tune updates
    warmup: int = 20  # steps of linear warm-up before the cosine decay
    ema: float = 0.0  # EMA decay of the weights (0 = off); validation and checkpoints use the EMA
    val_every: int = 50  # an "epoch": steps between validations
    val_sweep: bool = True  # validate each class at its own best threshold, as the soup search will cut it
    val_threshold: float = 0.25  # the one peak threshold for the validation F4 when val_sweep is off
    val_window: int = 64  # cubes of this side, Gaussian-blended; 0: the crop tiling `pick --window auto` chooses
    sigma_scale: float = 0.3  # target Gaussian sigma, x particle radius
    fg_weight: float = 10.0  # loss weight on foreground voxels (see loss.py)
    p_particle: float = 0.8  # chance a patch is centred near a particle
    p_hard: float = 0.0  # chance a patch is centred on a hard negative (see negatives.py)
    hard_every: int = 500  # steps between minings of hard negatives (train/loop.py's mining_due), each a pass of the
    # network over every training volume as `pick` runs it: 25 s for unet3d_medium, 10 s for unet3d_tiny over three
    # 64x128x128 volumes on 2 busy cores, a third of torch's time in 64³ cubes (results/finetune-layers.md)
    hard_threshold: float = 0.15  # heatmap peaks above this that match no particle are hard negatives
    seed: int = 0
    normalisation: str = "zscore"  # zscore, or robust (median and MAD: see data/tomogram.py); pick does the same
    norm: str = "instance"  # the U-Net's: instance, batch or fixed (the last two: heatmaps that do not depend on the
    # window, model/unet.py; fixed from an instance-norm --init measures its statistics once, train/fixed.py)
    # Randomisation beyond the simulator's (train/augment.py), each off at 0: particle size ± aug_scale, blur up to
    # aug_blur voxels, noise smoothed up to aug_noise_colour voxels, intensity non-linearity, contrast field, low
    # frequencies scaled by exp(± aug_spectrum).
    aug_scale: float = 0.0
    aug_blur: float = 0.0
    aug_noise_colour: float = 0.0
    aug_gamma: float = 0.0
    aug_contrast: float = 0.0
    aug_spectrum: float = 0.0
    device: str = "auto"  # auto, cpu, cuda, cuda:1 ...
    amp: str = "none"  # none, bf16, fp16, or auto (bf16 where the device computes it natively)

    def __post_init__(self):
        """Settings that would crash training hours in, or train nothing, are refused when the config is made."""
        rules = [(("patch", "batch_size", "steps", "val_every", "hard_every"), lambda v: v >= 1, "at least 1"),
                 (("val_window",), lambda v: v >= 0, "at least 0 (0: --window auto)"),
                 (("lr", "sigma_scale", "fg_weight"), lambda v: v > 0, "> 0"),
                 (("warmup", "weight_decay", "aug_blur", "aug_noise_colour", "aug_gamma", "aug_spectrum"),
                  lambda v: v >= 0, ">= 0"),
                 (("aug_scale", "aug_contrast"), lambda v: 0 <= v < 0.5, "in [0, 0.5)"),
                 (("p_particle", "p_hard", "val_threshold", "hard_threshold"), lambda v: 0 <= v <= 1, "in [0, 1]"),
                 (("ema",), lambda v: 0 <= v < 1, "in [0, 1) (0: off)")]
        for keys, ok, rule in rules:
            for key in keys:
                if not ok(getattr(self, key)):
                    raise SoupError(f"'{key}' must be {rule}, got {getattr(self, key)}")
        if self.train_layers not in TRAIN_LAYERS:
            raise SoupError(f"'train_layers' must be one of {', '.join(TRAIN_LAYERS)}, got {self.train_layers!r}")
        if self.normalisation not in NORMALISATIONS:
            raise SoupError(f"'normalisation' must be one of {', '.join(NORMALISATIONS)}, got "
                            f"{self.normalisation!r}")
        unet = model_config(self.variant, norm=self.norm)  # an unknown variant or norm fails here too
        for key in ("patch", "val_window"):
            side = getattr(self, key)
            if side % unet.divisor:
                raise SoupError(f"'{key}' {side}: {self.variant} needs a multiple of {unet.divisor}; "
                                f"{unet.sizes_near(side)}")

    @classmethod
    def from_saved(cls, saved: dict) -> TrainConfig:
        """The config a member records in its manifest, less the settings since removed (RETIRED)."""
        return cls(**{key: value for key, value in saved.items() if key not in RETIRED})

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def randomisation(self) -> Randomisation:
        return Randomisation(self.aug_scale, self.aug_blur, self.aug_noise_colour, self.aug_gamma, self.aug_contrast,
                             self.aug_spectrum)


def parse_value(text: str):
    """'3' -> 3, '1e-3' -> 0.001, 'bf16' -> 'bf16', '[1, 2]' -> [1, 2]."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def override(config, updates: dict, where: str = "--set"):
    """A copy of a dataclass config with `updates` applied; unknown keys and wrong types are errors."""
    known = {f.name: f for f in fields(config)}
    clean = {}
    for key, value in updates.items():
        if key not in known:
            raise SoupError(f"{where}: unknown setting '{key}'; known: {', '.join(sorted(known))}")
        default = getattr(config, key)
        if isinstance(default, bool) or not isinstance(default, (int, float)):
            clean[key] = type(default)(value) if default is not None else value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            clean[key] = type(default)(value) if isinstance(default, float) or float(value).is_integer() else value
            if isinstance(default, int) and not float(value).is_integer():
                raise SoupError(f"{where}: '{key}' needs a whole number, got {value}")
        else:
            raise SoupError(f"{where}: '{key}' needs a number, got {value!r}")
    try:
        return replace(config, **clean)
    except SoupError as err:
        raise SoupError(f"{where}: {err}") from None


def parse_overrides(pairs) -> dict:
    """['lr=1e-3', 'steps=10'] -> {'lr': 0.001, 'steps': 10}."""
    out = {}
    for pair in pairs or ():
        if "=" not in pair:
            raise SoupError(f"--set: expected key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        out[key.strip()] = parse_value(value.strip())
    return out
