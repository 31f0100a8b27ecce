"""Adaptation without labels: fine-tune a soup on a lab's unannotated runs from its own confident picks.

Self-training. The soup picks each run with half its thresholds; a pick scoring at least `confidence` of the way
from its class threshold to 1 becomes a pseudo-label, and the picks in between are of unknown label: the loss
skips a ball of the class radius around each (neither particle nor background), so that particles the soup is
unsure of are not taught as background. Every member is then fine-tuned for a few hundred steps at a low learning
rate on those runs, without hard negatives (they would be mined against labels that are partly wrong). The
adapted soup keeps the original's weights and thresholds. `benchmarks/generalization.py --adapt` measures it:
members trained on one engine, adapted on the other's unannotated runs, scored on that engine's held-out runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from copick_soup.data import angstrom_to_voxel
from copick_soup.data.project import open_project, select_runs
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.errors import SoupError
from copick_soup.model.checkpoint import copy_member
from copick_soup.model.manifest import SoupMember
from copick_soup.train.config import TrainConfig, override
from copick_soup.train.dataset import TrainVolume, load_image
from copick_soup.train.loop import train_member
from copick_soup.train.recipe import publish_member, refuse_earlier_training

DEFAULTS = dict(steps=300, lr=2e-4, warmup=10, p_hard=0.0)


@dataclass(frozen=True)
class PseudoLabels:
    run: str
    confident: list  # per class, (N, 3) Å (x, y, z): taught as particles
    unsure: list  # per class, (N, 3) Å (x, y, z): no loss around them

    def counts(self) -> list[int]:
        return [len(p) for p in self.confident]


def cut_level(threshold: float, confidence: float) -> float:
    """The score a pick needs to become a pseudo-label: `confidence` of the way from the class threshold to 1."""
    return threshold + confidence * (1.0 - threshold)


def pseudo_labels(ensemble: Ensemble, run, settings: InferenceSettings, confidence: float,
                  echo=print) -> PseudoLabels:
    """The soup's picks on one run, split into confident ones and unsure ones."""
    return split_picks(candidates(ensemble, run, settings, echo), ensemble, confidence, run.name)


def candidates(ensemble: Ensemble, run, settings: InferenceSettings, echo=print) -> dict:
    """The soup's picks on one run at half its thresholds: {class: ((N, 3) Å (x, y, z), (N,) scores)}."""
    low = {name: t / 2 for name, t in ensemble.thresholds.items()}
    return replace(ensemble, thresholds=low).stream_picks(ensemble.inputs(run, settings, echo), settings)


def split_picks(picks: dict, ensemble: Ensemble, confidence: float, run_name: str) -> PseudoLabels:
    confident, unsure = [], []
    for c in ensemble.classes:
        xyz, scores = picks[c.name]
        sure = scores >= cut_level(ensemble.thresholds[c.name], confidence)
        confident.append(xyz[sure])
        unsure.append(xyz[~sure])
    return PseudoLabels(run_name, confident, unsure)


def check_adapt_options(steps: int, confidence: float) -> None:
    if not 0 <= confidence < 1:
        raise SoupError(f"--confidence {confidence:g}: must be in [0, 1) (0: the soup's own picks; nearer 1: fewer, "
                        f"surer pseudo-labels)")
    if steps < 1:
        raise SoupError(f"--steps {steps}: must be at least 1")


def adapt_soup(config, soup, run_names, out, settings: InferenceSettings | None = None, steps: int = 300,
               confidence: float = 0.5, overrides: dict | None = None, resume: bool = False,
               echo=print) -> Path:
    """Fine-tune every member of `soup` on the runs' pseudo-labels; writes OUT/soup.json and returns its path."""
    settings = (settings or InferenceSettings()).resolved()
    check_adapt_options(steps, confidence)
    out = Path(out)
    refuse_earlier_training(out, resume)
    root = open_project(config)
    runs = select_runs(root, run_names)
    ensemble = Ensemble.load(soup, settings.device)
    labels = {}
    for run in runs:
        try:
            labels[run.name] = pseudo_labels(ensemble, run, settings, confidence, echo)
        except SoupError as err:
            echo(f"{err}; run {run.name} left out")
            continue
        counts = ", ".join(f"{c.name} {n}" for c, n in zip(ensemble.classes, labels[run.name].counts()))
        echo(f"run {run.name}: pseudo-labels {counts}")
    if not any(sum(p.counts()) for p in labels.values()):
        raise SoupError(f"no pick of the soup reaches --confidence {confidence:g} on run(s) "
                        f"{', '.join(r.name for r in runs)}; nothing to adapt to (try a lower --confidence)")
    adapted = []
    for member in ensemble.members:
        adapted.append(adapt_member(member, ensemble, settings, runs, labels, out, steps, confidence, overrides,
                                    resume, echo))
    manifest = ensemble.manifest
    validation = dict(manifest.validation, adapted=dict(source=manifest.where, runs=sorted(labels), steps=steps,
                                                        confidence=confidence))
    return replace(manifest, name=out.name, members=[SoupMember(p, w.weight) for p, w in
                                                     zip(adapted, manifest.members)],
                   validation=validation, path=None).write(out / "soup.json")


def adapt_member(member, ensemble: Ensemble, settings, runs, labels, out: Path, steps, confidence, overrides,
                 resume, echo) -> Path:
    """One member fine-tuned on the pseudo-labels of the runs that hold its tomogram type (or itself unchanged,
    where none does)."""
    manifest = member.manifest
    volumes = []
    for run in runs:
        loaded, tomo_type = None, ensemble.tomo_type(member, settings, run)
        if run.name in labels and tomo_type:
            loaded = load_image(run, manifest.voxel_size, tomo_type, manifest.normalisation_method, echo)
        if loaded is not None:
            (image, grid), found = loaded, labels[run.name]
            volumes.append(TrainVolume(run.name, tomo_type, image,
                                       [angstrom_to_voxel(p, grid) for p in found.confident],
                                       [angstrom_to_voxel(p, grid) for p in found.unsure]))
    if not volumes:
        echo(f"{manifest.name}: no run has its '{manifest.tomo_type}' tomograms; kept as it was")
        return copy_member(manifest.path, out)  # copied, so that the adapted soup is one self-contained folder
    cfg = override(TrainConfig(**{**manifest.training_config(), "variant": manifest.variant}),
                   dict(DEFAULTS, steps=steps, val_every=steps, normalisation=manifest.normalisation_method,
                        device=settings.device), where="adapt")
    cfg = override(cfg, overrides or {})
    provenance = dict(recipe="adapt", init=str(manifest.path), adapt_runs=[v.run for v in volumes],
                      confidence=confidence, pseudo_labels={v.run: labels[v.run].counts() for v in volumes})
    echo(f"{manifest.name}: adapting on {len(volumes)} run(s), {steps} steps")
    best = train_member(cfg, ensemble.classes, volumes, [], out / "stages" / manifest.name, manifest.voxel_size,
                        manifest.tomo_type, init=manifest.path, resume=resume, provenance=provenance, echo=echo)
    return publish_member(best, out / manifest.name)
