"""INT8 members (`--amp int8`, OpenVINO on a CPU): each member's network quantised after training by NNCF, which
sets every activation's range from calibration windows (simulate/calibration.py: simulated runs, fixed seeds) and
quantises the weights per channel; what it leaves unquantised runs in bf16 where the CPU has it natively.

Quantising a member takes a minute or so, so the result is kept on disk (an OpenVINO IR: XML and raw weights,
nothing unpickled) under $COPICK_SOUP_CACHE or ~/.cache/copick-soup, named by the member's SHA-256 and the
recipe, and read from there by every later process. NNCF is optional: `pip install 'copick-soup[int8]'`.
"""

from __future__ import annotations

import os
from pathlib import Path

from copick_soup.ensemble.runtimes import convert
from copick_soup.errors import SoupError

RECIPE = "ptq2"  # changes when the calibration or the quantisation does: older cached members are not reused


def cache_folder() -> Path:
    return Path(os.environ.get("COPICK_SOUP_CACHE") or Path.home() / ".cache" / "copick-soup") / "int8"


def int8_network(member, calibration):
    """The member's network quantised to INT8 (an openvino.Model): from the cache, or quantised now on
    `calibration(tomo_type, normalisation)`'s windows and cached (members made in memory, without a checksum,
    are quantised every time)."""
    import openvino as ov

    manifest = member.manifest
    path = cache_folder() / f"{manifest.sha256[:16]}-{RECIPE}-ov{ov.__version__.split('-')[0]}.xml"
    if manifest.sha256 and path.exists():
        return ov.Core().read_model(path)
    if calibration is None:
        raise SoupError(f"--amp int8: no calibration windows to quantise member {manifest.label} with")
    network = quantise(convert(member.model), calibration(manifest.tomo_type, manifest.normalisation_method))
    if manifest.sha256:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.xml")
        ov.save_model(network, partial, compress_to_fp16=False)
        partial.with_suffix(".bin").replace(path.with_suffix(".bin"))  # the weights first: the XML says it is whole
        partial.replace(path)
    return network


def quantise(network, windows):
    """NNCF's post-training quantisation of an OpenVINO model on these (1, 1, D, H, W) float32 windows.

    Activation ranges are the calibration's full min-max: NNCF's default quantiles clip the rare high activations,
    which are the particles, and cut the heatmap's peaks (a tiny member's highest score 0.20 came out 0.06; with
    min-max within 0.02). The head, a 1x1x1 convolution that makes the heatmap, stays in floating point."""
    try:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet
    except ImportError:
        raise SoupError("--amp int8 needs NNCF, which is not installed: pip install 'copick-soup[int8]'") from None
    head = [op.get_friendly_name() for op in network.get_ordered_ops() if op.get_type_name() == "Convolution"][-1]
    return nncf.quantize(network, nncf.Dataset(windows), subset_size=len(windows), fast_bias_correction=True,
                         ignored_scope=nncf.IgnoredScope(names=[head]),
                         advanced_parameters=AdvancedQuantizationParameters(
                             activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX))
