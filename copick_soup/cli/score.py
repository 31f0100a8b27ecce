"""`copick-soup score` (and the plugin `copick evaluation soup-score`): the CZII metric over a project."""

import click

from copick_soup.cli.util import config_option, reports_errors, run_list, runs_option, split_names


@click.command("score", no_args_is_help=True)
@config_option
@click.option("--reference-user", default="curation", show_default=True,
              help="User ID of the ground truth, or USER/SESSION (portal annotations: data-portal/*).")
@click.option("--reference-session", default="0", show_default=True,
              help="Session ID of the ground truth; '*' or a glob: every session it matches.")
@click.option("--candidate-user", required=True, help="User ID of the picks to score.")
@click.option("--candidate-session", default=None, help="Session ID of the picks to score. Default: any.")
@runs_option
@click.option("--objects", "object_names", multiple=True, metavar="NAME",
              help="Score only these classes (repeat or comma-separate). Default: every particle class.")
@click.option("--beta", default=4.0, show_default=True, type=click.FloatRange(0, min_open=True),
              help="F-beta's beta (the CZII metric uses 4).")
@click.option("--confusion", is_flag=True,
              help="Also show what each class's particles were picked as (misnamed, missed) and stray picks.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON instead of a table.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Also draw per-class precision, recall and F4, and F4 against threshold, into this PNG.")
@reports_errors
def score(config, reference_user, reference_session, candidate_user, candidate_session, run_names, legacy_run_names,
          object_names, beta, confusion, as_json, plot):
    """Score picks against ground truth with the CZII metric (per-class TP/FP/FN, F-beta, weighted mean).

    \b
    Example:
      copick-soup score -c copick.json --candidate-user copick-soup --candidate-session 0
    """
    import json

    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.data.project import open_project
    from copick_soup.ensemble.evaluate import project_pairs
    from copick_soup.metric.czii import confusion as confusion_of
    from copick_soup.metric.czii import score_picks

    root = open_project(config)
    runs, objects = run_list(run_names, legacy_run_names), split_names(object_names)
    classes, pairs = project_pairs(root, reference_user, candidate_user, reference_session, candidate_session,
                                   run_names=runs, object_names=objects)
    result = score_picks(pairs, classes, beta=beta)
    mixed = confusion_of(pairs, classes) if confusion else None
    if as_json:
        click.echo(json.dumps({**result.as_dict(), **({"confusion": mixed.as_dict()} if mixed else {})}, indent=2))
    else:
        click.echo(result.table() + (f"\n\n{mixed.table()}" if mixed else ""))
    if plot:
        from copick_soup.ensemble.evaluate import threshold_curves
        from copick_soup.ensemble.thresholds import THRESHOLDS
        from copick_soup.viz import save_score_plot

        curves = threshold_curves(root, reference_user, candidate_user, reference_session, candidate_session,
                                  runs, objects, beta)
        title = f"{candidate_user}/{candidate_session or '*'} against {reference_user}/{reference_session or '*'}"
        click.echo(f"plot: {save_score_plot(result, curves, THRESHOLDS, plot, title)}")


# The same command under the name copick's plugin groups show: `copick evaluation soup-score`.
soup_score = click.Command("soup-score", params=score.params, callback=score.callback, help=score.help,
                           no_args_is_help=True)
