"""`copick-soup demo`: the job `make demo` runs."""

import click

from copick_soup.cli.util import parse_shape, reports_errors


@click.command("demo")
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False),
              help="Directory for the demo project and picture; an earlier demo project there is reused.")
@click.option("--runs", default=2, show_default=True, type=click.IntRange(1), help="Runs to simulate.")
@click.option("--shape", default="96,256,256", show_default=True, help="Tomogram size Z,Y,X or 'full'.")
@click.option("--seed", default=7, show_default=True, type=int)
@click.option("--soup", default="default", show_default=True, help="Soup to pick with.")
@click.option("--tta", default=1, show_default=True, type=click.IntRange(1, 8))
@click.option("--device", default="auto", show_default=True)
@reports_errors
def demo(out, runs, shape, seed, soup, tta, device):
    """Simulate held-out runs, pick them with the default soup, score the picks and draw them on slices."""
    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.demo import run_demo
    from copick_soup.device import resolve_device

    run_demo(out, runs=runs, shape=parse_shape(shape), seed=seed, soup=soup, tta=tta,
             device=resolve_device(device), echo=click.echo)
