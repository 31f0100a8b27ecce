"""`copick-soup soup`: build a soup (member weights + per-class thresholds) from validation runs."""

import click

from copick_soup.cli.util import config_option, inference_options, inference_settings, reports_errors, split_names


@click.command("soup", no_args_is_help=True)
@config_option
@click.option("--members", multiple=True, required=True,
              help="Member manifests, folders of members or soups (repeatable).")
@click.option("--val-runs", multiple=True, required=True, help="Validation runs with ground truth (repeatable).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for soup.json.")
@click.option("--truth-user", default="curation", show_default=True,
              help="User ID of the ground truth, or USER/SESSION (portal annotations: data-portal/*).")
@click.option("--truth-session", default="0", show_default=True,
              help="Session ID of the ground truth; '*' or a glob: every session it matches.")
@click.option("--step", default=0.25, show_default=True, type=float, help="Weight grid step on the simplex.")
@click.option("--tolerance", default=0.01, show_default=True, type=float,
              help="Weightings within this F4 of the best count as ties; the most even of them is kept.")
@click.option("--class-map", multiple=True, metavar="SOUP=OBJECT",
              help="Read the truth of soup class SOUP from the project's object OBJECT (repeat or comma-separate). "
                   "Default: matched by name, then by identifier (GO/UniProt).")
@inference_options
@click.option("--weight-soup", default="none", show_default=True, type=click.Choice(["none", "uniform", "greedy"]),
              help="First average the weights of members that share variant and tomogram type (fold or seed "
                   "fine-tunes): uniformly, or greedily by validation F4.")
@reports_errors
def soup(config, members, val_runs, out, truth_user, truth_session, step, tolerance, class_map, weight_soup,
         **inference):
    """Search ensemble weights and per-class thresholds that maximise the CZII F4 on validation runs.

    Run the networks as `pick` will (--window, --tta, --amp ...): the thresholds are chosen on these heatmaps.

    \b
    Example:
      copick-soup soup -c copick.json --members members/ --val-runs TS_6_4 --out soups/mine
    """
    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.data.classes import parse_class_map
    from copick_soup.soup.build import build_soup

    path = build_soup(config, split_names(members), split_names(val_runs), out, inference_settings(**inference),
                      truth_user, truth_session, step, weight_soup=weight_soup, tolerance=tolerance, echo=click.echo,
                      class_map=parse_class_map(class_map))
    click.echo(f"soup: {path}")
