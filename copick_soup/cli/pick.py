"""`copick-soup pick` (and the plugin `copick inference soup-pick`): the main job."""

import click

from copick_soup.cli.util import pick_job, pick_options, reports_errors


class RunProgress:
    """A tqdm bar per run, counting windows; the picking code calls it without knowing about tqdm. `done` is
    called when the run is over (the batch bar counts it)."""

    def __init__(self, run_name: str, done=None):
        self.run_name, self.bar, self.done = run_name, None, done

    def __call__(self, n=None, start=None, close=False):
        from tqdm import tqdm

        if start is not None:
            self.bar = tqdm(total=start, desc=self.run_name, unit="window", leave=False, position=1)
        elif close:
            if self.bar is not None:
                self.bar.close()
            if self.done:
                self.done()
        elif self.bar is not None:
            self.bar.update(n)


class BatchProgress:
    """A bar over the runs with an ETA, above each run's bar of windows."""

    def __init__(self, total: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc="runs", unit="run", position=0) if total > 1 else None

    def __call__(self, run_name: str) -> RunProgress:
        return RunProgress(run_name, done=self.bar.update if self.bar else None)

    def close(self):
        if self.bar:
            self.bar.close()


@click.command("pick", no_args_is_help=True)
@pick_options
@reports_errors
def pick(**values):
    """Pick particles in copick runs with a soup of 3D U-Nets and write them back as copick picks.

    \b
    Example:
      copick-soup pick -c copick.json -r TS_5_4 --tta 4 --user-id copick-soup --session-id 0
    """
    # Deferred imports (here and in every command): torch and the pipeline load only when a command runs, not
    # when copick imports every plugin to list its commands.
    from copick_soup.data.project import open_project, select_runs
    from copick_soup.device import precision_choice
    from copick_soup.ensemble import Ensemble
    from copick_soup.ensemble.settings import RUNTIME_NAMES
    from copick_soup.errors import SoupError
    from copick_soup.pick import check_voxel_size, pick_runs, summary_table

    job = pick_job(values)
    settings, opts = job.settings, job.options
    root = open_project(job.config)
    ensemble = Ensemble.load(job.soup, settings.device)
    resampled = check_voxel_size(settings.voxel_size, ensemble)
    if resampled:
        click.echo(resampled)
    click.echo(f"soup '{ensemble.name}': {len(ensemble.members)} member(s) on {settings.device} "
               f"({RUNTIME_NAMES[settings.engine]}), TTA {settings.tta}\n"
               f"precision: {precision_choice(settings.amp, settings.device)}")
    int8 = [m.manifest.name for m in ensemble.members if m.manifest.int8]
    if int8:  # their quantisers decide their arithmetic, whatever the precision above says
        click.echo(f"INT8 member(s): {', '.join(int8)} ("
                   + ("integer kernels" if settings.engine == "openvino" else
                      "quantisers emulated in float by torch: slower than the float members they were made from")
                   + ")")
    progress = BatchProgress(len(select_runs(root, job.runs)))
    try:
        results = pick_runs(root, ensemble, job.runs, settings, opts, echo=click.echo, progress_factory=progress)
    finally:
        progress.close()
    click.echo(summary_table(results, ensemble.classes))
    failed = [r["run"] for r in results if r["status"] == "failed"]
    if failed:  # the exit status says a run failed; the others were picked all the same
        raise SoupError(f"{len(failed)} of {len(results)} run(s) failed: {', '.join(failed)}")
    if not any(r["processed"] for r in results):
        click.echo(f"nothing to do: every run already has picks by user '{opts.user_id}' session "
                   f"'{opts.session_id}' (--overwrite picks them again)")


soup_pick = click.Command("soup-pick", params=pick.params, callback=pick.callback, help=pick.help,
                          no_args_is_help=True)
