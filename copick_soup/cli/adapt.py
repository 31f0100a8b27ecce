"""`copick-soup adapt` (and the plugin `copick training soup-adapt`): fine-tune a soup on unannotated runs."""

import click

from copick_soup.cli.util import (
    config_option,
    inference_options,
    inference_settings,
    reports_errors,
    run_list,
    runs_option,
)


@click.command("adapt", no_args_is_help=True)
@config_option
@runs_option
@click.option("--soup", default="default", show_default=True,
              help="Soup to adapt: a shipped name, a soup.json, a folder of members or one member.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for the adapted soup.")
@click.option("--steps", default=300, show_default=True, type=int, help="Fine-tuning steps per member.")
@click.option("--confidence", default=0.5, show_default=True, type=float,
              help="How sure a pick must be to become a pseudo-label: this share of the way from its class "
                   "threshold to 1.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a training setting, e.g. --set lr=1e-4 (see TrainConfig).")
@click.option("--resume", is_flag=True, help="Continue each member from its last saved state in OUT.")
@inference_options
@reports_errors
def adapt(config, run_names, legacy_run_names, soup, out, steps, confidence, settings, resume, **inference):
    """EXPERIMENTAL, measured harmful: fine-tune a soup on *unannotated* runs from its own confident picks.

    On tomograms from another simulator, 300 steps of it collapsed the members (benchmarks/results/
    generalization.md); a flaw behind that is fixed but the fix is not yet measured. Score the adapted soup
    against the original on runs you annotate before using it.

    \b
    Example:
      copick-soup adapt -c lab.json -r TS_1 -r TS_2 --out soups/adapted
      copick-soup pick -c lab.json --soup soups/adapted
    """
    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.train.adapt import adapt_soup
    from copick_soup.train.config import parse_overrides

    click.echo("warning: copick-soup adapt is experimental; on another simulator's tomograms it made the soup "
               "worse (benchmarks/results/generalization.md)", err=True)
    path = adapt_soup(config, soup, run_list(run_names, legacy_run_names), out, inference_settings(**inference), steps,
                      confidence, parse_overrides(settings), resume, echo=click.echo)
    click.echo(f"soup: {path}")


soup_adapt = click.Command("soup-adapt", params=adapt.params, callback=adapt.callback, help=adapt.help,
                           no_args_is_help=True)
