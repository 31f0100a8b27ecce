"""Model registry and factory, timm-style: `create_model("unet3d_tiny", n_classes=6)`.

Variants are tiny registered functions returning a `UNetConfig`; the name picks the variant. `unet3d_test` is a
deliberately tiny variant so tests can run every code path on a CPU in seconds.
"""

from __future__ import annotations

from dataclasses import replace

from copick_soup.errors import SoupError
from copick_soup.model.unet import UNet3D, UNetConfig

_REGISTRY = {}


def register(fn):
    _REGISTRY[fn.__name__] = fn
    return fn


@register
def unet3d_test() -> UNetConfig:
    return UNetConfig(channels=(4, 8))


@register
def unet3d_tiny() -> UNetConfig:  # 3 levels, ~1.3 M parameters; 16 features at full resolution keep it CPU-fast
    return UNetConfig(channels=(16, 48, 160))


@register
def unet3d_medium() -> UNetConfig:  # 4 levels, ~4.4 M parameters
    return UNetConfig(channels=(28, 56, 112, 224))


@register
def unet3d_large() -> UNetConfig:  # 5 levels, ~11.4 M parameters
    return UNetConfig(channels=(24, 48, 96, 192, 320))


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_config(name: str, **overrides) -> UNetConfig:
    """The registered config of `name`, with fields overridden (`n_classes`, `in_channels`, `channels`, `norm`)."""
    if name not in _REGISTRY:
        raise SoupError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    config = _REGISTRY[name]()
    for key in overrides:
        if not hasattr(config, key):
            raise SoupError(f"model '{name}' has no setting '{key}'")
    if "channels" in overrides:
        overrides["channels"] = tuple(overrides["channels"])
    return replace(config, **overrides)  # checked again, as a new config


def create_model(name: str, **overrides) -> UNet3D:
    """Build a registered variant, e.g. `create_model("unet3d_medium", n_classes=len(classes))`."""
    return UNet3D(model_config(name, **overrides))

