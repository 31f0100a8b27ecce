"""The ensemble pipeline, written once: windows cut and joined (tiling.py), streamed over slabs of the tomogram
(windows.py, reading through slabs.py), each member run by torch or OpenVINO with TTA (runtimes.py, tta.py),
per-class peaks (peaks.py), cross-class suppression (overlap.py), the `Ensemble` that strings them together
(ensemble.py), run by one `InferenceSettings` (settings.py), and the threshold sweep and scoring (thresholds.py,
evaluate.py) that the soup search and training's validation share with `pick`."""

from copick_soup.ensemble.ensemble import Ensemble, Member, blend, run_weights
from copick_soup.ensemble.settings import InferenceSettings

__all__ = ["Ensemble", "InferenceSettings", "Member", "blend", "run_weights"]
