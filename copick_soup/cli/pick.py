"""`copick-soup pick` (and the plugin `copick inference soup-pick`): the main job."""

import click

from copick_soup.cli.util import config_option, reports_errors, runs_option, split_names


class RunProgress:
    """A tqdm bar per run, counting windows; the picking code calls it without knowing about tqdm."""

    def __init__(self, run_name: str):
        self.run_name, self.bar = run_name, None

    def __call__(self, n=None, start=None, close=False):
        from tqdm import tqdm

        if start is not None:
            self.bar = tqdm(total=start, desc=self.run_name, unit="window", leave=False)
        elif close and self.bar is not None:
            self.bar.close()
        elif self.bar is not None:
            self.bar.update(n)


@click.command("pick", no_args_is_help=True)
@config_option
@click.option("--soup", default="default", show_default=True,
              help="A shipped soup's name, a soup.json, a folder of members, or one member manifest.")
@runs_option
@click.option("--tomo-type", default=None, help="Read this tomogram type with every member (default: each "
              "member's own type; members whose type a run lacks are left out).")
@click.option("--voxel-size", default=None, type=float, help="Voxel size in Å (default: the soup's, 10.012 for "
              "the default soup). Runs at another size are resampled.")
@click.option("--user-id", default="copick-soup", show_default=True, help="User ID of the written picks.")
@click.option("--session-id", default="0", show_default=True, help="Session ID of the written picks.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--tta", default=1, show_default=True, type=click.IntRange(1, 8), help="Test-time augmentation views.")
@click.option("--window", default=64, show_default=True, type=int, help="Sliding-window side in voxels.")
@click.option("--overlap", default=0.25, show_default=True, type=click.FloatRange(0.0, 0.9),
              help="Fraction of a window its neighbours share: more is smoother, with more windows.")
@click.option("--batch-size", default=None, type=click.IntRange(1),
              help="Windows per network call.  [default: 1 on a CPU, 4 on a GPU]")
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "none", "bf16", "fp16"]),
              help="Autocast precision; auto: bf16 where the device computes it natively, else float32 on CPU.")
@click.option("--overwrite", is_flag=True, help="Replace picks that already exist for this user and session.")
@click.option("--save-heatmaps", is_flag=True, help="Also store the ensemble heatmaps as copick segmentations.")
@reports_errors
def pick(config, soup, run_names, tomo_type, voxel_size, user_id, session_id, device, tta, window, overlap,
         batch_size, amp, overwrite, save_heatmaps):
    """Pick particles in copick runs with a soup of 3D U-Nets and write them back as copick picks.

    \b
    Example:
      copick-soup pick -c copick.json --runs TS_5_4 --tta 4 --user-id copick-soup --session-id 0
    """
    from copick_soup.data import open_project
    from copick_soup.errors import SoupError
    from copick_soup.infer.pick import PickOptions, pick_runs, summary_table
    from copick_soup.soup.manifest import load_soup
    from copick_soup.train.loop import amp_dtype, precision_name, resolve_device

    root = open_project(config)
    device = resolve_device(device)
    loaded = load_soup(soup, device)
    if voxel_size is not None and abs(voxel_size - loaded.voxel_size) > 1e-3:
        raise SoupError(f"--voxel-size {voxel_size:g}: soup '{loaded.name}' was trained at {loaded.voxel_size:g} Å; "
                        f"runs are resampled to it, so leave --voxel-size out or pass {loaded.voxel_size:g}")
    opts = PickOptions(user_id=user_id, session_id=session_id, tomo_type=tomo_type, tta=tta, window=window,
                       overlap=overlap, batch_size=batch_size, device=device, amp=amp, overwrite=overwrite,
                       save_heatmaps=save_heatmaps)
    click.echo(f"soup '{loaded.name}': {len(loaded.members)} member(s) on {device} "
               f"({precision_name(amp_dtype(amp, device))}), TTA {tta}")
    results = pick_runs(root, loaded, split_names(run_names), opts, echo=click.echo, progress_factory=RunProgress)
    click.echo(summary_table(results, loaded.classes))
    if not any(r["processed"] for r in results):
        raise SoupError("no run was picked")


soup_pick = click.Command("soup-pick", params=pick.params, callback=pick.callback, help=pick.help,
                          no_args_is_help=True)
