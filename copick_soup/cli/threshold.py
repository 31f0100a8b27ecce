"""`copick-soup threshold`: new per-class thresholds on picks already made, in seconds, without the networks."""

import click

from copick_soup.cli.util import config_option, pick_opts, reports_errors, run_list, runs_option


@click.command("threshold", no_args_is_help=True)
@config_option
@runs_option
@click.option("--soup", default="default", show_default=True,
              help="The soup that made the picks (its classes, thresholds and cross-class suppression).")
@click.option("--user-id", default="copick-soup", show_default=True, help="User ID of the picks to rewrite.")
@click.option("--session-id", default="0", show_default=True, help="Session ID of the picks to rewrite.")
@click.option("--set", "thresholds", multiple=True, metavar="CLASS=VALUE",
              help="A class's new threshold, 0-1 (repeat or comma-separate); other classes keep the soup's.")
@click.option("--objects", multiple=True, metavar="NAME", help="Rewrite only these classes' picks.")
@click.option("--class-map", multiple=True, metavar="SOUP=OBJECT", help="As for pick.")
@click.option("--calibrate", type=click.Choice(["none", "valley", "valley-pooled"]), default="none", show_default=True,
              help="valley: each run's thresholds from its own peak scores (the valley between the background's "
                   "hump and the particles'); valley-pooled: one valley over the chosen runs' scores together (runs "
                   "from one microscope and one setting). No labels needed; --set classes are kept as given.")
@click.option("--one-class", is_flag=True, help="As for pick: one particle, one class.")
@reports_errors
def threshold(config, run_names, legacy_run_names, soup, user_id, session_id, thresholds, objects, class_map,
              calibrate, one_class):
    """Rewrite picks at new per-class thresholds from the candidate peaks `pick` kept (user USER-candidates),
    without running any network: the same points a new pick at those thresholds would give. The picks of this user
    and session are replaced; that is what the command is for.

    To choose a threshold, try a few on runs you have annotated and score them (`copick-soup score`): a lower
    threshold finds more particles and more false ones.

    \b
    Example:
      copick-soup threshold -c copick.json --set ribosome=0.4 --set thyroglobulin=0.3
    """
    # deferred: the pipeline loads only when the command runs, not when copick lists its plugins
    from copick_soup.data.project import open_project, select_runs
    from copick_soup.errors import SoupError
    from copick_soup.model.manifest import SoupManifest
    from copick_soup.pick import (
        CANDIDATE_FLOOR,
        pooled_valley,
        resolve_classes,
        rethreshold_run,
        run_batch,
        summary_table,
    )

    manifest = SoupManifest.read(soup)
    opts = pick_opts(manifest.classes, user_id, session_id, class_map, objects, thresholds,
                     calibrate=calibrate, one_class=one_class)
    low = {k: v for k, v in opts.thresholds if v < CANDIDATE_FLOOR}
    if low:
        name, value = next(iter(low.items()))
        raise SoupError(f"--set {name}={value:g}: below {CANDIDATE_FLOOR:g}, the score pick keeps candidates from; "
                        f"pick again with --threshold {name}={value:g}")
    root = open_project(config)
    opts = resolve_classes(root, manifest.classes, opts, click.echo)
    values = {**manifest.thresholds, **dict(opts.thresholds)}
    runs = select_runs(root, run_list(run_names, legacy_run_names))
    if calibrate == "valley-pooled":
        values = pooled_valley(runs, manifest.classes, values, opts, click.echo)
    results = run_batch(runs, lambda run, _: rethreshold_run(run, manifest.classes, values, manifest.overlap, opts,
                                                             click.echo), click.echo)
    click.echo(summary_table(results, manifest.classes))
    failed = [r["run"] for r in results if r["status"] == "failed"]
    if failed:
        raise SoupError(f"{len(failed)} of {len(results)} run(s) failed: {', '.join(failed)}")
