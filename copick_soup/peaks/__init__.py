"""Peak extraction: heatmaps -> per-class picks in Å with scores."""

from copick_soup.peaks.nms import find_peaks, heatmaps_to_picks

__all__ = ["find_peaks", "heatmaps_to_picks"]
