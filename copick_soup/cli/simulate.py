"""`copick-soup simulate`: write a copick project of phantom tomograms with ground truth."""

import click

from copick_soup.cli.util import parse_shape, reports_errors, split_names


@click.command("simulate", no_args_is_help=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="New project directory.")
@click.option("--runs", "n_runs", default=2, show_default=True, type=click.IntRange(1), help="Number of runs.")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed; same seed, same project.")
@click.option("--shape", default="64,128,128", show_default=True,
              help="Tomogram size Z,Y,X in voxels, or 'full' for the CZII 184,630,630.")
@click.option("--profile", default="experimental", show_default=True,
              type=click.Choice(["simulated", "experimental"]),
              help="'simulated' resembles the competition's simulated runs, 'experimental' its real ones.")
@click.option("--crowding", default=1.0, show_default=True, type=click.FloatRange(0.0, 20.0),
              help="Multiplies every class's particle count.")
@click.option("--balance", is_flag=True,
              help="Raise rare classes to the median class's count (pretraining data; the config keeps real counts).")
@click.option("--objects-from", type=click.Path(dir_okay=False), default=None,
              help="Take the pickable objects from this copick config instead of the six CZII targets.")
@click.option("--tomo-types", default="wbp,denoised,ctfdeconvolved", show_default=True,
              help="Tomogram types to write (comma-separated).")
@click.option("--engine", default="blobs", show_default=True, metavar="ENGINE[+ENGINE...]",
              help="blobs: particles as Gaussian blobs, imaged in Fourier space (fast). tilt: particles as densities "
                   "from atomic models, a real-space tilt series (dose-symmetric, exposure filter, defocus gradient) "
                   "and weighted back-projection. sart: pseudo-atomic models assembled by each complex's symmetry, "
                   "a Poisson-counted tilt series and SIRT, non-local means for 'denoised' (needs scikit-image: "
                   "the [sim] extra). Several joined by + alternate run by run (blobs+tilt+sart); mixed is "
                   "blobs+tilt.")
@reports_errors
def simulate(out, n_runs, seed, shape, profile, crowding, balance, objects_from, tomo_types, engine):
    """Simulate phantom runs (CTF, missing wedge, noise, WBP) into a new copick project.

    \b
    Examples:
      copick-soup simulate --out phantoms --runs 4 --shape full --profile experimental
      copick-soup simulate --out tilted --runs 4 --shape full --engine tilt
      copick-soup simulate --out foreign --runs 8 --shape 96,256,256 --engine sart
    """
    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.simulate import simulate_project

    objects = None
    if objects_from:
        from copick_soup.data.project import open_project

        objects = [obj.model_dump() for obj in open_project(objects_from).config.pickable_objects]
    config = simulate_project(out, runs=n_runs, seed=seed, shape=parse_shape(shape), profile=profile,
                              objects=objects, crowding=crowding, balance=balance,
                              tomo_types=split_names([tomo_types]), engine=engine,
                              progress=lambda name: click.echo(f"simulated {name}"))
    click.echo(f"wrote {n_runs} run(s) to {config}")
