"""`copick-soup demo`: the job `make demo` runs."""

import click

from copick_soup.cli.util import parse_shape, reports_errors


@click.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the demo project and picture; an earlier demo project there is reused.")
@click.option("--runs", default=2, show_default=True, type=click.IntRange(1), help="Runs to simulate.")
@click.option("--shape", default="96,256,256", show_default=True, help="Tomogram size Z,Y,X or 'full'.")
@click.option("--seed", default=0, show_default=True, type=int)
@reports_errors
def demo(out, runs, shape, seed):
    """Simulate a small project, score picks against its ground truth and draw them on tomogram slices."""
    from copick_soup.demo import run_demo

    run_demo(out, runs=runs, shape=parse_shape(shape), seed=seed, echo=click.echo)
