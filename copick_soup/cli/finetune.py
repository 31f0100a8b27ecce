"""`copick-soup finetune` (and the plugin `copick training soup-finetune`): a lab's path in one command."""

import click

from copick_soup.cli.util import config_option, reports_errors, split_names


@click.command("finetune", no_args_is_help=True)
@config_option
@click.option("--train-runs", multiple=True, required=True, help="Annotated runs to train on (repeatable).")
@click.option("--val-runs", multiple=True, required=True,
              help="Annotated runs to validate on and search the soup with (repeatable); none may train.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for the new soup (soup.json, members/); pick with --soup OUT.")
@click.option("--init", default="fast", show_default=True,
              help="The soup to start from: a shipped soup's name, a soup.json or a folder. `fast` (the tiny "
                   "denoised member) fine-tunes in 2 minutes and scored higher on a foreign engine than `default`.")
@click.option("--members", "member_names", multiple=True, metavar="NAME",
              help="Fine-tune only these members of the init soup (repeat or comma-separate). Default: every member "
                   "the init soup weighs whose tomogram type the training runs hold.")
@click.option("--steps", default=None, type=click.IntRange(1),
              help="Training steps per member.  [default: 300]")
@click.option("--budget", default=None, type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Refuse, before any work, a plan expected to take longer than this.")
@click.option("--picks-user", default="curation", show_default=True,
              help="User ID of the annotations, or USER/SESSION (portal annotations: data-portal/*).")
@click.option("--picks-session", default="0", show_default=True,
              help="Session ID of the annotations; '*' or a glob: every session it matches.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a fine-tuning setting, e.g. --set lr=1e-4 --set train_layers=all (see TrainConfig).")
@reports_errors
def finetune(config, train_runs, val_runs, out, init, member_names, steps, budget, picks_user, picks_session,
             settings):
    """Fine-tune a soup's members on your annotated runs and search the new soup, in one command.

    It prints its plan first (members kept and left out, steps, the expected time per phase, from rates measured
    on this machine), then works under one progress bar. The soup it writes is picked with --soup OUT.

    \b
    Example:
      copick-soup finetune -c lab.json --train-runs TS_1,TS_2,TS_3 --val-runs TS_4 --out soups/lab --budget 10
      copick-soup pick -c lab.json --soup soups/lab
    """
    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.finetune import finetune_soup
    from copick_soup.train.config import parse_overrides

    soup = finetune_soup(config, init, out, split_names(train_runs), split_names(val_runs), picks_user,
                         picks_session, steps, split_names(member_names), budget,
                         overrides=parse_overrides(settings), echo=click.echo)
    click.echo(f"soup: {soup}  (pick with --soup {out})")


soup_finetune = click.Command("soup-finetune", params=finetune.params, callback=finetune.callback,
                              help=finetune.help, no_args_is_help=True)
