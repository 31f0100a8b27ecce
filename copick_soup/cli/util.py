"""Options and error handling shared by the click commands, the copick plugin and the Ray driver.

Options are declared once here, so `copick-soup pick`, `copick inference soup-pick` and `python -m ray_jobs.pick`
take the same options with the same defaults by construction, and their values become one `PickJob` here
(`pick_job`), so that no command names them again. Nothing heavy is imported at the top of this module
or of any `cli` module: copick imports every plugin on every `copick` call, so torch and the pipeline are imported
inside the command bodies.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import click
from copick.cli.util import add_debug_option, add_deprecated_run_alias, add_run_names_option, resolve_run_names

from copick_soup.device import AMP_CHOICES
from copick_soup.errors import SoupError
from copick_soup.objects import FULL_SHAPE

if TYPE_CHECKING:  # both import torch: the commands import them in their bodies
    from copick_soup.ensemble import InferenceSettings
    from copick_soup.pick import PickOptions

log = logging.getLogger("copick_soup")


def options(*decorators):
    """One decorator applying click options in the order they are listed (as they show in --help)."""

    def apply(func):
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


# --config is ours, not copick's add_config_option: that one is optional and has click check the path, which prints
# usage text; ours is required and a missing file is the one-line error that names it. --debug is copick's.
config_option = options(
    click.option("-c", "--config", "config", required=True, metavar="PATH", envvar="COPICK_CONFIG",
                 show_envvar=True, help="copick project config (filesystem or CZ cryoET Data Portal)."),
    add_debug_option,
)
# copick's -r/--run-names, repeatable; --runs and comma-joined names still work, with copick's deprecation warning.
runs_option = options(add_run_names_option, add_deprecated_run_alias("--runs"))


def run_list(run_names=(), legacy_run_names=()) -> list[str]:
    """The runs the run options name, copick's way (empty: every run)."""
    return resolve_run_names(run_names, legacy_run_names, legacy_flag="--runs", logger=log) or []
device_option = click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
tta_option = click.option("--tta", default=1, show_default=True, type=click.IntRange(1, 8),
                          help="Test-time augmentation views.")
window_option = click.option("--window", default="auto", show_default=True, metavar="N|auto",
                             help="Sliding-window side. auto: windows shaped to each tomogram within --max-memory, "
                                  "margins cropped, each voxel computed about once; N: N³ cubes, Gaussian-blended "
                                  "with --overlap (slower; for soups whose members have instance norms, whose "
                                  "heatmaps depend on the window).")
overlap_option = click.option("--overlap", default=0.25, show_default=True, type=click.FloatRange(0.0, 0.9),
                              help="With --window: the fraction of a window its neighbours share.")
# --margin and --max-memory default to InferenceSettings' values (None here: the settings module imports torch).
margin_option = click.option("--margin", default=None, type=click.IntRange(0),
                             help="Voxels dropped at each window's inner borders, where the network lacks context. "
                                  "[default: 8]")
max_memory_option = click.option("--max-memory", default=None, type=float, metavar="GB",
                                 help="Memory the inference of one run may hold (windows, slabs, activations); "
                                      "larger windows compute fewer voxels twice.  [default: 1]")
batch_option = click.option("--batch-size", default=None, type=click.IntRange(1),
                            help="Windows per network call.  [default: 1 on a CPU, 4 on a GPU]")
amp_option = click.option("--amp", default="auto", show_default=True, type=click.Choice(AMP_CHOICES),
                          help="Autocast precision; auto: bf16 where the device computes it natively and faster (GPUs, "
                               "CPUs with AMX), else float32 on a CPU.")
runtime_option = click.option("--runtime", default="auto", show_default=True,
                              type=click.Choice(["auto", "torch", "openvino"]),
                              help="What runs the networks: torch, or OpenVINO on a CPU; auto: OpenVINO on a CPU "
                                   "(about 2x torch's speed there), torch on a GPU.")
tomo_type_option = click.option("--tomo-type", default=None, help="Read this tomogram type with every member "
                                "(default: each member's own kind; members whose kind a run lacks are left out).")
