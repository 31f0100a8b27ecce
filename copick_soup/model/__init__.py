"""The model layer: one 3D U-Net (unet.py) and its named variants (registry.py), members on disk
(checkpoint.py, manifest.py), and weight-space averaging of members (average.py)."""

from copick_soup.model.registry import create_model, list_models, model_config, register
from copick_soup.model.unet import UNet3D, UNetConfig

__all__ = ["UNet3D", "UNetConfig", "create_model", "list_models", "model_config", "register"]
