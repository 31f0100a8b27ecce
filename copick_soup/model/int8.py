"""INT8 members: a U-Net with NNCF's fake quantisers in it (quantisation-aware fine-tuned, train/quantise.py).

On disk an INT8 member is an ordinary member (safetensors and a JSON manifest) whose manifest carries NNCF's
description of where its quantisers sit (`int8.nncf`, JSON) and whose weights include their scales; loading puts
the quantisers back before the weights. torch runs it in float with quantisation emulated; OpenVINO compiles its
quantisers into INT8 kernels (2.5-4x a float32 window on a CPU with VNNI; benchmarks/results/precision-full.md).
NNCF (the `int8` extra) is needed to load one, not to run float members.
"""

from __future__ import annotations

import sys

from copick_soup.errors import SoupError

NEEDS = "pip install 'copick-soup[int8]' (NNCF)"


def require_nncf(what: str):
    """NNCF, or a one-line error: `what` (a member's file) needs it, and the extra that installs it."""
    try:
        import nncf
        import nncf.torch
    except ImportError as err:
        raise SoupError(f"{what}: an INT8 member needs NNCF; {NEEDS}") from err
    return nncf


def is_int8(model) -> bool:
    """Whether `model` carries NNCF quantisers (without importing NNCF for a float model)."""
    if sys.modules.get("nncf") is None:
        return False
    from nncf.torch.function_hook import is_wrapped  # NNCF 2.16+: quantisers as hooks on the model itself

    return is_wrapped(model)


def int8_config(model) -> dict:
    """Where the quantisers sit, as JSON, for the member's manifest."""
    return require_nncf("saving").torch.get_config(model)


def with_quantisers(model, config: dict, what: str):
    """`model` (a fresh float U-Net) with the quantisers `config` describes put back, ready for its weights."""
    return require_nncf(what).torch.load_from_config(model, config)


def quantised(model, windows: list, what: str = "quantise"):
    """`model` with quantisers placed and ranged by NNCF's post-training quantisation on these (1, 1, D, H, W)
    float32 tensors: the start of quantisation-aware fine-tuning. Activation ranges are min-max (NNCF's default
    quantiles clip the rare high activations, which are the particles); the 1x1x1 head stays in float."""
    nncf = require_nncf(what)
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return nncf.quantize(model.eval(), nncf.Dataset(windows), subset_size=len(windows),
                         ignored_scope=nncf.IgnoredScope(patterns=[".*head.*"]),
                         advanced_parameters=AdvancedQuantizationParameters(
                             activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))
