"""Batch picking on a Ray cluster: `python -m ray_jobs.pick --config copick.json --soup default [--actors N]`.

The driver only schedules. Each `PickActor` pins one GPU (or CPUs when the cluster has no GPU), opens the
copick root and loads the soup once, then picks the runs it is sent with the same `pick_run` that
`copick-soup pick` uses, so there is one implementation; its options are `copick-soup pick`'s own (declared once,
in `copick_soup.cli.util`, and read into the same `PickJob`), plus the scheduling ones. Runs whose picks already
exist for the user and session are skipped (so a rerun of a killed driver finishes the rest); a run with bad data
is reported and the batch goes on; an actor that dies is replaced and its run retried up to `--max-retries`
times. The report (done, skipped, failed with reasons) is printed and written as JSON.

Submit to a cluster with
    ray job submit --working-dir . -- python -m ray_jobs.pick --config copick.json --soup default
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

import click
import ray

from copick_soup.cli.util import PickJob, pick_job, pick_options, reports_errors
from copick_soup.data.picks import existing_picks
from copick_soup.data.portal import dataset_config, parse_dataset_ids
from copick_soup.data.project import open_project, select_runs
from copick_soup.ensemble import Ensemble, InferenceSettings
from copick_soup.errors import SoupError
from copick_soup.model.manifest import MemberManifest, SoupManifest
from copick_soup.pick import (
    PickOptions,
    announce_reading,
    check_voxel_size,
    pick_run,
    resolve_classes,
)
from ray_jobs.resources import limit_torch_threads, worker_resources


@ray.remote
class PickActor:
    """Holds an open copick root and a loaded soup; picks one run per call."""

    def __init__(self, config, soup: str, settings: dict, options: dict, use_gpu: bool):
        """`config`: a copick config's path, or its content (a dict), which the driver sends because a config it
        wrote (for --dataset-ids) is not on other nodes' disks. `settings`: InferenceSettings' fields, with
        device 'auto' meaning this actor's GPU if it was given one, else its CPUs."""
        import torch

        device = settings["device"]
        if device == "auto":
            device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        limit_torch_threads()
        if isinstance(config, dict):
            path = Path(tempfile.mkdtemp(prefix="copick-soup-actor-")) / "copick.json"
            path.write_text(json.dumps(config))
            config = path
        self.root = open_project(config)
        self.settings = InferenceSettings(**dict(settings, device=device)).resolved()
        self.ensemble = Ensemble.load(soup, self.settings.device)
        self.options = PickOptions(**options)

    def pick(self, run_name: str, retry: bool = False) -> dict:
        """Pick one run. On a retry after an actor died, picks the dead attempt may have left for this user and
        session are its own (a first attempt refuses existing picks instead of dying), so they are replaced."""
        messages = []
        try:
            run = select_runs(self.root, [run_name])[0]
            options = dataclasses.replace(self.options, overwrite=True) if retry else self.options
            stats = pick_run(run, self.ensemble, self.settings, options, echo=messages.append)
        except SoupError as err:
            stats = dict(run=run_name, processed=False, error=str(err))
        except Exception as err:  # noqa: BLE001 - bad data in one run must not take the actor down
            stats = dict(run=run_name, processed=False, error=f"{type(err).__name__}: {err}")
        stats["messages"] = messages
        stats["pid"] = os.getpid()
        return stats

    def pid(self) -> int:
        return os.getpid()


def runs_to_pick(config: str, soup: str, run_names, user_id: str, session_id: str, overwrite: bool, echo=print,
                 class_map: dict | None = None, root=None):
    """(runs to pick, runs skipped because every class already has picks by this user and session, runs to finish).

    A run with picks for only some classes was being written when its driver or actor was killed (a finished
    write covers every class): it is picked again and its partial picks are replaced. `class_map`: soup class ->
    project object (pick.resolve_classes). `root`: the project already open (a portal project's opening queries
    the portal), else it is opened from `config`."""
    names = [(class_map or {}).get(c.name, c.name) for c in SoupManifest.read(soup).classes]
    root = root or open_project(config)
    todo, skipped, unfinished = [], [], []
    for run in select_runs(root, run_names):
        have = [] if overwrite else existing_picks(run, names, user_id, session_id)
        if len(have) == len(names):
            skipped.append(run.name)
            continue
        todo.append(run.name)
        if have:
            unfinished.append(run.name)
            echo(f"run {run.name}: an interrupted write left picks for {len(have)} of {len(names)} classes; "
                 f"picking it again")
    return todo, skipped, unfinished


