"""Simulated runs written out as a complete copick project, ground truth included."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from copick_soup.data.coords import voxel_to_angstrom
from copick_soup.errors import SoupError
from copick_soup.objects import TOMO_TYPES, VOXEL_SIZE, ParticleClass, classes_from_objects, czii_pickable_objects
from copick_soup.simulate.assemblies import architecture_for
from copick_soup.simulate.imaging import arbitrary_units, reconstruct
from copick_soup.simulate.phantom import DEFAULT_PER_TOMOGRAM, build_sample
from copick_soup.simulate.profiles import PROFILES, Conditions, sample_conditions
from copick_soup.simulate.pseudoatomic import build_pseudoatomic_sample
from copick_soup.simulate.sirt import derived_sart_types, require_skimage, sample_sart_conditions, tilt_series_sirt
from copick_soup.simulate.templated import build_templated_sample
from copick_soup.simulate.templates import load_templates, template_for
from copick_soup.simulate.tiltseries import derived_types, tilt_series_reconstruction

# `blobs`: particles as sums of Gaussian blobs, imaged in Fourier space (phantom.py, imaging.py).
# `tilt`: particles as densities computed from atomic models, a real-space tilt series, weighted back-projection
# (templated.py, tiltseries.py). Two physically different engines: a picker trained on one and scored on the
# other shows whether it learnt the particles or the simulator.
# `sart`: pseudo-atomic models assembled from each complex's architecture, Poisson-counted tilt series, SIRT
# (assemblies.py, pseudoatomic.py, sirt.py): a third engine that shares no choice with `tilt`, for held-out checks.
ENGINES = ("blobs", "tilt", "sart")
MIXED = "mixed"  # runs alternate between blobs and tilt: pretraining data that no one simulator dominates
MIXED_ENGINES = ("blobs", "tilt")  # what `mixed` alternates (the default soup's training engines)


def engine_names(engine: str) -> list[str]:
    """The engines a run list alternates through: one engine, `mixed` (blobs, tilt), or several joined by `+`
    (`blobs+sart`: even runs blobs, odd runs sart); an unknown name is a one-line error naming the choices."""
    names = list(MIXED_ENGINES) if engine == MIXED else engine.split("+")
    unknown = [n for n in names if n not in ENGINES]
    if unknown or len(set(names)) != len(names):
        raise SoupError(f"--engine: unknown or repeated engine in '{engine}'; choose one of {', '.join(ENGINES)}, "
                        f"several joined by + (blobs+sart), or {MIXED} (blobs+tilt)")
    return names

TRUTH_USER, TRUTH_SESSION = "curation", "0"


@dataclass
class SimulatedRun:
    tomograms: dict  # tomo type -> (Z, Y, X) float32
    picks: dict  # class name -> (N, 3) Å (x, y, z)
    conditions: Conditions
    engine_conditions: dict = field(default_factory=dict)  # an engine's own draws (sart), saved with `conditions`


@dataclass(frozen=True)
class Engine:
    """What a run is simulated with: the engine's name and, for `tilt`, each class's density template, for
    `sart`, each class's architecture."""

    name: str = "blobs"
    templates: dict | None = None  # class name -> Template
    distractors: tuple = ()  # Templates of unlabelled complexes
    architectures: dict | None = None  # class name -> assemblies.Architecture


def tilt_engine(objects: list[dict]) -> Engine:
    """The `tilt` engine for these pickable objects; a class without a density template is refused."""
    templates = load_templates()
    particles = {c.name: obj for c, obj in zip(classes_from_objects(objects), particle_objects(objects))}
    found = {name: template_for(obj, templates) for name, obj in particles.items()}
    missing = sorted(name for name, t in found.items() if t is None)
    if missing:
        raise SoupError(f"--engine tilt: no density template for {', '.join(missing)} (templates stand for PDB "
                        f"{', '.join(sorted(p for t in templates.values() for p in t.provenance['stands_for']))}; "
                        f"name one in the object's metadata.simulation.template, or use --engine blobs)")
    distractors = tuple(t for t in templates.values() if t.provenance["role"] == "distractor")
    return Engine("tilt", found, distractors)


