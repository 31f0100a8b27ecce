"""Ray batch picking: runs per hour with 1 and 2 actors, reading from local disk and from S3.

Each actor holds one CPU and a loaded soup (warmed up before the clock starts, as in a long batch). Scaling
efficiency = throughput with 2 actors / (2 x throughput with 1). The S3 cases read the same runs from an
S3-compatible server on 127.0.0.1 (moto, as in the tests): every chunk goes over HTTP, and the read-ahead
thread overlaps reading with the network, so S3 / disk shows how much I/O is left uncovered. A real S3
bucket adds network latency that localhost lacks. Prints a table and writes benchmarks/results/ray-scaling.md.

    python benchmarks/ray_scaling.py [--runs 4] [--shape 64,192,192] [--soup default] [--tta 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' S3 server helper
from s3server import S3Server, publish_project  # noqa: E402

from copick_soup.data import open_project  # noqa: E402
from copick_soup.ensemble import InferenceSettings  # noqa: E402
from copick_soup.simulate import simulate_project  # noqa: E402
from ray_jobs.pick import PickActor, schedule  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ray-scaling.md"


def batch(config, soup: str, runs: list[str], actors: int, user: str, tta: int) -> tuple[float, float]:
    """(wall seconds, summed per-run seconds) for one batch on `actors` warmed-up actors."""
    settings = dataclasses.asdict(InferenceSettings(tta=tta, device="cpu"))
    options = dict(user_id=user, session_id="0", overwrite=True)

    def make():
        return PickActor.options(num_cpus=1).remote(str(config), soup, settings, options, False)

    warm = [make() for _ in range(actors)]
    ray.get([a.pid.remote() for a in warm], timeout=600)
    start = time.perf_counter()
    report = schedule(lambda: warm.pop() if warm else make(), runs, actors, echo=lambda m: None, timeout=3600)
    wall = time.perf_counter() - start
    if report["failed"]:
        raise SystemExit(f"benchmark batch failed: {report['failed']}")
    return wall, sum(r["seconds"] for r in report["done"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--soup", default="default")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--shape", default="64,192,192")
    parser.add_argument("--tta", type=int, default=1)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="copick-soup-ray-bench-"))
    local = simulate_project(tmp / "local", runs=args.runs, shape=shape, seed=77)
    runs = [r.name for r in open_project(local).runs]
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    rows, results = [], {}
    with S3Server() as server:
        remote = publish_project(local, server, "10445", tmp / "s3-overlay")
        for source, config in (("local disk", local), ("S3 (127.0.0.1)", remote)):
            for actors in (1, 2):
                wall, busy = batch(config, args.soup, runs, actors, f"bench-{actors}", args.tta)
                results[(source, actors)] = wall
                rows.append((source, actors, wall, busy / len(runs), len(runs) / wall * 3600))
    ray.shutdown()
    lines = [f"Ray batch picking with soup '{args.soup}' (TTA {args.tta}), {args.runs} runs of "
             f"{'x'.join(map(str, shape))} voxels, one CPU per actor; {platform.machine()}, {os.cpu_count()} cores, "
             f"{time.strftime('%Y-%m-%d')}", "",
             "| source | actors | wall s | s per run (in actor) | runs per hour | scaling efficiency |",
             "|---|---|---|---|---|---|"]
    for source, actors, wall, per_run, per_hour in rows:
        efficiency = results[(source, 1)] / (actors * wall)
        lines.append(f"| {source} | {actors} | {wall:.1f} | {per_run:.1f} | {per_hour:.0f} | {efficiency:.2f} |")
    for actors in (1, 2):
        ratio = results[("S3 (127.0.0.1)", actors)] / results[("local disk", actors)]
        lines.append(f"\nS3 / local disk wall time with {actors} actor(s): {ratio:.2f}")
    table = "\n".join(lines)
    print(table)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(table + "\n")


if __name__ == "__main__":
    main()
