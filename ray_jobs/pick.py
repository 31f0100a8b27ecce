"""Batch picking on a Ray cluster: `python -m ray_jobs.pick --config copick.json --soup default [--actors N]`.

The driver only schedules. Each `PickActor` pins one GPU (or CPUs when the cluster has no GPU), opens the
copick root and loads the soup once, then picks the runs it is sent with the same `pick_run` that
`copick-soup pick` uses, so there is one implementation. Runs whose picks already exist for the user and
session are skipped (so a rerun of a killed driver finishes the rest); a run with bad data is reported and
the batch goes on; an actor that dies is replaced and its run retried up to `--max-retries` times. The report
(done, skipped, failed with reasons) is printed and written as JSON.

Submit to a cluster with
    ray job submit --working-dir . -- python -m ray_jobs.pick --config copick.json --soup default
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import deque
from pathlib import Path

import ray

from ray_jobs.resources import limit_torch_threads, worker_resources


@ray.remote
class PickActor:
    """Holds an open copick root and a loaded soup; picks one run per call."""

    def __init__(self, config, soup: str, options: dict, use_gpu: bool):
        """`config`: a copick config's path, or its content (a dict), which the driver sends because a config it
        wrote (for --dataset-ids) is not on other nodes' disks."""
        import tempfile

        import torch

        from copick_soup.data import open_project
        from copick_soup.infer.pick import PickOptions
        from copick_soup.soup.manifest import load_soup

        device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        limit_torch_threads()
        if isinstance(config, dict):
            path = Path(tempfile.mkdtemp(prefix="copick-soup-actor-")) / "copick.json"
            path.write_text(json.dumps(config))
            config = path
        self.root = open_project(config)
        self.soup = load_soup(soup, device)
        self.options = PickOptions(**options, device=device)

    def pick(self, run_name: str, retry: bool = False) -> dict:
        """Pick one run. On a retry after an actor died, picks the dead attempt may have left for this user and
        session are its own (a first attempt refuses existing picks instead of dying), so they are replaced."""
        import dataclasses

        from copick_soup.data.project import select_runs
        from copick_soup.errors import SoupError
        from copick_soup.infer.pick import pick_run

        messages = []
        try:
            run = select_runs(self.root, [run_name])[0]
            options = dataclasses.replace(self.options, overwrite=True) if retry else self.options
            stats = pick_run(run, self.soup, options, echo=messages.append)
        except SoupError as err:
            stats = dict(run=run_name, processed=False, error=str(err))
        except Exception as err:  # noqa: BLE001 - bad data in one run must not take the actor down
            stats = dict(run=run_name, processed=False, error=f"{type(err).__name__}: {err}")
        stats["messages"] = messages
        stats["pid"] = os.getpid()
        return stats

    def pid(self) -> int:
        return os.getpid()


def runs_to_pick(config: str, soup: str, run_names, user_id: str, session_id: str, overwrite: bool, echo=print):
    """(runs to pick, runs skipped because every class already has picks by this user and session, runs to finish).

    A run with picks for only some classes was being written when its driver or actor was killed (a finished
    write covers every class): it is picked again and its partial picks are replaced."""
    from copick_soup.data import open_project, select_runs
    from copick_soup.data.picks import existing_picks
    from copick_soup.soup.manifest import read_soup

    names = [c["name"] for c in read_soup(soup)["classes"]]
    root = open_project(config)
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


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ray_jobs.pick", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--config", required=True, help="copick config (filesystem or portal)")
    parser.add_argument("--soup", default="default")
    parser.add_argument("-r", "--run-names", "--runs", dest="runs", action="append", default=[],
                        help="runs to pick (repeat or comma-separate; default: all)")
    parser.add_argument("--dataset-ids", default="", help="portal dataset IDs, comma-separated (portal configs)")
    parser.add_argument("--actors", type=int, default=None, help="actors (default: GPUs, or 1 on a CPU cluster)")
    parser.add_argument("--cpus-per-actor", type=float, default=None)
    parser.add_argument("--user-id", default="copick-soup")
    parser.add_argument("--session-id", default="0")
    parser.add_argument("--tomo-type", default=None)
    parser.add_argument("--tta", type=int, default=1)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=None, help="windows per network call (default: 1 on "
                        "a CPU, 4 on a GPU)")
    parser.add_argument("--amp", default="auto", choices=["auto", "none", "bf16", "fp16"],
                        help="autocast precision; auto: bf16 where the worker's device computes it natively")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--max-retries", type=int, default=2)
    parser.add_argument("--report", default="pick-report.json", help="where to write the JSON report")
    return parser.parse_args(argv)


def plan(args) -> tuple[str, list[str], list[str], list[str]]:
    """(config, runs to pick, runs already done, runs to finish): every input is checked here, before Ray starts
    any work."""
    import tempfile

    from copick_soup.cli.util import split_names
    from copick_soup.data.portal import dataset_config, parse_dataset_ids
    from copick_soup.errors import SoupError
    from copick_soup.infer.pick import check_window
    from copick_soup.infer.tta import tta_views
    from copick_soup.model.checkpoint import read_manifest
    from copick_soup.soup.manifest import member_paths

    tta_views(args.tta)
    if args.batch_size is not None and args.batch_size < 1:
        raise SoupError(f"--batch-size {args.batch_size}: must be at least 1")
    warning = check_window([read_manifest(p) for p in member_paths(args.soup)], args.window)
    if warning:
        print(warning)
    config = args.config
    if args.dataset_ids:
        folder = Path(tempfile.mkdtemp(prefix="copick-soup-"))
        config = str(dataset_config(config, parse_dataset_ids(args.dataset_ids), folder / "datasets.json"))
    return (config, *runs_to_pick(config, args.soup, split_names(args.runs), args.user_id, args.session_id,
                                  args.overwrite))


def main(argv=None) -> int:
    from copick_soup.errors import SoupError

    args = parse_args(argv)
    try:
        config, todo, skipped, unfinished = plan(args)
    except SoupError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True, log_to_driver=False)
    resources = worker_resources(args.cpus_per_actor)
    n_actors = args.actors or max(int(ray.cluster_resources().get("GPU", 0)), 1)
    options = dict(user_id=args.user_id, session_id=args.session_id, tomo_type=args.tomo_type, tta=args.tta,
                   window=args.window, batch_size=args.batch_size, amp=args.amp, overwrite=args.overwrite)
    print(f"{len(todo)} run(s) to pick, {len(skipped)} already done; {n_actors} actor(s) with {resources}")
    start = time.perf_counter()
    content = json.loads(Path(config).read_text())  # sent to the actors: a config on this node's disk only

    def make_actor():
        return PickActor.options(**resources).remote(content, args.soup, options, resources["num_gpus"] > 0)

    report = dict(done=[], failed=[], retried=[])
    if todo:
        report = schedule(make_actor, todo, n_actors, args.max_retries, unfinished=set(unfinished))
    report.update(skipped=skipped, seconds=time.perf_counter() - start)
    Path(args.report).write_text(json.dumps(report, indent=2))
    print(f"done {len(report['done'])}, skipped {len(skipped)}, failed {len(report['failed'])}; report: "
          f"{args.report}")
    for failure in report["failed"]:
        print(f"  failed {failure['run']}: {failure['error']}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
