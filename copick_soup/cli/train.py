"""`copick-soup train` (and the plugin `copick training soup-train`): recipes, or fine-tuning on a lab's runs."""

import click
from copick.cli.util import add_debug_option

from copick_soup.cli.util import reports_errors, split_names
from copick_soup.errors import SoupError


@click.command("train", no_args_is_help=True)
@click.option("--recipe", type=click.Path(dir_okay=False), help="Recipe YAML (configs/recipes/*.yaml).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for members and logs.")
@click.option("--pretrain-config", type=click.Path(dir_okay=False), help="Use this project for pretraining.")
@click.option("--finetune-config", type=click.Path(dir_okay=False), help="Use this project for fine-tuning.")
@click.option("--engine", default=None, metavar="ENGINE[+ENGINE...]",
              help="Simulate the recipe's phantoms with these engines instead of its own (blobs+sart: the "
                   "leave-one-engine-out fold without tilt).")
@click.option("-c", "--config", "config", envvar="COPICK_CONFIG", type=click.Path(dir_okay=False),
              help="Lab fine-tuning: the copick project with your annotated runs.")
@click.option("--init", default=None,
              help="Lab fine-tuning: start from this soup ('fast', 'default'), folder or member.")
@click.option("--train-runs", multiple=True, help="Lab fine-tuning: runs to train on (default: all but validation).")
@click.option("--val-runs", multiple=True, help="Lab fine-tuning: runs to validate on (default: the last run).")
@click.option("--picks-user", default="curation", show_default=True,
              help="User ID of the training picks, or USER/SESSION (portal annotations: data-portal/*).")
@click.option("--picks-session", default="0", show_default=True,
              help="Session ID of the training picks; '*' or a glob: every session it matches.")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="Override a training setting, e.g. --set steps=50 --set device=cuda (see TrainConfig).")
@click.option("--resume", is_flag=True, help="Continue each member from its last saved state in OUT.")
@add_debug_option
@reports_errors
def train(recipe, out, pretrain_config, finetune_config, engine, config, init, train_runs, val_runs, picks_user,
          picks_session, settings, resume):
    """Train soup members: a recipe (pretrain, then fine-tune), or fine-tune existing members on your runs.

    \b
    Examples:
      copick-soup train --recipe configs/recipes/cpu-demo.yaml --out members/cpu-demo
      copick-soup train --recipe configs/recipes/cpu-default.yaml --engine blobs+sart --out build/fold-tilt
      copick-soup train --config lab.json --init fast --train-runs TS_1,TS_2 --val-runs TS_3 --out lab-members
    """
    # deferred: the pipeline (and torch) loads only when the command runs, not when copick lists its plugins
    from copick_soup.train.config import parse_overrides

    overrides = parse_overrides(settings)
    if recipe and (config or init):
        raise SoupError("--recipe trains from a recipe; --config/--init fine-tune existing members: pick one")
    if engine and not recipe:
        raise SoupError("--engine chooses the simulator of a recipe's phantoms: give --recipe")
    if recipe:
        from copick_soup.train.recipe import load_recipe, run_recipe, with_engine

        loaded = with_engine(load_recipe(recipe), engine) if engine else load_recipe(recipe)
        members = run_recipe(loaded, out, pretrain_config, finetune_config, overrides, resume,
                             echo=click.echo)
    elif config and init:
        from copick_soup.model.manifest import member_paths
        from copick_soup.train.recipe import finetune_members

        members = finetune_members(config, member_paths(init), out, split_names(train_runs), split_names(val_runs),
                                   picks_user, picks_session, overrides, resume, echo=click.echo)
    else:
        raise SoupError("give --recipe, or --config with --init to fine-tune existing members")
    for path in members:
        click.echo(f"member: {path}")


soup_train = click.Command("soup-train", params=train.params, callback=train.callback, help=train.help,
                           no_args_is_help=True)
