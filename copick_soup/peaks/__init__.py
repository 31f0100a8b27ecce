"""Peak extraction: heatmaps -> per-class picks in Å with scores, whole or streamed in z."""

from copick_soup.peaks.nms import PeakStream, heatmaps_to_picks

__all__ = ["PeakStream", "heatmaps_to_picks"]
