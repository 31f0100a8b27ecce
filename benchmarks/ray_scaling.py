"""Ray batch picking: runs per hour with 1 and 2 actors, reading from local disk, from S3 and from the portal.

Each actor holds one CPU and a loaded soup (warmed up before the clock starts, as in a long batch). Scaling
efficiency = throughput with 2 actors / (2 x throughput with 1). The S3 cases read the same runs from an
S3-compatible server on 127.0.0.1 (moto, copick_soup/testing/s3server.py, as in the tests): every chunk goes over
HTTP, and the read-ahead thread overlaps reading with the network, so S3 / disk shows how much I/O is left
uncovered. The portal cases read them through copick's own CZ cryoET Data Portal backend from the tests' local
stand-in of the portal (copick_soup/testing/portal_standin.py: its GraphQL API and S3 layout, runs named by ID,
portal tomogram names, 10.000 Å). A real S3 bucket adds network latency that localhost lacks. Needs the `ray` and
`test` extras (moto, trustme). Prints a table and writes benchmarks/results/ray-scaling.md.

    python benchmarks/ray_scaling.py [--runs 4] [--shape 64,192,192] [--soup default] [--tta 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local benchmark cluster: no token prompt, no usage report
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from table import cpu, markdown, publish  # noqa: E402  (benchmarks/table.py)

from copick_soup.data import open_project  # noqa: E402
from copick_soup.ensemble import InferenceSettings  # noqa: E402
from copick_soup.model.manifest import SoupManifest  # noqa: E402
from copick_soup.pick import PickOptions, resolve_classes  # noqa: E402
from copick_soup.simulate import simulate_project  # noqa: E402
from copick_soup.testing.portal_standin import PortalData, PortalServer, publish_portal  # noqa: E402
from copick_soup.testing.s3server import S3Server, publish_project  # noqa: E402
from ray_jobs.pick import PickActor, schedule  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ray-scaling.md"


def batch(config, soup: str, runs: list[str], actors: int, user: str, tta: int) -> tuple[float, float]:
    """(wall seconds, summed per-run seconds) for one batch on `actors` warmed-up actors."""
    settings = dataclasses.asdict(InferenceSettings(tta=tta, device="cpu"))
    # soup classes mapped to the project's objects, as the driver maps them (a portal config names them its way)
    opts = resolve_classes(open_project(config), SoupManifest.read(soup).classes,
                           PickOptions(user_id=user, session_id="0", overwrite=True), echo=lambda m: None)
    options = dataclasses.asdict(opts)

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
    names = [r.name for r in open_project(local).runs]
    rows, results = [], {}
    with S3Server() as server:
        data = PortalData()
        sources = {"local disk": local, "S3 (127.0.0.1)": publish_project(local, server, "10445", tmp / "s3-overlay"),
                   "portal stand-in": publish_portal(local, server, data, {10446: names}, tmp / "portal-overlay")}
        with PortalServer(data, tmp) as portal:
            # before ray.init: the workers inherit the environment that routes the portal client to the stand-in
            os.environ.update({**portal.env, "AWS_ENDPOINT_URL_S3": server.endpoint})
            ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
            for source, config in sources.items():
                runs = [r.name for r in open_project(config).runs]
                for actors in (1, 2):
                    wall, busy = batch(config, args.soup, runs, actors, f"bench-{actors}", args.tta)
                    results[(source, actors)] = wall
                    rows.append(f"| {source} | {actors} | {wall:.1f} | {busy / len(runs):.1f} | "
                                f"{len(runs) / wall * 3600:.0f} | {results[(source, 1)] / (actors * wall):.2f} |")
            ray.shutdown()
    lines = [f"Ray batch picking with soup '{args.soup}' (TTA {args.tta}), {args.runs} runs of "
             f"{'x'.join(map(str, shape))} voxels, one CPU per actor; {cpu()}, "
             f"{time.strftime('%Y-%m-%d')}", "",
             *markdown(["source", "actors", "wall s", "s per run (in actor)", "runs per hour", "scaling efficiency"],
                       rows)]
    for source in ("S3 (127.0.0.1)", "portal stand-in"):
        for actors in (1, 2):
            ratio = results[(source, actors)] / results[("local disk", actors)]
            lines.append(f"\n{source} / local disk wall time with {actors} actor(s): {ratio:.2f}")
    publish(RESULTS, lines)


if __name__ == "__main__":
    main()