def schedule(make_actor, runs: list[str], n_actors: int, max_retries: int = 2, echo=print,
             timeout: float | None = None, unfinished=()) -> dict:
    """Send runs to a pool of actors; replace dead actors and retry their runs. Returns the report.

    `timeout` bounds the wait for any one result (seconds; None waits as long as runs take). Runs in
    `unfinished` (partial picks of a killed writer) replace their picks from the first attempt."""
    actors = [make_actor() for _ in range(min(n_actors, len(runs)) or 1)]
    queue = deque((run, 0) for run in runs)
    idle = list(range(len(actors)))
    pending = {}  # future -> (actor index, run, attempt)
    report = dict(done=[], failed=[], retried=[])
    while queue or pending:
        while queue and idle:
            i = idle.pop()
            run, attempt = queue.popleft()
            pending[actors[i].pick.remote(run, attempt > 0 or run in unfinished)] = (i, run, attempt)
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
        if not ready:
            raise TimeoutError(f"no run finished within {timeout} s")
        for future in ready:
            i, run, attempt = pending.pop(future)
            try:
                stats = ray.get(future)
            except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as err:
                actors[i] = make_actor()
                if attempt < max_retries:
                    echo(f"{run}: actor died ({type(err).__name__}); retrying on a new actor")
                    report["retried"].append(run)
                    queue.appendleft((run, attempt + 1))
                else:
                    report["failed"].append(dict(run=run, error=f"actor died {attempt + 1} times"))
                idle.append(i)
                continue
            idle.append(i)
            for message in stats.pop("messages", []):
                echo(message)
            if stats["processed"]:
                report["done"].append(stats)
                echo(f"{run}: {sum(stats['picks'].values())} picks in {stats['seconds']:.1f} s")
            else:
                report["failed"].append(dict(run=run, error=stats["error"]))
                echo(f"{run}: failed: {stats['error']}")
    return report


def plan(job: PickJob, dataset_ids: str) -> tuple[str, PickOptions, list[str], list[str], list[str]]:
    """(config, options with the classes mapped, runs to pick, runs already done, runs to finish): every input is
    checked here, before Ray starts any work."""
    manifest = SoupManifest.read(job.soup)
    resampled = check_voxel_size(job.settings.voxel_size, manifest)
    if resampled:
        print(resampled)
    members = [MemberManifest.read(p) for p in manifest.member_paths]
    warning = job.settings.check_members(members)
    if warning:
        print(warning)
    config = job.config
    if dataset_ids:
        folder = Path(tempfile.mkdtemp(prefix="copick-soup-"))
        config = str(dataset_config(config, parse_dataset_ids(dataset_ids), folder / "datasets.json"))
    root = open_project(config)
    opts = resolve_classes(root, manifest.classes, job.options, print)
    todo, skipped, unfinished = runs_to_pick(config, job.soup, job.runs, opts.user_id, opts.session_id,
                                             opts.overwrite, class_map=dict(opts.class_map), root=root)
    announce_reading(select_runs(root, todo) if todo else [], members, job.settings, print)
    return config, opts, todo, skipped, unfinished


@click.command("ray_jobs.pick", no_args_is_help=True)
@pick_options
@click.option("--dataset-ids", default="", help="Portal dataset IDs, comma-separated (portal configs).")
@click.option("--actors", type=click.IntRange(1), default=None,
              help="Actors.  [default: the cluster's GPUs, or 1 on a CPU cluster]")
@click.option("--cpus-per-actor", type=float, default=None, help="CPUs per actor on a cluster without GPUs.")
@click.option("--max-retries", type=click.IntRange(0), default=2, show_default=True,
              help="Retries of a run whose actor died.")
@click.option("--report", default="pick-report.json", show_default=True, help="Where to write the JSON report.")
@reports_errors
def command(dataset_ids, actors, cpus_per_actor, max_retries, report, **values) -> int:
    """Pick copick runs on a Ray cluster: `copick-soup pick`'s options, one actor per GPU."""
    job = pick_job(values, resolve=False)  # the actors choose their device
    config, opts, todo, skipped, unfinished = plan(job, dataset_ids)
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True, log_to_driver=False)
    resources = worker_resources(cpus_per_actor)
    n_actors = actors or max(int(ray.cluster_resources().get("GPU", 0)), 1)
    options = dataclasses.asdict(opts)
    print(f"{len(todo)} run(s) to pick, {len(skipped)} already done; {n_actors} actor(s) with {resources}")
    start = time.perf_counter()
    content = json.loads(Path(config).read_text())  # sent to the actors: a config on this node's disk only

    def make_actor():
        return PickActor.options(**resources).remote(content, job.soup, dataclasses.asdict(job.settings), options,
                                                     resources["num_gpus"] > 0)

    result = dict(done=[], failed=[], retried=[])
    if todo:
        result = schedule(make_actor, todo, n_actors, max_retries, unfinished=set(unfinished))
    result.update(skipped=skipped, seconds=time.perf_counter() - start)
    Path(report).write_text(json.dumps(result, indent=2))
    print(f"done {len(result['done'])}, skipped {len(skipped)}, failed {len(result['failed'])}; report: {report}")
    for failure in result["failed"]:
        print(f"  failed {failure['run']}: {failure['error']}")
    return 1 if result["failed"] else 0


def main(argv=None) -> int:
    """The job's exit status: 0 when every run was picked or skipped, 1 when one failed or the input is bad,
    2 for a command line click cannot parse."""
    try:
        return command.main(args=argv, prog_name="python -m ray_jobs.pick", standalone_mode=False)
    except SoupError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except click.ClickException as err:
        err.show()
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
