"""The ensemble pipeline, written once: members -> each member's tomogram -> predictor (TTA, precision) ->
weighted blend of sliding windows -> per-class peaks -> cross-class suppression.

`pick`, the soup search, validation during training and hard-negative mining all run through an `Ensemble`, so
what the search scores is what `pick` writes. A run that lacks some members' tomogram types is picked with the
members that can run, their weights renormalised (`run_weights`: the one place that rule lives).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from copick_soup.data.kinds import match_tomogram
from copick_soup.data.project import list_names
from copick_soup.data.tomogram import normalisation_stats, run_tomo_types, run_volume
from copick_soup.ensemble.overlap import cut_picks, suppress_overlaps
from copick_soup.ensemble.peaks import PeakStream, heatmaps_to_picks
from copick_soup.ensemble.runtimes import OpenVinoPredictor, TorchPredictor
from copick_soup.ensemble.settings import InferenceSettings
from copick_soup.ensemble.tiling import Tiling
from copick_soup.ensemble.windows import Source, predict_volume, stream_heatmaps
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import check_member, load_member
from copick_soup.model.manifest import MemberManifest, SoupManifest, check_compatible
from copick_soup.model.registry import model_config
from copick_soup.objects import ParticleClass


class Member:
    """A soup member: its manifest, its weight and its network (a torch module in eval mode), which a member read
    from disk loads only when first used, so that members no run uses (weight 0, or a tomogram type the runs
    lack) cost neither memory nor time."""

    def __init__(self, model, manifest: MemberManifest, weight: float = 1.0, device: str = "cpu"):
        self._model, self.manifest, self.weight, self.device = model, manifest, weight, device

    @property
    def model(self):
        if self._model is None and self.manifest.path is not None:
            self._model = load_member(self.manifest, self.device)[0]
        return self._model

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def config(self):
        """The U-Net's config (UNetConfig), from the manifest while the network is not loaded."""
        return self._model.config if self.loaded else model_config(self.manifest.variant, **self.manifest.unet)


def run_weights(weights, can_run) -> list[float] | None:
    """The weights a run is blended with: those of the members that can run with a weight above 0, renormalised
    to sum to 1. When none of them can run but members of weight 0 can (a soup search left them out), those stand
    in with equal weights. None when no member can run."""
    used = [w if ok and w > 0 else 0.0 for w, ok in zip(weights, can_run)]
    if not any(used):
        used = [1.0 if ok else 0.0 for ok in can_run]
    total = sum(used)
    return [w / total for w in used] if total > 0 else None