def sart_engine(objects: list[dict]) -> Engine:
    """The `sart` engine for these pickable objects; a class of no known architecture, or a missing
    scikit-image, is refused."""
    particles = {c.name: obj for c, obj in zip(classes_from_objects(objects), particle_objects(objects))}
    found = {name: architecture_for(obj) for name, obj in particles.items()}
    missing = sorted(name for name, a in found.items() if a is None)
    if missing:
        known = ", ".join(f"{a.name} ({a.provenance['stands_for']})" for a in {id(a): a for a in found.values()
                                                                                if a}.values())
        raise SoupError(f"--engine sart: no architecture for {', '.join(missing)} (it builds "
                        f"{known or 'the six CZII targets'}; name one in the object's "
                        f"metadata.simulation.architecture, or use --engine blobs)")
    require_skimage()
    return Engine("sart", architectures=found)


def particle_objects(objects: list[dict]) -> list[dict]:
    """The objects `classes_from_objects` keeps, in its order (by label)."""
    kept = [o for o in objects if o.get("is_particle") and o.get("radius")]
    return sorted(kept, key=lambda o: int(o["label"]))


def simulate_run(shape, classes: list[ParticleClass], profile: str, rng: np.random.Generator,
                 voxel_size: float = VOXEL_SIZE, crowding: float = 1.0, tomo_types=TOMO_TYPES,
                 engine: Engine = Engine()) -> SimulatedRun:
    """One run in memory: tomograms of each type and the true particle centres in Å."""
    cond = sample_conditions(profile, rng, crowding)
    if engine.name == "sart":
        sc = sample_sart_conditions(profile, rng)
        sample = build_pseudoatomic_sample(tuple(shape), classes, engine.architectures, cond,
                                           dict(b_factor=sc.b_factor, ice_field=sc.ice_field,
                                                ice_crystals=sc.ice_crystals, carbon_edge=sc.carbon_edge),
                                           voxel_size, rng)
        recon = tilt_series_sirt(sample.density, sample.crystals, sample.slab, sc, voxel_size, rng)
        tomograms = {t: arbitrary_units(v, rng) for t, v in derived_sart_types(recon, sc, voxel_size,
                                                                               tomo_types).items()}
        picks = {name: voxel_to_angstrom(zyx, voxel_size) for name, zyx in sample.centers.items()}
        return SimulatedRun(tomograms, picks, cond, sc.as_dict())
    if engine.name == "tilt":
        sample = build_templated_sample(tuple(shape), classes, engine.templates, list(engine.distractors), cond,
                                        voxel_size, rng)
        wbp = tilt_series_reconstruction(sample.density, cond, voxel_size, rng)
        tomograms = {t: arbitrary_units(v, rng) for t, v in derived_types(wbp, cond, voxel_size, tomo_types).items()}
    else:
        sample = build_sample(tuple(shape), classes, cond, voxel_size, rng)
        tomograms = reconstruct(sample.density, cond, voxel_size, rng, tomo_types)
    picks = {name: voxel_to_angstrom(zyx, voxel_size) for name, zyx in sample.centers.items()}
    return SimulatedRun(tomograms, picks, cond)