tomo_map_option = click.option("--tomo-map", multiple=True, metavar="TYPE=NAME",
                               help="Read tomogram NAME for members of TYPE (repeat or comma-separate), e.g. "
                                    "denoised=wbp-denoised-denoiset-ctfdeconv. Default: matched by kind, portal "
                                    "names included (wbp-raw is wbp).")

# How the ensemble runs: `InferenceSettings`' fields, for every command that runs one.
inference_options = options(tomo_type_option, tomo_map_option, device_option, tta_option, window_option,
                            overlap_option, margin_option, max_memory_option, batch_option, amp_option,
                            runtime_option)

# `pick` in every form: the CLI, the copick plugin and the Ray driver.
pick_options = options(
    config_option,
    click.option("--soup", default="default", show_default=True,
                 help="A shipped soup's name, a soup.json, a folder of members, or one member manifest."),
    runs_option,
    click.option("--voxel-size", default=None, type=float,
                 help="Read the tomograms at this voxel size in Å (default: the run's closest to the soup's, 10.012 "
                      "for the default soup). Within 0.5% of the soup's they are read as they are (10 for 10.012); "
                      "other sizes are resampled to it, slab by slab."),
    click.option("--user-id", default="copick-soup", show_default=True, help="User ID of the written picks."),
    click.option("--session-id", default="0", show_default=True, help="Session ID of the written picks."),
    click.option("--class-map", multiple=True, metavar="SOUP=OBJECT",
                 help="Write soup class SOUP as the project's object OBJECT (repeat or comma-separate), e.g. "
                      "apo-ferritin=ferritin-complex. Default: matched by name, then by identifier (GO/UniProt)."),
    click.option("--objects", multiple=True, metavar="NAME",
                 help="Pick only these classes (soup class or project object names; repeat or comma-separate)."),
    click.option("--threshold", "thresholds", multiple=True, metavar="CLASS=VALUE",
                 help="Replace the soup's threshold of a class (0-1; lower: more picks, higher recall). Change it "
                      "later without the networks: copick-soup threshold."),
    click.option("--calibrate", type=click.Choice(["none", "valley"]), default="none", show_default=True,
                 help="valley: each run's thresholds from its own peak scores, in the valley between the "
                      "background's hump and the particles' (no labels; for tomograms unlike the soup's training "
                      "data). A class with no valley keeps the soup's threshold, and the log says so."),
    click.option("--one-class", is_flag=True,
                 help="One particle, one class: of picks closer than the smaller radius, keep the one furthest above "
                      "its own class's threshold (for a class whose channel fires on other particles)."),
    inference_options,
    click.option("--overwrite", is_flag=True, help="Replace picks that already exist for this user and session."),
    click.option("--save-heatmaps", is_flag=True,
                 help="Also store the ensemble heatmaps, one copick tomogram per class (heatmap-CLASS-USER-SESSION, "
                      "values 0-1), to view in napari-copick or ChimeraX."),
    click.option("--qc", type=click.Path(file_okay=False), default=None,
                 help="Write a picture per run into this folder: slices with the picks, and each class's peak "
                      "scores with its threshold."),
)


def parse_window(window) -> int | None:
    """--window: 'auto' (None: the crop tiling) or a side in voxels."""
    if window is None or str(window).lower() == "auto":
        return None
    try:
        side = int(window)
    except ValueError:
        raise SoupError(f"--window {window}: give a side in voxels (e.g. 64) or auto") from None
    if side < 1:
        raise SoupError(f"--window {window}: must be at least 1 voxel")
    return side