@dataclass
class Ensemble:
    name: str
    members: list[Member]
    classes: list[ParticleClass]
    voxel_size: float  # Å
    thresholds: dict  # per-class peak threshold
    nms_scale: float = 0.5
    overlap: float = 0.0  # cross-class suppression (overlap.py); 0: off
    manifest: SoupManifest | None = None
    compiled: dict = field(default_factory=dict, repr=False, compare=False)  # OpenVINO predictors, made once

    @classmethod
    def load(cls, soup, device: str = "cpu") -> Ensemble:
        """Load every member of a soup (a name, soup.json, folder of members or one member) onto `device`."""
        manifest = soup if isinstance(soup, SoupManifest) else SoupManifest.read(soup)
        ensemble = cls.of_members(manifest.member_paths, device, [m.weight for m in manifest.members])
        missing = [c.name for c in ensemble.classes if c.name not in manifest.thresholds]
        if missing:
            raise SoupError(f"{manifest.where}: no threshold for class(es) {', '.join(missing)}")
        return replace(ensemble, name=manifest.name, thresholds=manifest.thresholds, nms_scale=manifest.nms_scale,
                       overlap=manifest.overlap, manifest=manifest)

    @classmethod
    def of_members(cls, paths, device: str = "cpu", weights=None) -> Ensemble:
        """Members that agree on classes and voxel size, equal weights unless given, no thresholds yet."""
        weights = weights or [1.0] * len(paths)
        members = [Member(None, check_member(p), float(w), device) for p, w in zip(paths, weights)]
        check_compatible([m.manifest for m in members])
        first = members[0].manifest
        return cls("members", members, first.classes, first.voxel_size, {})

    @classmethod
    def of_model(cls, model, classes, voxel_size: float, tomo_type: str = "", name: str = "model") -> Ensemble:
        """A one-member ensemble of a model in memory (validation, mining, greedy weight soups)."""
        manifest = MemberManifest(name, "", {}, list(classes), voxel_size, tomo_type)
        return cls(name, [Member(model, manifest)], list(classes), voxel_size, {})

    @property
    def manifests(self) -> list[MemberManifest]:
        return [m.manifest for m in self.members]

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def tomo_type(self, member: Member, settings: InferenceSettings, run=None) -> str | None:
        """The tomogram type a member reads: `--tomo-type` if forced, else on a run the run's tomogram of the
        member's kind (data/kinds.py; None where the run has none), else the member's own type."""
        if settings.tomo_type:
            return settings.tomo_type
        if run is None:
            return member.manifest.tomo_type
        return match_tomogram(member.manifest.tomo_type, run_tomo_types(run), settings.tomo_mapping)[0]

    def predictor(self, member: Member, settings: InferenceSettings):
        """What runs a member's network on windows: torch, or OpenVINO (`--runtime`), converted and compiled once
        per member and settings for all the runs of a batch."""
        if settings.engine == "openvino":
            key = (id(member.model), settings.amp, settings.tta)
            if key not in self.compiled:
                self.compiled[key] = OpenVinoPredictor(member.model, settings.amp_dtype, settings.views,
                                                       member.manifest.sha256)
            return self.compiled[key]
        return TorchPredictor(member.model, settings.device, settings.amp_dtype, settings.views)

    # ---- one run, streamed: what pick does -----------------------------------------------------------------

    def inputs(self, run, settings: InferenceSettings, echo=print) -> list[Source]:
        """The members that run on this run, each with its tomogram and blending weight; the rest are left out,
        and it says so. A run where no member can run is an error naming the types it has."""
        chosen = [self.tomo_type(m, settings, run) for m in self.members]
        have = run_tomo_types(run)
        can_run = [t is not None and t in have for t in chosen]
        weights = run_weights([m.weight for m in self.members], can_run)
        if weights is None:
            wanted = sorted({self.tomo_type(m, settings) for m in self.members})
            raise SoupError(f"run {run.name}: none of the soup's tomogram types ({list_names(wanted)}) is here; it "
                            f"has {list_names(sorted(have))} (map one with --tomo-map TYPE=NAME)")
        weighted = [(self.tomo_type(m, settings), ok) for m, ok in zip(self.members, can_run) if m.weight > 0]
        lacking = sorted({tomo_type for tomo_type, ok in weighted if not ok})
        if not any(ok for _, ok in weighted):
            echo(f"run {run.name}: no member with a soup weight can run here; using the others with equal weights")
        elif lacking:
            echo(f"run {run.name}: using {sum(w > 0 for w in weights)} of {len(weighted)} members (no "
                 f"{', '.join(lacking)} here); their weights are renormalised")
        return [self.source(m, self.volume(run, m, settings, echo), settings, w)
                for m, w in zip(self.members, weights) if w > 0]

    def volume(self, run, member: Member, settings: InferenceSettings, echo=print):
        """The tomogram a member reads on a run, at the soup's voxel size (data/tomogram.py's run_volume)."""
        return run_volume(run, self.voxel_size, self.tomo_type(member, settings, run), echo, settings.voxel_size)

    def source(self, member: Member, volume, settings: InferenceSettings, weight: float = 1.0, stats=None) -> Source:
        """A member's input: its predictor, its volume normalised as it was trained (or with `stats`)."""
        stats = stats or normalisation_stats(volume, member.manifest.normalisation_method)
        return Source(self.predictor(member, settings), volume, weight, stats)

    def tiling(self, shape, settings: InferenceSettings) -> Tiling:
        """How a run of `shape` is cut into windows: for all the soup's members, whichever of them run on it, so
        that each member's heatmap is the same in the soup search (one member at a time) as in `pick` (all
        together). It must be for members with instance norms: they take their statistics over the window, so
        their heatmaps depend on the window's shape, not only at the borders."""
        unets = [m.config for m in self.members] if settings.window is None else []  # cubes need none
        return settings.tiling(shape, unets, len(self.members))

    def stream(self, sources: list[Source], settings: InferenceSettings, progress=None, dtype=np.float16,
               on_device: bool = False, tiling: Tiling | None = None):
        """The joined heatmap of `sources` as `Chunk`s (windows.stream_heatmaps); `tiling`: the run's, if the
        caller has it already (`self.tiling`)."""
        tiling = tiling or self.tiling(sources[0].volume.shape, settings)
        return stream_heatmaps(sources, len(self.classes), tiling, settings.batch_size, progress=progress,
                               dtype=dtype, device=settings.device, on_device=on_device)

    def peak_stream(self, shape, settings: InferenceSettings, thresholds=None) -> PeakStream:
        """The peak search the stream's chunks feed, where the heatmap is: scipy's filters on a CPU, a max-pool
        on a GPU (`stream_candidates` hands it the device's planes, and only the peaks cross to the host)."""
        return PeakStream(self.classes, self.voxel_size, self.thresholds if thresholds is None else thresholds,
                          shape, self.nms_scale)

    def stream_candidates(self, sources: list[Source], settings: InferenceSettings, thresholds, progress=None,
                          on_chunk=None, tiling: Tiling | None = None) -> dict:
        """Every peak above `thresholds` of a run's `inputs`, {class: ((N, 3) Å (x, y, z), (N,) scores)}, before
        cross-class suppression (`cut` makes the picks from them). Streamed in slabs so that neither the tomogram nor
        the heatmap is ever held whole; `on_chunk(chunk)` sees every heatmap chunk too."""
        peaks = self.peak_stream(sources[0].volume.shape, settings, thresholds)
        for chunk in self.stream(sources, settings, progress, on_device=not settings.on_cpu, tiling=tiling):
            peaks.add(*chunk)
            if on_chunk is not None:
                on_chunk(chunk)
        grid = getattr(sources[0].volume, "voxel_size", self.voxel_size)  # 10.000 Å read as the soup's 10.012
        return on_grid(peaks.picks(), grid / self.voxel_size)

    def cut(self, candidates: dict, thresholds: dict | None = None, one: bool = False) -> dict:
        """The picks among candidate peaks: above the thresholds (the soup's by default), then suppression (one
        particle, one class with `one`: overlap.one_class)."""
        return cut_picks(candidates, self.classes, self.thresholds if thresholds is None else thresholds,
                         self.overlap, one)

    # ---- whole heatmaps: what the soup search and validation cache ---------------------------------------------

    def member_heatmaps(self, run, settings: InferenceSettings, echo=print, progress=None) -> list:
        """Per member, its whole (C, Z, Y, X) float16 heatmap of the run, or None where it cannot run here;
        `progress(n)`: called as each n windows are done."""
        have = run_tomo_types(run)
        out = []
        for member in self.members:
            tomo_type = self.tomo_type(member, settings, run)
            try:
                if tomo_type is None or tomo_type not in have:
                    raise SoupError(f"run {run.name}: no '{self.tomo_type(member, settings)}' tomogram")
                volume = self.volume(run, member, settings, echo)
            except SoupError as err:
                echo(f"{err}; member {member.manifest.name} left out on this run")
                out.append(None)
                continue
            out.append(self.heatmap(volume, settings, member=member, progress=progress).astype(np.float16))
        return out

    def heatmap(self, volume, settings: InferenceSettings, stats=None, member: Member | None = None,
                tiling: Tiling | None = None, progress=None) -> np.ndarray:
        """The whole (C, Z, Y, X) float32 heatmap of one member (the first by default) on `volume`; `stats`:
        (mean, std) to normalise with, or None to take them from the volume; `tiling`: the run's (`self.tiling`'s
        by default), as `stream` takes it; `progress(n)`: called as each n windows are done."""
        member = member or self.members[0]
        source = self.source(member, volume, settings, stats=stats)
        tiling = tiling or self.tiling(volume.shape, settings)
        return predict_volume(source.predict_batch, volume, len(self.classes), tiling, settings.batch_size,
                              source.stats, settings.device, progress)

    def picks(self, heatmap: np.ndarray, thresholds=None, overlap: float | None = None) -> dict:
        """Picks from a whole blended heatmap, cut and suppressed as `cut` cuts and suppresses streamed candidates."""
        picks = heatmaps_to_picks(heatmap, self.classes, self.voxel_size,
                                  self.thresholds if thresholds is None else thresholds, self.nms_scale)
        return suppress_overlaps(picks, self.classes, self.overlap if overlap is None else overlap)


def on_grid(picks: dict, factor: float) -> dict:
    """Picks placed in Å with the soup's voxel size, moved to a grid `factor` times that (the array's own)."""
    if factor == 1.0:
        return picks
    return {name: (positions * factor, scores) for name, (positions, scores) in picks.items()}


def blend(heatmaps: list, weights) -> np.ndarray | None:
    """The weighted mean of cached member heatmaps (None: that member cannot run on the run), with `run_weights`'
    renormalisation; None when no member can run."""
    used = run_weights(weights, [h is not None for h in heatmaps])
    if used is None:
        return None
    return sum(h.astype(np.float32) * np.float32(w) for h, w in zip(heatmaps, used) if w > 0)