def write_config(out: Path, objects: list[dict], name: str) -> Path:
    config = dict(
        name=name,
        description="Phantom tomograms simulated by copick-soup",
        version="0.2.0",
        config_type="filesystem",
        overlay_root="local://" + str((out / "overlay").resolve()),
        overlay_fs_args=dict(auto_mkdir=True),
        user_id="copick-soup",
        pickable_objects=objects,
    )
    path = out / "copick.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def simulate_project(out, runs: int = 2, seed: int = 0, shape=(64, 128, 128), profile: str = "experimental",
                     objects: list[dict] | None = None, crowding: float = 1.0, voxel_size: float = VOXEL_SIZE,
                     tomo_types=TOMO_TYPES, run_prefix: str | None = None, balance: bool = False,
                     engine: str = "blobs", progress=None) -> Path:
    """Write `runs` simulated runs to a new copick project in `out`; returns the path of its copick.json.

    Deterministic by `seed`: run i always draws from the i-th child of the seed, whatever `runs` is.
    Ground truth goes to user `curation`, session `0`. Refuses to write into an existing project.
    `balance` raises every class's count to at least the median class's (pretraining data only: a network
    sees few distinct copies of a rare class otherwise; the written config keeps the real counts).
    `engine`: `blobs`, `tilt`, `sart` (see ENGINES), several joined by `+` (run i from the (i mod n)-th), or
    `mixed` (blobs+tilt).
    """
    import copick

    out = Path(out)
    if profile not in PROFILES:
        raise SoupError(f"--profile: unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    if len(shape) != 3 or min(shape) < 16:
        raise SoupError(f"--shape: need three sizes Z,Y,X of at least 16 voxels, got {','.join(map(str, shape))}")
    if not crowding >= 0:
        raise SoupError(f"--crowding {crowding}: must be >= 0 (it multiplies every class's particle count)")
    unknown = [t for t in tomo_types if t not in TOMO_TYPES]
    if unknown or not tomo_types:
        raise SoupError(f"--tomo-types: the simulator writes {', '.join(TOMO_TYPES)}; got "
                        f"{', '.join(unknown) if unknown else 'none'}")
    names = engine_names(engine)
    objects = objects or czii_pickable_objects()
    tilted = tilt_engine(objects) if "tilt" in names else None
    sart = sart_engine(objects) if "sart" in names else None
    simulators = [{"blobs": Engine(), "tilt": tilted, "sart": sart}[n] for n in names]
    if tilted:
        largest = max(max(t.density.shape) for t in tilted.templates.values())
        if min(shape) < largest:
            raise SoupError(f"--shape: {','.join(map(str, shape))} is smaller than the largest particle's template "
                            f"({largest} voxels); the tilt engine needs every side at least that")
    if (out / "copick.json").exists():
        raise SoupError(f"{out / 'copick.json'} already exists; choose an empty --out directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SoupError(f"{out}: cannot create the project directory ({err.strerror})") from err

    classes = classes_from_objects(objects)
    simulated = balanced(classes) if balance else classes
    config_path = write_config(out, objects, name=f"copick-soup {profile} phantoms")
    root = copick.from_file(str(config_path))
    prefix = run_prefix or ("sim_" if profile == "simulated" else "exp_")
    provenance = dict(seed=seed, profile=profile, engine=engine, shape=list(shape), voxel_size=voxel_size,
                      balance=balance, runs={})
    if tilted:
        provenance["templates"] = {name: dict(template=t.name, structure=t.provenance["structure"],
                                              source=t.provenance["repository"], licence=t.provenance["licence"])
                                   for name, t in tilted.templates.items()}
    if sart:
        provenance["architectures"] = {name: dict(model=a.name, **a.provenance)
                                       for name, a in sart.architectures.items()}

    for i, child in enumerate(np.random.SeedSequence(seed).spawn(runs)):
        name = f"{prefix}{i:03d}"
        simulator = simulators[i % len(simulators)]
        sim = simulate_run(shape, simulated, profile, np.random.default_rng(child), voxel_size, crowding, tomo_types,
                           simulator)
        write_run(root, name, sim, voxel_size)
        provenance["runs"][name] = dict(engine=simulator.name,
                                        conditions={**sim.conditions.as_dict(), **sim.engine_conditions},
                                        counts={k: len(v) for k, v in sim.picks.items()})
        if progress:
            progress(name)
    (out / "simulation.json").write_text(json.dumps(provenance, indent=2))
    return config_path


def balanced(classes: list[ParticleClass]) -> list[ParticleClass]:
    """Copies of the classes with `per_tomogram` raised to at least the median over the classes."""
    counts = [c.simulation.get("per_tomogram", DEFAULT_PER_TOMOGRAM) for c in classes]
    floor = float(np.median(counts))
    return [replace(c, simulation={**c.simulation, "per_tomogram": max(n, floor)}) for c, n in zip(classes, counts)]


def write_run(root, name: str, sim: SimulatedRun, voxel_size: float) -> None:
    """Store one simulated run's tomograms and ground-truth picks through copick's API."""
    run = root.new_run(name)
    spacing = run.new_voxel_spacing(voxel_size)
    for tomo_type, volume in sim.tomograms.items():
        spacing.new_tomogram(tomo_type).from_numpy(volume)
    for obj_name, positions in sim.picks.items():
        picks = run.new_picks(object_name=obj_name, session_id=TRUTH_SESSION, user_id=TRUTH_USER)
        picks.from_numpy(positions)