def inference_settings(tomo_type=None, device="auto", tta=1, window="auto", overlap=0.25, margin=None,
                       max_memory=None, batch_size=None, amp="auto", runtime="auto", voxel_size=None, tomo_map=(),
                       resolve: bool = True):
    """The `InferenceSettings` the inference options describe, on a concrete device unless `resolve` is False."""
    from copick_soup.data.kinds import parse_tomo_map
    from copick_soup.ensemble import InferenceSettings  # imports torch: deferred to the command body

    given = {k: v for k, v in dict(margin=margin, max_memory=max_memory).items() if v is not None}
    settings = InferenceSettings(window=parse_window(window), overlap=overlap, tta=tta, batch_size=batch_size,
                                 device=device, amp=amp, runtime=runtime, tomo_type=tomo_type,
                                 voxel_size=voxel_size, **given, tomo_map=tuple(parse_tomo_map(tomo_map).items()))
    return settings.resolved() if resolve else settings


def pick_opts(classes, user_id="copick-soup", session_id="0", class_map=(), objects=(), thresholds=(),
              overwrite=False, save_heatmaps=False, qc=None, calibrate="none", one_class=False):
    """The `PickOptions` the pick options describe, for a soup of these classes (ParticleClass)."""
    from copick_soup.data.classes import parse_class_map
    from copick_soup.pick import PickOptions, parse_thresholds  # the pipeline: deferred to the command body

    return PickOptions(user_id=user_id, session_id=session_id, overwrite=overwrite, save_heatmaps=save_heatmaps,
                       class_map=tuple(parse_class_map(class_map).items()), objects=tuple(split_names(objects)),
                       thresholds=tuple(parse_thresholds(thresholds, classes).items()), qc=qc,
                       calibrate=calibrate, one_class=one_class)


@dataclass(frozen=True)
class PickJob:
    """What the pick options ask for (`pick_options`), built once by `pick_job` for `copick-soup pick`, the copick
    plugin and the Ray driver."""

    config: str  # the copick config's path
    soup: str  # as given: a shipped soup's name, a soup.json, a folder of members or one member manifest
    runs: list  # run names; empty: every run
    settings: InferenceSettings  # how the ensemble runs, --voxel-size included
    options: PickOptions  # where the picks go; classes not mapped to the project's yet (pick.resolve_classes)


def pick_job(values: dict, resolve: bool = True) -> PickJob:
    """The `PickJob` that the values of `pick_options` describe, as click passes them to a command. The values
    are told apart by name: those named as `PickOptions`' fields are the pick options, the rest (after the config,
    soup and runs) `InferenceSettings`'. Settings on a concrete device unless `resolve` is False (the Ray driver:
    each actor chooses its own)."""
    from copick_soup.model.manifest import SoupManifest
    from copick_soup.pick import PickOptions  # the pipeline: deferred to the command body

    values = dict(values)
    config, soup = values.pop("config"), values.pop("soup")
    runs = run_list(values.pop("run_names"), values.pop("legacy_run_names"))
    picking = {f.name: values.pop(f.name) for f in fields(PickOptions) if f.name in values}
    settings = inference_settings(**values, resolve=resolve)
    options = pick_opts(SoupManifest.read(soup).classes, **picking)
    return PickJob(config, soup, runs, settings, options)


def split_names(values) -> list[str]:
    """Flatten repeated and comma-separated option values."""
    return [part.strip() for value in values or () for part in str(value).split(",") if part.strip()]


def parse_shape(text: str) -> tuple[int, int, int]:
    """'Z,Y,X' -> (Z, Y, X); 'full' is the CZII 184,630,630."""
    if text.strip().lower() == "full":
        return FULL_SHAPE
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3:
        raise click.BadParameter(f"expected Z,Y,X (three integers) or 'full', got '{text}'", param_hint="--shape")
    return shape


def reports_errors(func):
    """Turn the package's `SoupError` into click's one-line 'Error: ...' and exit status 1; `--debug` (copick's
    option) turns on copick's debug logging for the package and copick, and shows the traceback too."""

    @functools.wraps(func)
    def wrapper(*args, debug=False, **kwargs):
        if debug:
            from copick.util.log import get_logger

            get_logger("copick_soup", debug=True)
        try:
            return func(*args, **kwargs)
        except SoupError as err:
            if debug:
                log.exception("the error's traceback (--debug)")
            raise click.ClickException(str(err)) from err

    return wrapper
